"""Save a checkpoint and stop when the machine is about to go away.

TensorFlow's `tf.distribute.experimental.PreemptionCheckpointHandler` does the watching: SIGTERM
on one's own machines (a cluster manager, `kill`, the launcher), maintenance events on GCE GPU
VMs, preemption notices on TPU pods; in multi-worker training it agrees with the other workers on
the update after which all of them save. kbatch hands it the run's own CheckpointManager and a
save function that also writes the evaluation history, so the run resumes from the preemption
point with the same command, and turns its exit into a `Preempted` error that `kbatch-train`
reports with exit code `RESTART_EXIT_CODE`.
"""

import contextlib
import signal
import threading

import tensorflow as tf

RESTART_EXIT_CODE = 42  # what TensorFlow's handler exits with on Borg: "restart me"


class Preempted(Exception):
    """Training stopped after saving a checkpoint because the machine is going away."""

    def __init__(self, step, checkpoint):
        super().__init__(f"preempted: checkpoint of step {step} saved at {checkpoint}; run the same "
                         f"command again to resume.")
        self.step, self.checkpoint = step, checkpoint


@contextlib.contextmanager
def handler(strategy, manager, save, current_step):
    """Yields a PreemptionCheckpointHandler, or None where none can watch.

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
        raise Preempted(current_step(), manager.latest_checkpoint)

    previous = signal.getsignal(signal.SIGTERM)
    config = tf.distribute.experimental.TerminationConfig(
        exit_fn=stop, save_fn=lambda checkpoint_number: save(checkpoint_number))
    try:
        yield tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver, manager, termination_config=config)
    finally:
        signal.signal(signal.SIGTERM, previous)
