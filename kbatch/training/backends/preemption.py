"""Save a checkpoint and stop when the machine is about to go away.

TensorFlow's `tf.distribute.experimental.PreemptionCheckpointHandler` does the watching: SIGTERM
on one's own machines (a cluster manager, `kill`, the launcher), maintenance events on GCE GPU
VMs, preemption notices on TPU pods; in multi-worker training it agrees with the other workers on
the update after which all of them save. kbatch hands it the run's own CheckpointManager and a
save function that also writes the evaluation history, so the run resumes from the preemption
point with the same command, and turns its exit into a `stops.Preempted` error that `kbatch-train`
reports with exit code 42 (`stops.PREEMPTED`).
"""

import contextlib
import signal
import threading

import tensorflow as tf
from tensorflow.python.util import deprecation

from kbatch.training import stops


@contextlib.contextmanager
def handler(strategy, manager, save, current_step):
    """Yields a PreemptionCheckpointHandler (its `save_checkpoint_if_preempted`), or None where
    none can watch.

    Args:
      strategy: the run's strategy (its cluster resolver names the workers, if any).
      manager: the run's `tf.train.CheckpointManager` (already restored: the handler restores
        it again, which changes nothing).
      save: `save(checkpoint_number)`, the run's own save (history and checkpoint).
      current_step: `current_step() -> int`, for the error raised after saving.

    Call `save_checkpoint_if_preempted(checkpoint_number=step)` on it after every loop of
    updates. Signal handlers can only be set on the main thread: elsewhere (a notebook's worker
    thread) nothing watches. The SIGTERM handler is restored on exit, so a process that goes on
    after training still stops on SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread():
        yield None
        return

    def stop():
        raise stops.Preempted(current_step(), manager.latest_checkpoint)

    previous = signal.getsignal(signal.SIGTERM)
    config = tf.distribute.experimental.TerminationConfig(
        exit_fn=stop, save_fn=lambda checkpoint_number: save(checkpoint_number)
    )
    watcher = None
    try:
        watcher = tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver, manager, termination_config=config
        )
        yield _Quiet(watcher)
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_watching(watcher)


class _Quiet:
    """The handler, its saving without a deprecation warning: TensorFlow's own save reads its
    deprecated `total_run_calls` (6 lines on stderr at every preemption)."""

    def __init__(self, watcher):
        self._watcher = watcher

    def save_checkpoint_if_preempted(self, *args, **kwargs):
        with deprecation.silence():
            return self._watcher.save_checkpoint_if_preempted(*args, **kwargs)


def _stop_watching(watcher):
    """Stop the handler's watcher threads now, while every worker is still there. TensorFlow stops
    them only when the handler is garbage-collected, and a worker whose peers have exited by then
    ends a successful run with `Exception in thread PeerTerminationWatcher ... Socket closed`."""
    for stop in ("_stop_cluster_wise_termination_watcher_thread", "_stop_poll_termination_signal_thread"):
        if watcher is not None and hasattr(watcher, stop):  # private in TF 2.21: absent elsewhere
            getattr(watcher, stop)()
