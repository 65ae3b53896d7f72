"""TensorBoard event files, one writer per group (`train/`, `eval/`, `examples/`) under
`model_dir`: `GroupWriters` is what both backends' writers share; `EventWriter` writes without
TensorFlow (the JAX backend), through TensorBoard's own `EventFileWriter`."""

import os
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class GroupWriters:
    """`scalars(group, step, values)` writes {name: value} at `step`, opening the group's writer
    on first use; a no-op when disabled (non-chief processes). Subclasses say how to `_open` a
    writer for a folder and `_write` one point."""

    def __init__(self, model_dir, enabled=True):
        self.model_dir, self.enabled, self._writers = model_dir, enabled, {}

    def scalars(self, group, step, values):
        if self.enabled:
            self._write(self.writer(group), step, values)

    def writer(self, group):
        """The group's writer, opened on first use."""
        if group not in self._writers:
            self._writers[group] = self._open(os.path.join(self.model_dir, group))
        return self._writers[group]

    def flush(self):
        for writer in self._writers.values():
            writer.flush()


class EventWriter(GroupWriters):
    """Event files without TensorFlow."""

    def _open(self, folder):
        return EventFileWriter(folder)

    def _write(self, writer, step, values):
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=name, simple_value=float(value))
                                             for name, value in values.items()])
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))
