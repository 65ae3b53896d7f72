"""TensorBoard event files, one writer per group (`train/`, `eval/`, `examples/`) under
`model_dir`: `GroupWriters` is what both backends' writers share; `EventWriter` writes without
TensorFlow (the JAX backend), through TensorBoard's own `EventFileWriter`."""

import glob
import os
import time

from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter


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
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=name, simple_value=float(value)) for name, value in values.items()]
        )
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))


def drop_events_from(model_dir, first_dropped, first_dropped_in=None):
    """Remove from every group's event files the points at or after `first_dropped` (or
    `first_dropped_in[group]`, for a group whose points are not counted in updates): a run
    resumed from a checkpoint writes those points again, and TensorBoard would draw both. Each
    file is rewritten under a temporary name and renamed in one step."""
    for path in sorted(glob.glob(os.path.join(model_dir, "*", "events.out.tfevents.*"))):
        group = os.path.basename(os.path.dirname(path))
        if not path.endswith(".partial"):
            _drop_from(path, (first_dropped_in or {}).get(group, first_dropped))


def _drop_from(path, first_dropped):
    records = list(RawEventFileLoader(path).Load())
    kept = [r for r in records if not _at_or_after(r, first_dropped)]
    if len(kept) == len(records):
        return
    with open(path + ".partial", "wb") as f:
        writer = RecordWriter(f)
        for record in kept:
            writer.write(record)
        writer.flush()
    os.replace(path + ".partial", path)


def _at_or_after(record, first_dropped):
    event = event_pb2.Event.FromString(record)
    return event.step >= first_dropped and not event.HasField("file_version")
