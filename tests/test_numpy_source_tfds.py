"""The JAX backend's TFDS data sets (kbatch.data.numpy_source on mnist, cifar10, cifar100), on TFDS
mock data: evaluation inputs are the TensorFlow pipeline's; each CIFAR training example is a 32x32
window of its 40x40 zero-padded image, flipped or not, drawn from (seed, position) alone; a
ResNet-20 trains on cifar10 under Keras on JAX; without TFDS the error is one line."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from kbatch import data
from kbatch.data import numpy_source
from kbatch.data.names import CIFAR_MEAN, CIFAR_STD
from kbatch.data.sources.builtin import BuiltinSource

HERE = pathlib.Path(__file__).resolve().parent
MOCK_EXAMPLES = 48


@pytest.fixture
def mock():
    numpy_source._arrays.cache_clear()
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        yield
    numpy_source._arrays.cache_clear()


def _windows(image):
    """{(top, left, flipped): window} of every 32x32 window of `image` zero-padded to 40x40."""
    padded = np.zeros((40, 40, image.shape[-1]), image.dtype)
    padded[4:36, 4:36] = image
    return {
        (top, left, flipped): window[:, ::-1] if flipped else window
        for top in range(9)
        for left in range(9)
        for flipped in (False, True)
        for window in [padded[top : top + 32, left : left + 32]]
    }


def _which_window(crop, images):
    """(image number, top, left, flipped) of the window of one of `images` that `crop` is; else None."""
    for number, image in enumerate(images):
        for place, window in _windows(image).items():
            if np.array_equal(window, crop):
                return (number, *place)
    return None


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_evaluation_inputs_are_the_tensorflow_pipelines(mock, name):
    x, y, weights = BuiltinSource(name).eval_batches(MOCK_EXAMPLES)[0]
    want_x, want_y = data.first_eval_examples(name, MOCK_EXAMPLES)  # preprocessing.eval_fn under tf.data
    assert weights.sum() == MOCK_EXAMPLES and x.dtype == np.float32
    np.testing.assert_allclose(x, want_x, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(y, want_y)
    info = BuiltinSource(name).describe()
    assert (info.input_shape, info.num_classes) == (data.describe(name).input_shape, data.describe(name).num_classes)


def test_each_cifar_training_example_is_a_window_of_its_padded_image_flipped_or_not():
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    positions = np.arange(1000, 1064)
    crops = numpy_source.augment_cifar(images, positions, seed=5)
    places = [_which_window(crop, images[i : i + 1]) for i, crop in enumerate(crops)]
    assert None not in places
    assert {p[3] for p in places} == {False, True}  # both flipped and not
    assert len({p[1:3] for p in places}) > 20  # offsets spread over the 81 (here about 45)
    assert any(p[1] in (0, 8) or p[2] in (0, 8) for p in places)  # windows that reach 4 pixels of padding
    np.testing.assert_array_equal(numpy_source.augment_cifar(images, positions, seed=5), crops)
    assert not np.array_equal(numpy_source.augment_cifar(images, positions, seed=6), crops)
    assert not np.array_equal(numpy_source.augment_cifar(images, positions + 1, seed=5), crops)


def test_the_cifar_stream_is_augmented_standardized_and_a_function_of_seed_and_position(mock):
    raw, labels, _, _ = numpy_source._arrays("cifar10")
    stream = BuiltinSource("cifar10").train_batches(16, seed=3)
    batches = [next(stream) for _ in range(4)]  # past one epoch of 48
    x, y = batches[0]
    pixels = (x * np.float32(CIFAR_STD) + np.float32(CIFAR_MEAN)) * 255  # standardized: undone
    assert np.abs(pixels - np.rint(pixels)).max() < 1e-3
    places = [_which_window(crop, raw) for crop in np.rint(pixels).astype(np.uint8)]
    assert None not in places and [labels[p[0]] for p in places] == list(y)
    assert {p[3] for p in places} == {False, True} and {p[1:3] for p in places} != {(4, 4)}  # augmented
    resumed = BuiltinSource("cifar10").train_batches(16, seed=3, start_example=32)
    np.testing.assert_array_equal(next(resumed)[0], batches[2][0])
    other_seed = BuiltinSource("cifar10").train_batches(16, seed=4)
    assert not np.array_equal(next(other_seed)[0], batches[0][0])


def test_numpy_source_reads_from_the_data_dir_it_is_given(mock, monkeypatch, tmp_path):
    asked = []
    load = tfds.load
    monkeypatch.setattr(tfds, "load", lambda *args, **kwargs: asked.append(kwargs["data_dir"]) or load(*args, **kwargs))
    numpy_source.describe("cifar10", data_dir=str(tmp_path))
    assert asked == [str(tmp_path)] * 2  # train and test


def test_without_tfds_a_tfds_dataset_is_one_line_saying_how_to_get_it(monkeypatch):
    numpy_source._arrays.cache_clear()
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ValueError, match=r"config.dataset='cifar10'.*pip install tensorflow-datasets") as error:
        numpy_source.describe("cifar10")
    assert "\n" not in str(error.value)


def test_resnet20_trains_on_cifar10_under_keras_on_jax(tmp_path):
    config = {
        "model": "resnet20",
        "dataset": "cifar10",
        "batch_size": 8,
        "base_batch_size": 8,
        "num_epochs": 1,
        "warmup_epochs": 0.5,
        "steps_per_loop": 2,
        "strategy": "one_device",
    }
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}
    run = subprocess.run(
        [sys.executable, str(HERE / "jax_worker.py"), "mock", str(tmp_path / "run"), json.dumps(config), "32"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["steps"] == 4 and result["num_replicas"] == 1
    assert 0.0 <= result["final_eval_accuracy"] <= 1.0 and np.isfinite(result["final_eval_loss"])
