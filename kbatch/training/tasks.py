"""What a run trains for: a `Task` turns a batch's labels and model outputs into per-example
values, the loss and any metrics, written with `keras.ops` so every backend runs them.

The step adds them up: the loss it differentiates is sum(loss) / global batch, so a gradient
summed over micro-batches and replicas is exactly the gradient of the mean over the global
batch; the logs show each value's mean over the examples it covered. A loss that couples the
examples of a batch (a contrastive loss) gives each example its own term; its gradient is then
exact for the micro-batch it was computed on.

    class Regression(kbatch.training.Task):
        monitor, mode = "loss", "min"

        def per_example(self, labels, outputs):
            error = keras.ops.squeeze(outputs, -1) - keras.ops.cast(labels, outputs.dtype)
            return {"loss": error**2, "abs_error": keras.ops.abs(error)}
"""

import keras
from keras import ops


class Task:
    """The loss and metrics of a model, per example.

    Attributes:
      monitor: the metric that picks the best evaluation and that `target_accuracy` is read
        against ("accuracy" by default; "loss" for a task without one).
      mode: "max" if a larger `monitor` is better, "min" if smaller.
    """

    monitor = "loss"
    mode = "min"

    def per_example(self, labels, outputs):
        """{name: [batch] values}; "loss" is required. Values are cast to float32 by the step."""
        raise TypeError(f"{type(self).__name__} must define per_example(labels, outputs).")

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

    def per_example(self, labels, outputs):
        logits = ops.cast(outputs, "float32")
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        predicted = ops.argmax(logits, axis=-1)
        correct = ops.cast(ops.equal(predicted, ops.cast(labels, predicted.dtype)), "float32")
        return {"loss": loss, "accuracy": correct}
