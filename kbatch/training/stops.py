"""How a run stops short, and the exit code of each stop (`kbatch-train` and the tools).

  0    done (or already finished)
  2    bad input: a config field, a flag, a damaged file; nothing was written    ValueError
  3    diverged: the loss or a weight stopped being finite; the last good
       checkpoint is named, with how to continue from it                        FloatingPointError
  42   preempted: SIGTERM or a maintenance notice; a checkpoint was saved, and
       the same command resumes from it (what TensorFlow's handler exits with)  Preempted
  130  interrupted: Ctrl-C; a checkpoint was saved, the same command resumes     Interrupted
"""

import signal
import sys
import threading

BAD_INPUT, DIVERGED, PREEMPTED, INTERRUPTED = 2, 3, 42, 130


class Preempted(Exception):
    """Training stopped after saving a checkpoint because the machine is going away."""

    def __init__(self, step, checkpoint):
        super().__init__(f"preempted: checkpoint of step {step} saved at {checkpoint}; run the same "
                         f"command again to resume.")
        self.step, self.checkpoint = step, checkpoint


class Interrupted(Exception):
    """Training stopped on Ctrl-C (SIGINT) after saving a checkpoint; the same command resumes."""

    def __init__(self, step, checkpoint):
        super().__init__(f"interrupted: checkpoint of step {step} saved at {checkpoint}; run the same "
                         "command again to resume.")
        self.step, self.checkpoint = step, checkpoint


CODES = ((ValueError, BAD_INPUT), (FloatingPointError, DIVERGED), (Preempted, PREEMPTED),
         (Interrupted, INTERRUPTED))


def reporting(program, main):
    """`main` wrapped for `absl.app.run`: a stop above is one line `program: message` on stderr
    and its exit code, not a traceback."""

    def run(argv):
        try:
            try:
                return main(argv)
            finally:
                ignore_late_interrupts()
        except tuple(kind for kind, _ in CODES) as stop:
            print(f"{program}: {stop}", file=sys.stderr)
            return next(code for kind, code in CODES if isinstance(stop, kind))
        except KeyboardInterrupt:
            print(f"{program}: interrupted at once (a second Ctrl-C); run the same command again to resume from "
                  "the newest checkpoint.", file=sys.stderr)
            return INTERRUPTED

    return run


def ignore_late_interrupts():
    """Ignore Ctrl-C from here on: the process is leaving, and a KeyboardInterrupt raised in the
    exit path (printing the stop, absl's exit, Python's shutdown) is not caught by anything, so
    Python would die of the signal (exit -2) instead of the stop's line and code."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
