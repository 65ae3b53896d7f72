"""The data-source contract on the NumPy sources (kbatch.data.from_arrays, from_iterable, the
built-in sets): each guarantee a source claims, checked against the arrays themselves, and each
bad input's one line."""

import numpy as np
import pytest

import kbatch
from kbatch.data.sources import from_arrays, from_iterable, weighted_batches
from kbatch.data.sources.builtin import BuiltinSource

pytestmark = pytest.mark.fast

RNG = np.random.default_rng(0)
X = RNG.normal(size=(50, 3, 2)).astype(np.float32)
Y = RNG.integers(0, 4, 50)
X_EVAL, Y_EVAL = RNG.normal(size=(13, 3, 2)).astype(np.float32), RNG.integers(0, 4, 13)


def _arrays_source():
    return from_arrays(X, Y, eval=(X_EVAL, Y_EVAL), num_classes=4)


def _rows(x):
    """Each example of `x` as bytes, to compare examples as sets."""
    return sorted(row.tobytes() for row in x.reshape(len(x), -1))


def _stream(source, batch, steps, seed=3, start=0):
    batches = source.train_batches(batch, seed, start)
    return [next(batches) for _ in range(steps)]


def test_from_arrays_describes_the_arrays():
    info = _arrays_source().describe()
    assert (info.num_train_examples, info.num_eval_examples, info.input_shape, info.num_classes) == (50, 13, (3, 2), 4)
    assert info.input_spec == kbatch.data.FeatureSpec((3, 2), "float32") and info.label_spec.dtype == Y.dtype.name


def test_each_epoch_of_the_arrays_stream_is_a_permutation_of_the_arrays():
    seen = np.concatenate([x for x, _ in _stream(_arrays_source(), 10, 10)])  # two epochs of 50
    for epoch in range(2):
        assert _rows(seen[epoch * 50 : (epoch + 1) * 50]) == _rows(X)
    assert not np.array_equal(seen[:50], seen[50:])  # a fresh order each epoch


def test_labels_travel_with_their_examples():
    for x, y in _stream(_arrays_source(), 16, 5):  # batches that straddle the epochs
        index = [int(np.flatnonzero((X == row).all(axis=(1, 2)))[0]) for row in x]
        np.testing.assert_array_equal(Y[index], y)


def test_two_source_objects_give_the_same_examples_for_the_same_positions():
    one, two = _arrays_source(), _arrays_source()
    assert one.guarantees().same_across_strategies
    np.testing.assert_array_equal(one.examples_at(37, 91, seed=5)[0], two.examples_at(37, 91, seed=5)[0])
    # Global batch t of 32 is the two halves of 16 a 2-replica run reads, the same positions.
    whole = np.concatenate([x for x, _ in _stream(one, 32, 4)])
    halves = np.concatenate([x for x, _ in _stream(two, 16, 8)])
    np.testing.assert_array_equal(whole, halves)


def test_a_resumed_arrays_stream_is_the_uninterrupted_one():
    assert _arrays_source().guarantees().exact_resume
    uninterrupted = _stream(_arrays_source(), 12, 9)
    resumed = _stream(_arrays_source(), 12, 4, start=12 * 5)
    for (x1, y1), (x2, y2) in zip(uninterrupted[5:], resumed):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_a_features_dict_is_sliced_feature_by_feature():
    tokens = np.arange(50 * 4).reshape(50, 4)
    source = from_arrays({"image": X, "tokens": tokens}, Y, eval=({"image": X_EVAL, "tokens": tokens[:13]}, Y_EVAL))
    assert source.describe().input_shape == {"image": (3, 2), "tokens": (4,)}
    x, y = source.examples_at(45, 60, seed=1)
    index = source.indices(45, 60, seed=1)
    np.testing.assert_array_equal(x["image"], X[index])
    np.testing.assert_array_equal(x["tokens"], tokens[index])
    np.testing.assert_array_equal(y, Y[index])


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_evaluation_counts_every_example_once_whatever_the_replica_count(replicas):
    batches = _arrays_source().eval_batches(4 * replicas)  # 13 examples: the last batch padded
    assert {len(y) for _, y, _ in batches} == {4 * replicas}
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    w = np.concatenate([b[2] for b in batches])
    assert w.sum() == 13 and set(np.unique(w)) <= {0.0, 1.0}
    np.testing.assert_array_equal(x[w == 1], X_EVAL)
    np.testing.assert_array_equal(y[w == 1], Y_EVAL)


def test_uneven_chunks_are_recut_into_whole_weighted_batches():
    chunks = [(X_EVAL[:5], Y_EVAL[:5]), (X_EVAL[5:6], Y_EVAL[5:6]), (X_EVAL[6:], Y_EVAL[6:])]
    batches = list(weighted_batches(iter(chunks), 4))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches])[:13], X_EVAL)
    np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]), [1.0] * 13 + [0.0] * 3)


def _batches_of(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def test_a_recreatable_iterable_resumes_exactly_and_recuts_to_the_global_batch():
    source = from_iterable(
        lambda: iter(_batches_of(X, Y, 7)), eval=_batches_of(X_EVAL, Y_EVAL, 5), num_train_examples=50, num_classes=4
    )
    assert source.guarantees().exact_resume and source.describe().num_eval_examples == 13
    stream = np.concatenate([x for x, _ in _stream(source, 20, 5)])  # two passes of 50
    np.testing.assert_array_equal(stream, np.concatenate([X, X])[:100])
    resumed = _stream(source, 20, 2, start=60)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in resumed]), stream[60:100])


def test_a_one_shot_iterable_claims_no_resume_and_continues_where_it_is():
    source = from_iterable(iter(_batches_of(X, Y, 10)), eval=_batches_of(X_EVAL, Y_EVAL, 13), num_train_examples=50)
    assert source.guarantees() == kbatch.data.sources.Guarantees(False, False, False)
    first = _stream(source, 15, 2)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in first]), X[:30])
    with pytest.raises(ValueError, match="the training iterable ran out"):
        _stream(source, 15, 2)


def test_a_builtin_sets_stream_from_a_position_holds_the_examples_at_those_positions():
    source = BuiltinSource("mnist1d/original")
    x, y = next(BuiltinSource("mnist1d/original").train_batches(96, seed=3, start_example=96 * 41))  # across epochs
    np.testing.assert_array_equal(source.examples_at(96 * 41, 96 * 42, seed=3)[0], x)
    np.testing.assert_array_equal(source.examples_at(96 * 41, 96 * 42, seed=3)[1], y)
    info = source.describe()
    assert info.input_shape == (40, 1) and info.num_classes == 10 and info.num_eval_examples == 1000
    assert source.guarantees().exact_resume and not source.guarantees().same_across_backends


BAD = [
    (lambda: from_arrays(X, Y[:40], eval=(X_EVAL, Y_EVAL)), r"different lengths \(x has 50, y has 40\)"),
    (lambda: from_arrays(X, Y, eval=(X_EVAL, Y_EVAL), num_classes=3), r"label 3 is out of range for num_classes=3"),
    (lambda: from_arrays(X, Y), r"no evaluation data: give eval=\(x_eval, y_eval\)"),
    (lambda: from_arrays({"a": X, "b": X}, Y, eval=({"a": X_EVAL}, Y_EVAL)), r"x_eval lacks the feature\(s\) 'b'"),
    (
        lambda: from_iterable(
            lambda: iter([({"a": X[:5]}, Y[:5])]), eval=[({"b": X_EVAL}, Y_EVAL)], num_train_examples=5
        ).describe(),
        r"an evaluation batch lacks the feature\(s\) 'a'",
    ),
    (lambda: from_iterable(lambda: iter([(X, Y)]), eval=None, num_train_examples=50), r"no evaluation data"),
    (lambda: from_iterable(lambda: iter([(X, Y)]), eval=iter([(X, Y)]), num_train_examples=50), r"one-shot iterator"),
    (lambda: BuiltinSource("svhn"), r"Unknown dataset 'svhn'"),
]


@pytest.mark.parametrize("build, message", BAD)
def test_bad_input_is_one_line_naming_what_is_wrong(build, message):
    with pytest.raises(ValueError, match=message) as error:
        build()
    assert "\n" not in str(error.value)
