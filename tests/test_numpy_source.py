"""The input of the JAX backend without TensorFlow (kbatch.data.numpy_source): the arrays are the
generator's, kept in a cache that is read back, regenerated when damaged; the training stream
shows every example once per epoch and resumes where it stopped; evaluation counts each test
example once."""

import numpy as np
import pytest

from kbatch.data import numpy_source
from kbatch.data.sources.builtin import BuiltinSource

pytestmark = pytest.mark.fast


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBATCH_CACHE_DIR", str(tmp_path / "cache"))
    numpy_source._arrays.cache_clear()
    yield tmp_path / "cache"
    numpy_source._arrays.cache_clear()


def test_the_cached_arrays_are_the_generators_and_are_read_back(cache, monkeypatch):
    fresh = numpy_source.make_mnist1d("original")
    first = numpy_source.cached_mnist1d("original")
    assert numpy_source.cache_path("original").startswith(str(cache))
    for split in numpy_source.SPLITS:
        np.testing.assert_array_equal(first[split], np.asarray(fresh[split]))
    monkeypatch.setattr(numpy_source, "make_mnist1d", lambda config: pytest.fail("generated again"))
    again = numpy_source.cached_mnist1d("original")
    for split in numpy_source.SPLITS:
        np.testing.assert_array_equal(again[split], first[split])


def test_a_damaged_cache_is_generated_again(cache):
    reference = numpy_source.cached_mnist1d("original")
    path = numpy_source.cache_path("original")
    with open(path, "r+b") as file:
        file.truncate(1000)
    again = numpy_source.cached_mnist1d("original")
    np.testing.assert_array_equal(again["x"], reference["x"])
    assert np.load(path)["x"].shape == reference["x"].shape  # rewritten whole


def test_the_stream_shows_every_example_once_per_epoch_and_resumes_where_it_stopped(cache):
    x, _, _, _ = numpy_source._arrays("mnist1d/original")
    stream = BuiltinSource("mnist1d/original").train_batches(96, seed=3)
    batches = [next(stream)[0] for _ in range(-(-2 * len(x) // 96))]  # the epochs meet mid-batch
    seen = np.concatenate(batches)
    for epoch in range(2):  # each epoch is a permutation of the training examples
        block = seen[epoch * len(x) : (epoch + 1) * len(x)]
        order = np.lexsort(block.reshape(len(block), -1).T)
        np.testing.assert_array_equal(block[order], x[np.lexsort(x.reshape(len(x), -1).T)])
    assert not np.array_equal(seen[: len(x)], seen[len(x) : 2 * len(x)])  # another order the second time
    resumed = BuiltinSource("mnist1d/original").train_batches(96, seed=3, start_example=96 * 7)
    np.testing.assert_array_equal(next(resumed)[0], batches[7])


def test_evaluation_counts_every_test_example_once(cache):
    _, _, x_test, y_test = numpy_source._arrays("mnist1d/original")
    batches = BuiltinSource("mnist1d/original").eval_batches(192)
    assert {len(b[0]) for b in batches} == {192}
    weights = np.concatenate([b[2] for b in batches])
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches])[weights == 1], x_test)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches])[weights == 1], y_test)
    assert weights.sum() == len(x_test) and set(np.unique(weights)) <= {0.0, 1.0}
