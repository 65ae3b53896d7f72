"""TensorBoard event files, written with `tf.summary` (the TensorFlow backend's writer).

One writer per group under `model_dir`: `train/` (per update), `eval/`, and `examples/`
(the same points against examples seen, where runs of different batch sizes line up).
"""

import tensorflow as tf

from kbatch.training.run_files.event_writer import GroupWriters


class Summaries(GroupWriters):
    """Event files written with `tf.summary`."""

    def _open(self, folder):
        return tf.summary.create_file_writer(folder)

    def _write(self, writer, step, values):
        with writer.as_default():
            for name, value in values.items():
                tf.summary.scalar(name, value, step=step)

    def histogram(self, group, step, name, values):
        """One histogram of `values` at `step` (e.g. the staleness of a loop's updates)."""
        if self.enabled:
            with self.writer(group).as_default():
                tf.summary.histogram(name, values, step=step)
