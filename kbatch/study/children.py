"""Child processes that do not outlive the process that started them (Linux).

A parent that is killed with SIGKILL runs no cleanup, so its children would run on, adopted by
init. `dying_with_parent(sig)` is a `preexec_fn` for `subprocess.Popen` that asks the kernel to
send the child `sig` when its parent dies (`prctl(PR_SET_PDEATHSIG)`; it survives the exec). Only
the child itself is covered, not processes it starts in turn, and the parent is the thread that
called Popen: call it from the main thread. Elsewhere than Linux there is no such call and the
children outlive a killed parent.

Imports nothing of kbatch: `tools/launch_local.py` loads it without Keras and TensorFlow.
"""

import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def dying_with_parent(sig):
    """A `preexec_fn` that makes the child get `sig` when this process dies (None off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    parent = os.getpid()

    def preexec():
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: the signal would never come
            os.kill(os.getpid(), sig)

    return preexec
