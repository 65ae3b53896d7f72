"""TensorBoard event files without TensorFlow (the JAX backend's writer), through TensorBoard's
own `EventFileWriter`: the same `scalars(group, step, values)` / `flush()` as `Summaries`."""

import os
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class EventWriter:
    """One event file per group under `model_dir`; a no-op when disabled."""

    def __init__(self, model_dir, enabled=True):
        self.model_dir, self.enabled, self._writers = model_dir, enabled, {}

    def scalars(self, group, step, values):
        if not self.enabled:
            return
        if group not in self._writers:
            self._writers[group] = EventFileWriter(os.path.join(self.model_dir, group))
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=name, simple_value=float(value))
                                             for name, value in values.items()])
        self._writers[group].add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self):
        for writer in self._writers.values():
            writer.flush()
