"""Stop a training process at a chosen checkpoint: the step the kill, preemption and multi-worker
resume tests share."""

import os
import time

import tensorflow as tf


def _recorded(checkpoint_dir, step):
    """Whether checkpoint `step` is complete: listed in the `checkpoint` state file, which
    CheckpointManager rewrites (atomically) only after the data and index files are written.
    The index file alone appears earlier, and a run killed then rightly resumes from the one before."""
    state = tf.train.get_checkpoint_state(checkpoint_dir) if os.path.exists(checkpoint_dir) else None
    return state is not None and any(
        os.path.basename(path) == f"ckpt-{step}" for path in state.all_model_checkpoint_paths
    )


def signal_at_checkpoint(process, model_dir, step, sig, *, delay=0.0, timeout_s=240):
    """Send `sig` to `process` `delay` seconds after checkpoint `step` is recorded in `model_dir`;
    return its (stdout, stderr) once it has exited. Fails if the process ends before that
    checkpoint or the checkpoint does not come within `timeout_s`; the process never outlives it."""
    checkpoint_dir = os.path.join(model_dir, "checkpoints")
    try:
        deadline = time.time() + timeout_s
        while not _recorded(checkpoint_dir, step):
            assert process.poll() is None, f"the run ended before checkpoint {step}"
            assert time.time() < deadline, f"no checkpoint {step} within {timeout_s} s"
            time.sleep(0.05)
        time.sleep(delay)
        process.send_signal(sig)
        return process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait(timeout=30)
