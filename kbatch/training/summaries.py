"""TensorBoard scalars and the console progress line.

Scalars are written per optimizer update (loss, accuracy, learning rate, global gradient norm,
global batch size) against the update count, LARS's trust ratios once per loop call, and the learning rate and batch size also against
examples seen (`examples/` run), where runs of different batch sizes line up.
"""

import os
import sys

import numpy as np
import tensorflow as tf
import keras

from kbatch.training.step import RECORD_FIELDS


class Summaries:
    """Writers for `model_dir/{train,eval,examples}`; a no-op on non-chief workers."""

    def __init__(self, model_dir, enabled=True):
        self.enabled = enabled
        if enabled:
            self.train = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
            self.eval = tf.summary.create_file_writer(os.path.join(model_dir, "eval"))
            self.examples = tf.summary.create_file_writer(os.path.join(model_dir, "examples"))

    def write_steps(self, records, first_step, first_example, global_batch_size):
        """One point per update: `records` is the train loop's [steps, RECORD_FIELDS] array."""
        if not self.enabled:
            return
        col = {name: records[:, i] for i, name in enumerate(RECORD_FIELDS)}
        with self.train.as_default():
            for i in range(len(records)):
                step = first_step + i + 1
                tf.summary.scalar("loss", col["loss_sum"][i] / col["count"][i], step=step)
                tf.summary.scalar("accuracy", col["correct"][i] / col["count"][i], step=step)
                tf.summary.scalar("learning_rate", col["learning_rate"][i], step=step)
                tf.summary.scalar("global_batch_size", global_batch_size, step=step)
                if np.isfinite(col["grad_norm"][i]):
                    tf.summary.scalar("gradient_norm", col["grad_norm"][i], step=step)
        with self.examples.as_default():
            for i in range(len(records)):
                seen = first_example + i * global_batch_size
                tf.summary.scalar("learning_rate", col["learning_rate"][i], step=seen)
                tf.summary.scalar("global_batch_size", global_batch_size, step=seen)

    def write_eval(self, step, metrics):
        if not self.enabled:
            return
        with self.eval.as_default():
            for name, value in metrics.items():
                tf.summary.scalar(name, value, step=step)
            self.eval.flush()
        self.train.flush()
        self.examples.flush()

    def write_trust_ratios(self, step, optimizer):
        """LARS's min / median / max trust ratio of the last update (nothing for others)."""
        while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = optimizer.inner_optimizer
        if not self.enabled or not hasattr(optimizer, "trust_ratio_stats"):
            return
        with self.train.as_default():
            for name, value in optimizer.trust_ratio_stats().items():
                tf.summary.scalar(f"trust_ratio/{name}", value, step=step)

    def write_throughput(self, step, examples_per_second):
        if self.enabled:
            with self.train.as_default():
                tf.summary.scalar("examples_per_second", examples_per_second, step=step)


class Progress:
    """A Keras Progbar per epoch, then one line with the eval results."""

    def __init__(self, num_epochs, enabled=True):
        self.num_epochs = num_epochs
        self.enabled = enabled
        self.bar = None

    def start_epoch(self, epoch, steps_in_epoch):
        if self.enabled:
            print(f"epoch {epoch + 1}/{self.num_epochs}", flush=True)
            self.bar = keras.utils.Progbar(steps_in_epoch, verbose=1 if sys.stdout.isatty() else 2,
                                           stateful_metrics=["lr", "examples/s", "batch"])

    def update(self, step_in_epoch, values):
        if self.enabled and self.bar is not None:
            self.bar.update(step_in_epoch, values=list(values.items()))

    def end_epoch(self, line):
        if self.enabled:
            print(line, flush=True)
