"""The next-token task against a NumPy computation: per-sequence mean cross-entropy and accuracy
over the unmasked targets, the token sums, and perplexity and token accuracy from their means;
each sequence's values depend on it alone, so summing over two halves of a batch is the whole."""

import keras
import numpy as np
import pytest
from backend_ops import gradients

from kbatch.training import NextToken, Task

pytestmark = pytest.mark.fast

PAD = 256


def _batch(seed=0, batch=6, length=64, vocab=257):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(batch, length, vocab)) * 3).astype("float32")
    labels = rng.integers(0, 256, size=(batch, length)).astype("int32")
    labels[1, 50:] = PAD  # a packed split's last window
    labels[2, :] = PAD  # padding only
    labels[3, ::7] = PAD
    labels[4, :10] = logits[4, :10].argmax(-1)  # some right predictions
    return labels, logits


def _reference(labels, logits, pad=PAD):
    """NumPy: log-softmax cross-entropy of each target, masked where it is `pad`."""
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    valid = labels != pad
    safe = np.where(valid, labels, 0)
    losses = -np.take_along_axis(log_probs, safe[..., None], -1)[..., 0] * valid
    correct = (logits.argmax(-1) == labels) & valid
    return losses, correct, valid


def _values(task, labels, logits):
    return {name: np.asarray(value) for name, value in task.per_example(labels, logits).items()}


def test_per_sequence_values_match_numpy_with_padding_masked():
    labels, logits = _batch()
    losses, correct, valid = _reference(labels, logits)
    values = _values(NextToken(pad_id=PAD), labels, logits)
    tokens = valid.sum(-1)
    np.testing.assert_array_equal(values["tokens"], tokens)
    np.testing.assert_allclose(values["token_loss"], losses.sum(-1), rtol=1e-5)
    np.testing.assert_array_equal(values["token_correct"], correct.sum(-1))
    full = tokens > 0
    np.testing.assert_allclose(values["loss"][full], losses.sum(-1)[full] / tokens[full], rtol=1e-5)
    np.testing.assert_allclose(values["accuracy"][full], correct.sum(-1)[full] / tokens[full], rtol=1e-6)
    assert values["loss"][2] == 0.0 and values["accuracy"][2] == 0.0  # padding only: counts for nothing
    assert values["token_correct"][4] >= 10


def test_without_a_pad_id_every_target_counts():
    labels, logits = _batch()
    losses, _, _ = _reference(labels, logits, pad=None)
    values = _values(NextToken(), labels, logits)
    np.testing.assert_allclose(values["loss"], losses.mean(-1), rtol=1e-5)
    assert (values["tokens"] == 64).all()


def test_perplexity_and_token_accuracy_are_the_token_means_of_the_whole_batch():
    labels, logits = _batch()
    losses, correct, valid = _reference(labels, logits)
    task = NextToken(pad_id=PAD)
    means = {name: value.mean() for name, value in _values(task, labels, logits).items()}
    summary = task.summary(means)
    np.testing.assert_allclose(summary["perplexity"], np.exp(losses.sum() / valid.sum()), rtol=1e-5)
    np.testing.assert_allclose(summary["token_accuracy"], correct.sum() / valid.sum(), rtol=1e-6)


def test_two_halves_of_a_batch_sum_to_the_whole_batch():
    """Accumulation and replicas add per-example values: splitting the batch changes nothing."""
    labels, logits = _batch(seed=1, batch=8)
    task = NextToken(pad_id=PAD)
    whole = _values(task, labels, logits)
    halves = [_values(task, labels[part], logits[part]) for part in (slice(0, 4), slice(4, 8))]
    for name, value in whole.items():
        np.testing.assert_allclose(halves[0][name].sum() + halves[1][name].sum(), value.sum(), rtol=1e-6)
        np.testing.assert_allclose(np.concatenate([halves[0][name], halves[1][name]]), value, rtol=1e-6)


def test_the_loss_gradient_is_the_mean_token_gradient_of_full_sequences():
    """With no padding, the gradient of sum(loss) / batch is that of the mean over every token
    (Keras's own sparse categorical cross-entropy on the flattened batch)."""
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(3, 8, 11)) * 3).astype("float32")
    labels = rng.integers(0, 11, size=(3, 8)).astype("int32")
    task = NextToken(pad_id=PAD)
    probe = keras.layers.Identity()
    ours = gradients(probe, logits, lambda out: keras.ops.sum(task.per_example(labels, out)["loss"]) / 3)[0]
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    theirs = gradients(probe, logits, lambda out: keras_loss(labels.reshape(-1), keras.ops.reshape(out, (-1, 11))))[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_monitor_is_the_loss_and_lower_is_better():
    task = NextToken(pad_id=PAD)
    assert isinstance(task, Task) and task.monitor == "loss" and task.mode == "min"
    assert task.monitor in task.per_example(*_batch())
    assert task.better(1.0, 2.0) and task.reached(1.0, 1.5) and not task.reached(2.0, 1.5)


@pytest.mark.parametrize("task", [Task(), NextToken()])
def test_summary_of_the_base_task_is_empty_and_next_token_adds_two(task):
    means = {"tokens": 64.0, "token_loss": 64 * np.log(257.0), "token_correct": 16.0}
    expected = {} if type(task) is Task else {"perplexity": pytest.approx(257.0), "token_accuracy": 0.25}
    assert task.summary(means) == expected
