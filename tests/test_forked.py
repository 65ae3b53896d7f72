"""tests/forked.py: a forked kbatch-train is the command run as a subprocess, in its own session,
killed with its server, and the server dies with the test process."""

import json
import os
import signal
import subprocess
import sys
import time

import forked
import keras
import numpy as np
import psutil
import pytest

# One epoch of mnist1d/original at batch 256 on 2 logical CPUs: 16 updates, a checkpoint every 4.
FLAGS = [
    "--config.dataset=mnist1d/original",
    "--config.batch_size=256",
    "--config.num_epochs=1",
    "--config.warmup_epochs=0.5",
    "--config.checkpoint_every=4",
    "--config.strategy=cpu:2",
    "--config.deterministic=True",
    "--config.norm=group",
]


def _until(condition, timeout_s=120):
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_forked_run_on_two_logical_cpus_equals_the_command_run_as_a_subprocess(tmp_path):
    """TensorFlow imported before the fork: the child still makes its cpu:2 devices and a MirroredStrategy."""
    runs = {}
    for how in ("forked", "subprocess"):
        model_dir = tmp_path / how
        command = ["kbatch-train", *FLAGS, f"--config.model_dir={model_dir}"]
        if how == "forked":
            runs[how] = forked.run(command, timeout=300)
        else:
            runs[how] = subprocess.run(
                [sys.executable, "-m", "kbatch.train", *command[1:]], capture_output=True, text=True, timeout=300
            )
        assert runs[how].returncode == 0, runs[how].stderr[-2000:]
        assert "2 replica(s)" in runs[how].stdout
    results = [json.loads((tmp_path / how / "result.json").read_text()) for how in runs]
    assert results[0]["final_eval_accuracy"] == results[1]["final_eval_accuracy"]
    models = [keras.models.load_model(tmp_path / how / "model.keras") for how in runs]
    for a, b in zip(*(model.get_weights() for model in models)):
        np.testing.assert_array_equal(a, b)


def test_a_bad_flag_is_the_same_line_and_exit_code_as_the_command(tmp_path):
    command = ["kbatch-train", "--config.batch_sise=8"]
    mine = forked.run(command, cwd=tmp_path, timeout=120)
    real = subprocess.run([sys.executable, "-m", "kbatch.train", *command[1:]], capture_output=True, text=True)
    assert mine.returncode == real.returncode == 2
    assert mine.stderr == real.stderr and "batch_size" in mine.stderr
    assert os.listdir(tmp_path) == []


def test_the_child_is_its_own_session_and_a_signal_is_its_negative_code(tmp_path):
    model_dir = tmp_path / "run"
    process = forked.Popen(
        ["kbatch-train", *FLAGS, f"--config.model_dir={model_dir}"], fault="hold:4", stdout=subprocess.DEVNULL
    )
    try:
        _until(lambda: (model_dir / "checkpoints" / "ckpt-4.index").exists())
        assert os.getsid(process.pid) == process.pid != os.getsid(0)
        assert process.poll() is None
        os.killpg(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL == process.returncode
    finally:
        process.kill()
    for pid in forked.server_pids():  # the server forked the child while it held its one thread
        assert len(os.listdir(f"/proc/{pid}/task")) == 1


def test_an_environment_variable_read_at_import_is_refused():
    with pytest.raises(ValueError, match="KERAS_BACKEND"):
        forked.Popen(["kbatch-train"], env={**os.environ, "KERAS_BACKEND": "jax"})


HOLDER = """
import sys, forked
process = forked.Popen(["kbatch-train", *sys.argv[2:]], fault="hold:4", stdout=forked.subprocess.DEVNULL)
print(process.pid, *forked.server_pids(), flush=True)
process.wait()
"""


def test_nothing_outlives_the_test_process_killed(tmp_path):
    """The test process SIGKILLed: its server ends, and with it the run it forked."""
    model_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "--", *FLAGS, f"--config.model_dir={model_dir}"],
        cwd=os.path.dirname(forked.__file__),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pids = [int(pid) for pid in holder.stdout.readline().split()]
        assert len(pids) == 3
        _until(lambda: (model_dir / "checkpoints" / "ckpt-4.index").exists())
        assert all(_alive(pid) for pid in pids)
        holder.kill()
        holder.wait(timeout=30)
        _until(lambda: not any(_alive(pid) for pid in pids), 30)
    finally:
        holder.kill()


SCRIPT = "import signal\nprint(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
STARTER = """
import sys, forked
print(forked.run([sys.argv[1]]).stdout.strip(), flush=True)
"""


def test_a_script_runs_as_python_runs_it_and_ctrl_c_reaches_it_where_its_server_ignored_it(tmp_path):
    """A script forked as `python script.py` runs it, with Python's Ctrl-C handler even where the
    server started with SIGINT ignored (a sweep sent SIGINT ran on to its end, in CI)."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    started = subprocess.run(
        [sys.executable, "-c", STARTER, str(script)],
        cwd=os.path.dirname(forked.__file__),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert started.stdout.strip() == "True", started.stderr[-2000:]
