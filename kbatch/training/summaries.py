"""TensorBoard event files, written with `tf.summary` (the TensorFlow backend's writer).

One writer per group under `model_dir`: `train/` (per update), `eval/`, and `examples/`
(the same points against examples seen, where runs of different batch sizes line up).
"""

import os

import tensorflow as tf


class Summaries:
    """`scalars(group, step, values)` writes {name: value} at `step`; a no-op when disabled
    (non-chief workers)."""

    def __init__(self, model_dir, enabled=True):
        self.model_dir, self.enabled, self._writers = model_dir, enabled, {}

    def scalars(self, group, step, values):
        if not self.enabled:
            return
        if group not in self._writers:
            self._writers[group] = tf.summary.create_file_writer(os.path.join(self.model_dir, group))
        with self._writers[group].as_default():
            for name, value in values.items():
                tf.summary.scalar(name, value, step=step)

    def flush(self):
        for writer in self._writers.values():
            writer.flush()
