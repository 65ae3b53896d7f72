"""Several JAX processes on 127.0.0.1 forming one job (gloo collectives on host CPU devices), as
the hosts of a TPU pod slice do: the same weights as one process, resume after SIGKILL, a resume on
another number of processes, and a SIGTERM to one process saving on all. The smooth model keeps
float rounding from growing, so that 1e-5 separates a wrong sum from a different order of adding."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from kbatch import launcher

HERE = pathlib.Path(__file__).resolve().parent
OVERRIDES = {"strategy": "auto", "checkpoint_every": 4, "steps_per_loop": 2, "updates_per_call": 2}


def _start(processes, devices, model_dir, overrides=None):
    """`processes` processes of `devices` host devices each, training into `model_dir` as one job
    (each with the variables `tools/launch_local.py --jax_processes` gives it)."""
    (port,) = launcher.free_ports(1)
    command = [sys.executable, str(HERE / "jax_worker.py"), "train", str(model_dir), json.dumps(overrides or OVERRIDES)]
    variables = launcher.jax_environments(processes, devices, port) if processes > 1 else [_one_process(devices)]
    return [
        subprocess.Popen(
            command,
            env={**os.environ, "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}", **own},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for own in variables
    ]


def _one_process(devices):
    (variables,) = launcher.jax_environments(1, devices, 0)
    return {k: v for k, v in variables.items() if not k.startswith(("KERAS_DISTRIBUTION", "JAX_COORDINATOR"))}


def _finish(job, timeout=300):
    """[(exit code, stdout, stderr)] of each process of `job`, killing every one left at the end."""
    try:
        streams = [p.communicate(timeout=timeout) for p in job]
        return [(p.returncode, *out_err) for p, out_err in zip(job, streams)]
    finally:
        _kill(job)


def _kill(job):
    for p in job:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=60)


def _train(processes, devices, model_dir, overrides=None):
    outcomes = _finish(_start(processes, devices, model_dir, overrides))
    for code, out, err in outcomes:
        assert code == 0, err[-3000:]
    return json.loads(outcomes[0][1].strip().splitlines()[-1])


def _weights(model_dir):
    import keras

    import kbatch  # noqa: F401  (registers kbatch's layers for loading)

    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


def _saved_steps(model_dir):
    """The steps of the finished checkpoints in `model_dir`."""
    folder = pathlib.Path(model_dir) / "checkpoints"
    return sorted(int(m.group(1)) for p in folder.glob("ckpt_*") if (m := re.fullmatch(r"ckpt_(\d+)", p.name)))


def _wait_for_checkpoint(job, model_dir, step, deadline_s=240):
    deadline = time.time() + deadline_s
    while step not in _saved_steps(model_dir):
        assert all(p.poll() is None for p in job) and time.time() < deadline, f"no checkpoint {step}"
        time.sleep(0.05)


def _assert_nothing_left(model_dir):
    """No process (a job's, or one they started) still names `model_dir` in its command line."""
    left = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if str(model_dir) in " ".join(p.info["cmdline"] or [])
    ]
    assert not left, f"still running: {left}"


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One uninterrupted run on 2 processes x 2 devices, the reference the others are compared with."""
    model_dir = tmp_path_factory.mktemp("two_processes") / "run"
    _train(2, 2, model_dir)
    return model_dir


def test_two_processes_of_two_devices_end_as_one_process_of_four_and_as_one_device(tmp_path, two_processes):
    results = {(1, 4): _train(1, 4, tmp_path / "1x4"), (1, 1): _train(1, 1, tmp_path / "1x1")}
    assert results[1, 4]["num_replicas"] == 4 and results[1, 1]["num_replicas"] == 1
    two = json.loads((two_processes / "result.json").read_text())
    assert two["steps"] == results[1, 4]["steps"] > 0
    # the evaluation counts each example once: the same mean loss as one process computes
    assert two["final_eval_loss"] == pytest.approx(results[1, 4]["final_eval_loss"], rel=1e-5)
    for processes, devices in results:
        for a, b in zip(_weights(two_processes), _weights(tmp_path / f"{processes}x{devices}")):
            np.testing.assert_allclose(b, a, atol=1e-5, err_msg=f"{processes} process(es) x {devices} device(s)")


def _killed_after(step, model_dir, which):
    """A 2 x 2 job into `model_dir` SIGKILLed (process 1, or every process) once checkpoint
    `step` is finished; the survivors are stopped as the launcher stops them."""
    job = _start(2, 2, model_dir)
    try:
        _wait_for_checkpoint(job, model_dir, step)
        for p in job[1:] if which == "one" else job:
            p.send_signal(signal.SIGKILL)
    finally:
        _kill(job)
    assert not (model_dir / "result.json").exists()
    _assert_nothing_left(model_dir)


@pytest.mark.parametrize("which", ["one", "all"])
def test_a_two_process_run_killed_resumes_bitwise(tmp_path, two_processes, which):
    _killed_after(12, tmp_path / "killed", which)
    assert _train(2, 2, tmp_path / "killed")["resumed_at"] >= 12
    for a, b in zip(_weights(two_processes), _weights(tmp_path / "killed")):
        np.testing.assert_array_equal(a, b)


def test_a_run_checkpointed_on_two_processes_resumes_on_one(tmp_path, two_processes):
    _killed_after(12, tmp_path / "run", "all")
    result = _train(1, 4, tmp_path / "run")
    assert result["resumed_at"] >= 12 and result["steps"] > result["resumed_at"]
    for a, b in zip(_weights(two_processes), _weights(tmp_path / "run")):
        np.testing.assert_allclose(b, a, atol=1e-5)


def test_a_sigterm_to_one_process_saves_on_every_process_and_exits_42(tmp_path, two_processes):
    job = _start(2, 2, tmp_path / "run")
    try:
        _wait_for_checkpoint(job, tmp_path / "run", 4)
        job[1].send_signal(signal.SIGTERM)
        outcomes = _finish(job)
    finally:
        _kill(job)
    assert [code for code, _, _ in outcomes] == [42, 42], [err[-2000:] for _, _, err in outcomes]
    saved = _saved_steps(tmp_path / "run")
    lines = [[line for line in err.splitlines() if line.startswith("stopped: preempted")] for _, _, err in outcomes]
    # both saved the same step: the newest checkpoint (step 4 itself if the signal came before its loop ended)
    assert lines[0] == lines[1] and f"checkpoint of step {saved[-1]} saved" in lines[0][0], (lines, saved)
    _assert_nothing_left(tmp_path / "run")
    assert _train(2, 2, tmp_path / "run")["resumed_at"] == saved[-1]
    for a, b in zip(_weights(two_processes), _weights(tmp_path / "run")):
        np.testing.assert_array_equal(a, b)


def test_a_diverging_run_stops_on_every_process_with_exit_code_3(tmp_path):
    outcomes = _finish(_start(2, 2, tmp_path / "run", {**OVERRIDES, "base_learning_rate": 1e6}))
    assert [code for code, _, _ in outcomes] == [3, 3], [err[-2000:] for _, _, err in outcomes]
    lines = [[line for line in err.splitlines() if line.startswith("stopped:")] for _, _, err in outcomes]
    assert lines[0] == lines[1] and "at step" in lines[0][0], lines  # the same step, the same checkpoint named
