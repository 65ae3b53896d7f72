"""What a run trains for: a `Task` turns a batch's labels and model outputs into per-example
values, the loss and any metrics, written with `keras.ops` so every backend runs them.

The step adds them up: the loss it differentiates is sum(loss) / global batch, so a gradient
summed over micro-batches and replicas is exactly the gradient of the mean over the global
batch; the logs show each value's mean over the examples it covered. A loss that couples the
examples of a batch (a contrastive loss) sets `over_batch`: it is then given the whole global
batch (`kbatch.training.contrastive`).

    class Regression(kbatch.training.Task):
        monitor, mode = "loss", "min"

        def per_example(self, labels, outputs):
            error = keras.ops.squeeze(outputs, -1) - keras.ops.cast(labels, outputs.dtype)
            return {"loss": error**2, "abs_error": keras.ops.abs(error)}
"""

import keras
import numpy as np
from keras import ops


class Task:
    """The loss and metrics of a model, per example.

    Attributes:
      monitor: the metric that picks the best evaluation and that `target_accuracy` is read
        against ("accuracy" by default; "loss" for a task without one).
      mode: "max" if a larger `monitor` is better, "min" if smaller.
      monitor_from: None, or the name of the action that adds `monitor` to each evaluation when
        `per_example` has no such value (`Contrastive`: "LinearProbe", the probe's accuracy).
      from_logits: True if the task takes logits (and applies the softmax itself): the trainer
        then refuses a model that ends in a softmax or sigmoid. False by default: a task of your
        own may take probabilities.
      over_batch: True if an example's values depend on the other examples of the batch (a
        contrastive loss's negatives): `per_example` is then given the labels and outputs of the
        whole global batch on every backend (gathered across replicas on TensorFlow, the global
        array on JAX), and the trainer refuses what would split the batch (accumulation, the
        noise scale's parts, parameter servers). In evaluation it is also given `weights` [batch]
        (0 for the padded copies that fill the last batch), which must not act on the others.
        False by default.
    """

    monitor = "loss"
    mode = "min"
    monitor_from = None
    from_logits = False
    over_batch = False

    def per_example(self, labels, outputs):
        """{name: [batch] values}; "loss" is required. Values are cast to float32 by the step."""
        raise TypeError(f"{type(self).__name__} must define per_example(labels, outputs).")

    def summary(self, means):
        """{name: value} of metrics derived from `means`, each value's mean over the examples a log
        covers (none by default). A ratio of two means is a ratio of sums, exact whatever the batch."""
        del means
        return {}

    def reached(self, value, target):
        """Whether an evaluation's `monitor` value reaches `target`."""
        return value >= target if self.mode == "max" else value <= target

    def better(self, value, best):
        """Whether `value` of `monitor` is better than `best`."""
        return value > best if self.mode == "max" else value < best


class Classification(Task):
    """Sparse categorical cross-entropy on logits, and accuracy: kbatch's default task."""

    monitor = "accuracy"
    mode = "max"
    from_logits = True

    def per_example(self, labels, outputs):
        logits = ops.cast(outputs, "float32")
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        predicted = ops.argmax(logits, axis=-1)
        correct = ops.cast(ops.equal(predicted, ops.cast(labels, predicted.dtype)), "float32")
        return {"loss": loss, "accuracy": correct}


class NextToken(Task):
    """Next-token cross-entropy of a language model: labels [batch, length] token ids (the inputs
    shifted by one), outputs [batch, length, vocabulary] logits; targets equal to `pad_id` (None:
    none) are masked out.

    A sequence's "loss" is the mean cross-entropy over its unmasked targets, in nats per token,
    so its scale and the learning rate that suits it do not depend on the sequence length (a sum
    over the tokens would grow with it). Like every per-example value it is summed by the step, so
    accumulation and replicas stay exact; each sequence weighs the same, which equals the mean over
    tokens when the sequences are full (packed windows: all but a split's last). "accuracy" is the
    sequence's fraction of targets predicted. "tokens", "token_loss" and "token_correct" are sums
    over its unmasked targets, from which `summary` gives the token-weighted metrics exactly:
    "perplexity" = exp(token_loss / tokens) and "token_accuracy" = token_correct / tokens.
    """

    monitor = "loss"
    mode = "min"
    from_logits = True

    def __init__(self, pad_id=None):
        self.pad_id = pad_id

    def per_example(self, labels, outputs):
        logits = ops.cast(outputs, "float32")
        labels = ops.cast(labels, "int32")
        valid = (
            ops.ones_like(labels, "float32")
            if self.pad_id is None
            else ops.cast(ops.not_equal(labels, self.pad_id), "float32")
        )
        targets = ops.where(valid > 0, labels, ops.zeros_like(labels))
        token_loss = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True) * valid
        correct = ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), targets), "float32") * valid
        tokens, loss_sum, correct_sum = (ops.sum(value, axis=-1) for value in (valid, token_loss, correct))
        per_token = 1.0 / ops.maximum(tokens, 1.0)  # a sequence of padding only: 0, not NaN
        return {
            "loss": loss_sum * per_token,
            "accuracy": correct_sum * per_token,
            "tokens": tokens,
            "token_loss": loss_sum,
            "token_correct": correct_sum,
        }

    def summary(self, means):
        tokens = max(float(means["tokens"]), 1e-12)
        return {
            "perplexity": float(np.exp(means["token_loss"] / tokens)),
            "token_accuracy": float(means["token_correct"] / tokens),
        }
