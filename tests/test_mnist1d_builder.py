"""The offline MNIST-1D TFDS builder: splits, shapes, determinism, and the same data as the
`mnist1d` package's own generator."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from mnist1d.data import get_dataset_args, make_dataset

pytestmark = pytest.mark.fast


def _as_arrays(data_dir, split):
    ds = tfds.load("mnist1d/original", split=split, data_dir=str(data_dir), as_supervised=True)
    signals, labels = zip(*tfds.as_numpy(ds))
    return np.stack(signals), np.array(labels)


def test_builder_is_registered_and_generates_the_published_splits(tmp_path):
    builder = tfds.builder("mnist1d/original", data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples == 4000
    assert builder.info.splits["test"].num_examples == 1000
    assert builder.info.features["label"].num_classes == 10
    signals, labels = _as_arrays(tmp_path, "train")
    assert signals.shape == (4000, 40) and signals.dtype == np.float32
    assert set(np.unique(labels)) == set(range(10))


def test_large_config_is_big_enough_for_batch_studies():
    builder = tfds.builder("mnist1d/large")
    assert builder.builder_config.num_examples >= 60000
    # A batch of 4096 is a small part of an epoch: under 10% of the training split.
    assert 4096 < 0.1 * builder.builder_config.num_examples * builder.builder_config.train_fraction


def test_generation_is_deterministic_and_matches_the_mnist1d_package(tmp_path):
    tfds.builder("mnist1d/original", data_dir=str(tmp_path / "a")).download_and_prepare()
    tfds.builder("mnist1d/original", data_dir=str(tmp_path / "b")).download_and_prepare()
    for split, x_key, y_key in (("train", "x", "y"), ("test", "x_test", "y_test")):
        a_signals, a_labels = _as_arrays(tmp_path / "a", split)
        b_signals, b_labels = _as_arrays(tmp_path / "b", split)
        np.testing.assert_array_equal(a_signals, b_signals)
        np.testing.assert_array_equal(a_labels, b_labels)
        # TFDS stores examples in its own (key-hashed) order: compare as sorted rows.
        reference = make_dataset(get_dataset_args())
        ref_signals, ref_labels = reference[x_key].astype(np.float32), reference[y_key]
        ours, theirs = np.lexsort(a_signals.T[::-1]), np.lexsort(ref_signals.T[::-1])
        np.testing.assert_array_equal(a_signals[ours], ref_signals[theirs])
        np.testing.assert_array_equal(a_labels[ours], ref_labels[theirs])


def test_generation_leaves_the_global_numpy_random_state_alone(tmp_path):
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    tfds.builder("mnist1d/original", data_dir=str(tmp_path)).download_and_prepare()
    np.testing.assert_array_equal(np.random.rand(3), expected)
