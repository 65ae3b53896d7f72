"""How a run stops short, and the exit code of each stop (`kbatch-train` and the tools).

0    done (or already finished)
2    bad input: a config field, a flag, a damaged file; nothing was written    ValueError
3    diverged: the loss or a weight stopped being finite; the last good
     checkpoint is named, with how to continue from it                        FloatingPointError
42   preempted: SIGTERM or a maintenance notice; a checkpoint was saved, and
     the same command resumes from it (what TensorFlow's handler exits with)  Preempted
130  interrupted: Ctrl-C; a checkpoint was saved, the same command resumes     Interrupted
"""

import kbatch_cli

BAD_INPUT, DIVERGED, PREEMPTED, INTERRUPTED = 2, 3, 42, 130


class Preempted(Exception):
    """Training stopped after saving a checkpoint because the machine is going away."""

    def __init__(self, step, checkpoint):
        super().__init__(
            f"preempted: checkpoint of step {step} saved at {checkpoint}; run the same command again to resume."
        )
        self.step, self.checkpoint = step, checkpoint


class Interrupted(Exception):
    """Training stopped on Ctrl-C (SIGINT) after saving a checkpoint; the same command resumes."""

    def __init__(self, step, checkpoint):
        super().__init__(
            f"interrupted: checkpoint of step {step} saved at {checkpoint}; run the same command again to resume."
        )
        self.step, self.checkpoint = step, checkpoint


CODES = ((ValueError, BAD_INPUT), (FloatingPointError, DIVERGED), (Preempted, PREEMPTED), (Interrupted, INTERRUPTED))


def reporting(program, main):
    """`main` wrapped for `absl.app.run`: a stop above is one line `program: message` on stderr
    and its exit code, not a traceback (`kbatch_cli.reporting`, as the tools report)."""
    return kbatch_cli.reporting(
        program,
        main,
        CODES,
        interrupted=(
            "interrupted at once (a second Ctrl-C); run the same command again to resume from the newest checkpoint."
        ),
    )
