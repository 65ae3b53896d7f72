"""Stopping safely: a run that stops being finite names its last good checkpoint, checkpoints
are never written with a weight that is not finite, and SIGTERM or Ctrl-C save before stopping."""

import contextlib
import signal
import threading

import numpy as np

import kbatch_cli
from kbatch.training.actions.action import Action
from kbatch.training.stops import Interrupted


def diverged(run, what):
    """The one-line FloatingPointError of a run that stopped being finite: what happened, the last
    good checkpoint, and how to continue from it."""
    latest = run.backend.latest_checkpoint
    return FloatingPointError(
        f"{what}: stopping. The last good checkpoint, kept as it was, is {latest or '(none yet)'}. To go on "
        f"{'from it' if latest else 'from the start'} at a lower learning rate: the same command with "
        f"--config.model_dir={run.settings.model_dir} --config.base_learning_rate=<lower>."
    )


class CheckFinite(Action):
    """Stop with a FloatingPointError at the first update whose loss is not finite, naming the
    last checkpoint (kept as it was)."""

    def after_loop(self, run, loop):
        losses = loop.records["loss"]
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise diverged(run, f"The training loss is {losses[bad[0]]} at step {loop.first_step + bad[0] + 1}")


class Checkpoint(Action):
    """At each checkpoint point: the model, optimizer and step, with the history beside them;
    never a checkpoint with a weight or optimizer slot that is not finite (an update can make
    one infinite while its loss was still finite)."""

    def after_loop(self, run, loop):
        if run.step in run.plan.checkpoint_points:
            if not run.backend.all_finite():
                raise diverged(run, f"A weight or optimizer slot is not finite after step {run.step}")
            run.save(run.step)


class WatchPreemption(Action):
    """On SIGTERM or a maintenance notice: save where the run is, then raise `Preempted`."""

    def __init__(self):
        self._stack = contextlib.ExitStack()

    def begin(self, run):
        self._check = self._stack.enter_context(run.backend.preemption(run.save, lambda: run.step))

    def after_loop(self, run, loop):
        self._check(run.step)

    def close(self, run):
        self._stack.close()


class WatchInterrupt(Action):
    """Ctrl-C: finish the loop under way, save, and raise `Interrupted` (a second Ctrl-C stops
    at once). Signal handlers can only be set on the main thread: elsewhere nothing watches."""

    def __init__(self):
        self._previous, self._pressed = None, False
        self._second_press = contextlib.ExitStack()

    def begin(self, run):
        # Several workers would each see Ctrl-C after a different loop, and a save is a
        # collective: there it stops at once, as before, and resumes from the last checkpoint.
        if threading.current_thread() is threading.main_thread() and not run.backend.multi_worker:
            self._previous = signal.signal(signal.SIGINT, self._press)

    def _press(self, signum, frame):
        signal.signal(signal.SIGINT, self._previous)
        self._pressed = True
        # A second Ctrl-C raises KeyboardInterrupt wherever the main thread is; where that is a
        # garbage collector's callback, it is raised again where it can stop the run.
        self._second_press.enter_context(kbatch_cli.interrupts_not_swallowed())

    def after_loop(self, run, loop):
        if self._pressed:
            run.save(run.step)
            raise Interrupted(run.step, run.backend.latest_checkpoint)

    def close(self, run):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        self._second_press.close()
