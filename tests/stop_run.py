"""Stop a training process at a chosen checkpoint: the step the kill, preemption and multi-worker
resume tests share."""

import os
import time


def signal_at_checkpoint(process, model_dir, step, sig, *, delay=0.0, timeout_s=240):
    """Send `sig` to `process` `delay` seconds after checkpoint `step` appears in `model_dir`;
    return its (stdout, stderr) once it has exited. Fails if the process ends before that
    checkpoint or the checkpoint does not come within `timeout_s`; the process never outlives it."""
    marker = os.path.join(model_dir, "checkpoints", f"ckpt-{step}.index")
    try:
        deadline = time.time() + timeout_s
        while not os.path.exists(marker):
            assert process.poll() is None, f"the run ended before checkpoint {step}"
            assert time.time() < deadline, f"no checkpoint {step} within {timeout_s} s"
            time.sleep(0.05)
        time.sleep(delay)
        process.send_signal(sig)
        return process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait(timeout=30)
