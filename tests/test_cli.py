"""`kbatch-train` as a user meets it: quiet by default (kbatch's lines alone, on both backends, at
`--check` and at SIGTERM), absl's `--verbosity` for the rest, and the README's cpu:4 example whose
last evaluation batch leaves a replica empty."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

from stop_run import signal_at_checkpoint

# absl's Python INFO lines, `I1201 13:55:01.123456 140087 dataset_info.py:12] ...` (C++ ones are `I0000 00:00:...`).
ABSL_INFO = re.compile(r"^(\[worker \d+\] )?I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.py:\d+\]")
# kbatch's own lines (a launcher puts `[chief 0] ` before them): its messages, the epoch header,
# the progress bar and the evaluation line.
KBATCH_LINE = re.compile(
    r"^(\[\w+ \d+\] )?"
    r"(kbatch(-train)?: |epoch \d+/\d+(, global batch \d+)?$|\d+/\d+ - |  step \d+: )"
)
# What it printed besides (#31): TensorFlow's start-up lines twice, its failed GPU search, tf.data
# and XLA warnings, deprecation warnings at SIGTERM, a retracing warning.
NOISE = re.compile(
    r"absl::InitializeLog|port\.cc|cudart_stub|cuInit|dataset\.cc|deprecat|Ignoring Assert|retracing", re.IGNORECASE
)
SMALL = ["--config.dataset=mnist1d/original", "--config.num_epochs=1", "--config.warmup_epochs=0.25"]


def _users_env(**variables):
    """The environment a user runs in: without conftest's TF_CPP_MIN_LOG_LEVEL."""
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, **variables}


def _not_kbatchs(output):
    """The lines of `output` that are not kbatch's own."""
    return [line for line in output.splitlines() if line.strip() and not KBATCH_LINE.match(line)]


def _train(tmp_path, *flags):
    command = [
        sys.executable,
        "-m",
        "kbatch.train",
        "--config.dataset=mnist1d/original",
        "--config.num_epochs=1",
        "--config.warmup_epochs=0.25",
        "--config.batch_size=64",
        "--config.strategy=cpu:4",
        f"--config.model_dir={tmp_path / 'run'}",
        *flags,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=_users_env())


def test_the_default_output_is_kbatchs_lines_and_the_verbosity_flag_brings_the_rest_back(tmp_path):
    run = _train(tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert not [line for line in lines if ABSL_INFO.match(line)]
    assert _not_kbatchs(run.stdout + run.stderr) == []
    # It ran to the end, though the last of its evaluation batches (40 of the 1,000 test
    # examples) leaves one of the 4 replicas nothing (that crashed: tests/test_runner.py).
    assert json.loads((tmp_path / "run" / "result.json").read_text())["num_replicas"] == 4
    # absl's INFO lines come back at --verbosity=0 (one device, the lines are the same).
    loud = _train(
        tmp_path,
        "--verbosity=0",
        "--config.strategy=one_device",
        "--config.batch_size=256",
        "--config.model_dir=" + str(tmp_path / "loud"),
    )
    assert loud.returncode == 0
    assert len([line for line in loud.stderr.splitlines() if ABSL_INFO.match(line)]) >= 10


def test_the_two_worker_readme_run_prints_kbatchs_lines_and_ends_cleanly(tmp_path):
    """It printed 386 lines, 220 of them `Collective all_reduce tensors` INFO, and ended with
    `Exception in thread PeerTerminationWatcher ... Socket closed` after a successful run."""
    launcher = pathlib.Path(__file__).resolve().parents[1] / "tools" / "launch_local.py"
    run = subprocess.run(
        [
            sys.executable,
            str(launcher),
            "--workers=2",
            "--timeout_s=300",
            "--",
            "kbatch-train",
            "--config.strategy=multiworker",
            "--config.dataset=mnist1d/original",
            "--config.num_epochs=1",
            "--config.warmup_epochs=0.25",
            f"--config.model_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env=_users_env(),
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-2000:]
    assert "kbatch: done" in output and "Exception in thread" not in output and "Traceback" not in output
    assert "Collective all_reduce" not in output and not [line for line in output.splitlines() if ABSL_INFO.match(line)]
    assert len(output.splitlines()) <= 40


def _kbatch_train(*flags, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kbatch.train", *SMALL, *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env=env or _users_env(),
    )


def test_a_default_run_prints_kbatchs_lines_alone(tmp_path):
    """It printed TensorFlow's start-up lines twice, `failed call to cuInit` and a tf.data warning."""
    run = _kbatch_train(f"--config.model_dir={tmp_path / 'run'}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert _not_kbatchs(run.stdout + run.stderr) == [] and "kbatch: done" in run.stdout


def test_check_prints_its_one_line_alone(tmp_path):
    run = _kbatch_train("--check", f"--config.model_dir={tmp_path / 'run'}")
    assert run.returncode == 0 and (run.stdout + run.stderr).splitlines() == [run.stdout.strip()], run.stderr
    assert run.stdout.startswith("kbatch-train: the config is valid") and not (tmp_path / "run").exists()


def test_accumulation_with_the_noise_scale_prints_kbatchs_lines_alone(tmp_path):
    """It printed XLA's `assert_op.cc ... Ignoring Assert operator`."""
    run = _kbatch_train(
        "--config.accumulation_steps=2", "--config.noise_scale_every=4", f"--config.model_dir={tmp_path / 'run'}"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert _not_kbatchs(run.stdout + run.stderr) == []


def test_the_jax_backend_prints_kbatchs_lines_alone(tmp_path):
    """It imported kbatch's TensorFlow parts, and TensorFlow printed what it prints on the default run."""
    env = _users_env(KERAS_BACKEND="jax")
    run = _kbatch_train("--config.backend=jax", f"--config.model_dir={tmp_path / 'run'}", env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert _not_kbatchs(run.stdout + run.stderr) == [] and "kbatch: done" in run.stdout


def test_sigterm_prints_the_preemption_line_alone(tmp_path):
    """It printed TensorFlow's 6-line deprecation warning twice (its handler's `total_run_calls`)."""
    model_dir = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kbatch.train",
            *SMALL,
            "--config.num_epochs=20",
            "--config.checkpoint_every=8",
            f"--config.model_dir={model_dir}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_users_env(),
    )
    out, err = signal_at_checkpoint(process, str(model_dir), 16, signal.SIGTERM)
    assert process.returncode == 42, err[-2000:]
    assert _not_kbatchs(out + err) == [] and "kbatch-train: preempted" in err


def test_the_parameter_server_readme_run_prints_kbatchs_lines(tmp_path):
    """It printed 42 lines for kbatch's 11: each process's start-up lines and failed GPU search,
    a server's `local_rendezvous.cc` warning. One TensorFlow error line is left (docs/reliability.md)."""
    launcher = pathlib.Path(__file__).resolve().parents[1] / "tools" / "launch_local.py"
    run = subprocess.run(
        [
            sys.executable,
            str(launcher),
            "--workers=2",
            "--ps=1",
            "--timeout_s=300",
            "--",
            "kbatch-train",
            "--config.strategy=parameter_server",
            *SMALL,
            f"--config.model_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env=_users_env(),
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-2000:]
    assert "[chief 0] kbatch: done" in output and not [line for line in output.splitlines() if NOISE.search(line)]
    assert all("function_handle_cache.cc" in line for line in _not_kbatchs(output)), _not_kbatchs(output)


def test_a_config_for_the_other_backend_is_one_line_before_anything_is_written(tmp_path):
    """`KERAS_BACKEND=jax kbatch-train` (config.backend tensorflow) said "`Checkpoint` was expecting
    model to be a trackable object ... please open an issue"; `--check` passed it."""
    env = _users_env(KERAS_BACKEND="jax")
    for flags in ([], ["--check"]):
        run = _kbatch_train(f"--config.model_dir={tmp_path / 'run'}", *flags, env=env)
        assert run.returncode == 2 and run.stdout == ""
        assert run.stderr.splitlines() == [
            "kbatch-train: config.backend='tensorflow' but Keras runs on jax (KERAS_BACKEND=jax): "
            "set --config.backend=jax (or auto) or KERAS_BACKEND=tensorflow"
        ]
        assert not (tmp_path / "run").exists()
