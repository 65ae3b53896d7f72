"""The data-source contract on TensorFlow: the tf.data form of a source gives each replica its
share of the NumPy form's global batches; a user's tf.data.Dataset resumes exactly when
deterministic; any TFDS name (images and text) is the data `tfds.as_numpy` reads, on mock data;
a TFDS name that does not exist is one line."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import kbatch
from kbatch.data import sources

RNG = np.random.default_rng(1)
X, Y = RNG.normal(size=(40, 5)).astype(np.float32), RNG.integers(0, 3, 40)
X_EVAL, Y_EVAL = RNG.normal(size=(11, 5)).astype(np.float32), RNG.integers(0, 3, 11)


def _replica_batches(strategy, dataset_fn, steps):
    iterator = iter(kbatch.data.distribute(strategy, dataset_fn))
    out = []
    for _ in range(steps):
        batch = next(iterator)
        out.append(
            [
                tf.nest.map_structure(
                    lambda value: np.concatenate([t.numpy() for t in strategy.experimental_local_results(value)]), part
                )
                for part in batch
            ]
        )
    return out


@pytest.mark.parametrize("strategy_name", ["one_device", "cpu:2"])
def test_the_tf_form_of_arrays_is_the_numpy_stream_under_each_strategy(strategy_name):
    source = sources.from_arrays(X, Y, eval=(X_EVAL, Y_EVAL))
    strategy = kbatch.distribute.resolve_strategy(strategy_name)
    tf_batches = _replica_batches(strategy, source.tf_train_dataset_fn(16, seed=2, start_example=32), 4)
    numpy_batches = source.train_batches(16, seed=2, start_example=32)
    for (x_tf, y_tf), (x_np, y_np) in zip(tf_batches, numpy_batches):
        np.testing.assert_array_equal(x_tf, x_np)
        np.testing.assert_array_equal(y_tf, y_np)


@pytest.mark.parametrize("replicas", [1, 2])
def test_the_tf_eval_form_counts_every_example_once(replicas):
    source = sources.from_arrays(X, Y, eval=(X_EVAL, Y_EVAL))
    strategy = kbatch.distribute.resolve_strategy("one_device" if replicas == 1 else "cpu:2")
    dataset = kbatch.data.distribute(strategy, source.tf_eval_dataset_fn(4 * replicas))
    x, _, w = (
        np.concatenate(parts)
        for parts in zip(
            *[
                [np.concatenate([t.numpy() for t in strategy.experimental_local_results(p)]) for p in batch]
                for batch in dataset
            ]
        )
    )
    np.testing.assert_array_equal(x[w == 1], X_EVAL)
    assert w.sum() == 11


def _user_dataset():
    return tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(40, seed=5, reshuffle_each_iteration=False)


def test_a_deterministic_tf_dataset_resumes_exactly_and_matches_under_cpu2():
    source = sources.from_tf_dataset(
        _user_dataset(), tf.data.Dataset.from_tensor_slices((X_EVAL, Y_EVAL)), num_classes=3, deterministic=True
    )
    assert source.guarantees().exact_resume and source.describe().num_eval_examples == 11
    reference = np.stack([x for x, _ in tfds.as_numpy(_user_dataset())] * 3)  # the dataset, repeated
    stream = source.train_batches(12, seed=0)
    np.testing.assert_array_equal(np.concatenate([next(stream)[0] for _ in range(8)]), reference[:96])
    resumed = next(source.train_batches(12, seed=0, start_example=36))[0]
    np.testing.assert_array_equal(resumed, reference[36:48])
    two = _replica_batches(kbatch.distribute.resolve_strategy("cpu:2"), source.tf_train_dataset_fn(12, 0, 36), 1)
    np.testing.assert_array_equal(two[0][0], reference[36:48])


def test_a_tf_dataset_not_said_deterministic_claims_no_guarantee():
    source = sources.from_tf_dataset(_user_dataset(), tf.data.Dataset.from_tensor_slices((X_EVAL, Y_EVAL)))
    assert source.guarantees() == sources.Guarantees(False, False, False)


def _split(name, split, keys):
    whole = tfds.as_numpy(tfds.load(name, split=split).batch(10_000).get_single_element())
    return [whole[key] for key in keys]


@pytest.mark.parametrize("scale_images", [True, False])
def test_a_tfds_image_set_by_name_is_the_data_tfds_reads_scaled_to_0_1(scale_images):
    with tfds.testing.mock_data(num_examples=24):
        source = (
            sources.get("tfds:fashion_mnist")
            if scale_images
            else sources.from_tfds("fashion_mnist", scale_images=False)
        )
        x, y = _split("fashion_mnist", "train", ("image", "label"))
        x_eval, y_eval = _split("fashion_mnist", "test", ("image", "label"))
    if scale_images:  # uint8 pixels as float32 in [0, 1]
        x, x_eval = (pixels.astype(np.float64) / 255 for pixels in (x, x_eval))
    info = source.describe()
    assert (info.input_shape, info.num_classes, info.num_train_examples) == ((28, 28, 1), 10, 24)
    assert info.input_spec.dtype == ("float32" if scale_images else "uint8")
    index = source.indices(0, 30, seed=4)
    np.testing.assert_allclose(source.examples_at(0, 30, seed=4)[0], x[index], rtol=1e-7)
    np.testing.assert_array_equal(source.examples_at(0, 30, seed=4)[1], y[index])
    batches = source.eval_batches(16)
    np.testing.assert_allclose(np.concatenate([b[0] for b in batches])[:24], x_eval, rtol=1e-7)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches])[:24], y_eval)


def test_a_tfds_text_set_not_tokenized_gives_its_strings_and_classes():
    with tfds.testing.mock_data(num_examples=10):
        source = sources.from_tfds("imdb_reviews", tokenize_text=False)
        text, label = _split("imdb_reviews", "train", ("text", "label"))
    info = source.describe()
    assert info.num_classes == 2 and info.input_spec.dtype == "object"
    index = source.indices(0, 10, seed=0)
    np.testing.assert_array_equal(source.examples_at(0, 10, seed=0)[0], text[index])
    np.testing.assert_array_equal(source.examples_at(0, 10, seed=0)[1], label[index])


BAD = [
    (lambda: sources.get("tfds:mnistt"), r"TFDS has no data set 'mnistt'; close names: mnist"),
    (lambda: sources.from_tfds("mnist", input_key="pixels"), r"no feature 'pixels': its features are"),
    (lambda: sources.from_tf_dataset(_user_dataset(), None), r"no evaluation data"),
    (lambda: sources.from_tf_dataset(_user_dataset().repeat(), _user_dataset()), r"num_train_examples"),
]


@pytest.mark.parametrize("build, message", BAD)
def test_bad_input_is_one_line_naming_what_is_wrong(build, message):
    with tfds.testing.mock_data(num_examples=4), pytest.raises(ValueError, match=message) as error:
        build()
    assert "\n" not in str(error.value)


def _recut(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


SOURCES = {
    "arrays": lambda: sources.from_arrays(X, Y, eval=(X_EVAL, Y_EVAL)),
    "arrays dict": lambda: sources.from_arrays({"a": X, "b": Y}, Y, eval=({"a": X_EVAL, "b": Y_EVAL}, Y_EVAL)),
    "iterable": lambda: sources.from_iterable(
        lambda: iter(_recut(X, Y, 7)), eval=_recut(X_EVAL, Y_EVAL, 4), num_train_examples=40
    ),
    "tf.data": lambda: sources.from_tf_dataset(
        _user_dataset(), tf.data.Dataset.from_tensor_slices((X_EVAL, Y_EVAL)), deterministic=True
    ),
    "tfds": lambda: sources.get("tfds:mnist"),
    "tfds streamed": lambda: sources.from_tfds("mnist", in_memory=False, shuffle_buffer=16),
    "builtin": lambda: sources.get("mnist1d/original"),
}

ALL = sources.Guarantees(exact_resume=True, same_across_strategies=True, same_across_backends=True)
CLAIMS = {**dict.fromkeys(SOURCES, ALL), "builtin": sources.Guarantees(True, True, same_across_backends=False)}


def _global(source, batch, steps, start=0):
    stream = source.train_batches(batch, seed=6, start_example=start)
    return [next(stream) for _ in range(steps)]


def _rows(batches, part):
    values = [batch[part] for batch in batches]
    return (
        {k: np.concatenate([v[k] for v in values]) for k in values[0]}
        if isinstance(values[0], dict)
        else np.concatenate(values)
    )


def _assert_same(one, two):
    for part in (0, 1):
        a, b = _rows(one, part), _rows(two, part)
        for key in a if isinstance(a, dict) else [None]:
            np.testing.assert_array_equal(a[key] if key else a, b[key] if key else b)


@pytest.mark.parametrize("name", SOURCES)
def test_every_guarantee_a_source_claims_holds(name):
    with tfds.testing.mock_data(num_examples=40):
        one, two = SOURCES[name](), SOURCES[name]()
    claims = one.guarantees()
    assert claims == CLAIMS[name]  # the table of docs/data.md
    if claims.exact_resume:  # a new object's stream from position 48 is the uninterrupted one's
        _assert_same(_global(one, 16, 6)[3:], _global(two, 16, 3, start=48))
    if claims.same_across_strategies:  # global batch t of 32 is two of 16 read by two replicas
        _assert_same(_global(one, 32, 3), _global(two, 16, 6))
    if claims.same_across_backends:  # the tf.data form under cpu:2 is the NumPy form
        strategy = kbatch.distribute.resolve_strategy("cpu:2")
        tf_batches = _replica_batches(strategy, one.tf_train_dataset_fn(16, seed=6, start_example=16), 3)
        _assert_same([tuple(b) for b in tf_batches], _global(two, 16, 3, start=16))
    evaluated = one.eval_batches(8)
    weights = np.concatenate([b[2] for b in evaluated])
    assert weights.sum() == one.describe().num_eval_examples and len(weights) % 8 == 0


def test_imagenet_is_a_streamed_source_that_counts_its_eval_once_and_claims_no_guarantee(monkeypatch):
    monkeypatch.setattr(kbatch.data.preprocessing, "IMAGENET_SIZE", 32)  # small crops keep it fast
    with tfds.testing.mock_data(num_examples=6):
        source = sources.get("imagenet2012")
        info = source.describe()
        x, y = next(source.train_batches(4, seed=0))
        batches = source.eval_batches(4)
        labels = [
            label for _, label in tfds.as_numpy(tfds.load("imagenet2012", split="validation", as_supervised=True))
        ]
    assert source.guarantees() == sources.Guarantees(False, False, False)
    assert info.input_shape == (32, 32, 3) and info.num_classes == 1000 and x.shape == (4, 32, 32, 3)
    weights = np.concatenate([b[2] for b in batches])
    assert len(weights) == 8 and weights.sum() == 6
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches])[weights == 1], labels)


def test_a_streamed_tfds_set_shows_each_example_once_per_epoch():
    with tfds.testing.mock_data(num_examples=20):
        source = sources.from_tfds("mnist", in_memory=False, shuffle_buffer=8)
        stream = source.train_batches(10, seed=0)
        seen = [next(stream) for _ in range(4)]  # two epochs
        labels = [label for _, label in tfds.as_numpy(tfds.load("mnist", split="train", as_supervised=True))]
    assert source.describe().num_train_examples == 20 and source.describe().num_classes == 10
    y = np.concatenate([batch[1] for batch in seen])
    for epoch in (y[:20], y[20:]):
        np.testing.assert_array_equal(np.bincount(epoch, minlength=10), np.bincount(labels, minlength=10))
