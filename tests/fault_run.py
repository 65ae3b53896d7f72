"""`python tests/fault_run.py FAULT [kbatch-train flags]`: kbatch-train with one fault planted, for
tests/test_faults.py. Each fault kills the process (SIGKILL: no clean-up runs) at one point:

  state_file:N      checkpoint N's data and index are written, its state-file entry is not yet
  model_file        half of model.keras is written
  result_file       half of result.json is written
  hold:N            not a kill: once checkpoint N is recorded, the run waits (still holding its
                    folder) until it is killed
"""

import os
import signal
import sys


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _half_then_die(path, data):
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    _die()


def plant(fault):
    if fault.startswith("state_file:"):
        import tensorflow as tf

        step = fault.partition(":")[2]
        record = tf.train.CheckpointManager._record_state

        def record_state(manager):
            if manager.latest_checkpoint and manager.latest_checkpoint.endswith(f"ckpt-{step}"):
                _die()
            record(manager)

        tf.train.CheckpointManager._record_state = record_state
    elif fault == "model_file":
        import keras

        keras.Model.save = lambda model, path, *args, **kwargs: _half_then_die(path, b"PK\x03\x04" + b"x" * 4096)
    elif fault == "result_file":
        from kbatch.training.run_files import run_dir

        dump = run_dir._dump

        def dump_or_die(payload, path):
            if "result" in os.path.basename(path):
                _half_then_die(path, b'{"final_eval_accuracy": 0.5, "steps": 30}')
            dump(payload, path)

        run_dir._dump = dump_or_die
    elif fault.startswith("hold:"):
        import time

        import tensorflow as tf

        step = fault.partition(":")[2]
        record = tf.train.CheckpointManager._record_state

        def record_state_then_hold(manager):
            record(manager)
            if manager.latest_checkpoint and manager.latest_checkpoint.endswith(f"ckpt-{step}"):
                time.sleep(600)

        tf.train.CheckpointManager._record_state = record_state_then_hold
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    plant(sys.argv[1])
    from kbatch import train

    sys.argv = ["kbatch-train", *sys.argv[2:]]
    train.main()
