"""`kbatch-train` as a user meets it: quiet by default, absl's `--verbosity` for the rest, and the
README's cpu:4 example whose last evaluation batch leaves a replica empty."""

import json
import pathlib
import re
import subprocess
import sys

# What TensorFlow 2.21 prints in C++ while it is imported, before any setting is read.
IMPORT_LINES = re.compile(r"^(WARNING: All log messages before absl|[IWE]0000 .*(port|cudart_stub|cpu_feature_guard|"
                          r"cuda_platform)\.cc|To enable the following instructions)")
# absl's Python INFO lines, `I1201 13:55:01.123456 140087 dataset_info.py:12] ...` (C++ ones are `I0000 00:00:...`).
ABSL_INFO = re.compile(r"^(\[worker \d+\] )?I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.py:\d+\]")


def _train(tmp_path, *flags):
    command = [sys.executable, "-m", "kbatch.train", "--config.dataset=mnist1d/original", "--config.num_epochs=1",
               "--config.warmup_epochs=0.25", "--config.batch_size=64", "--config.strategy=cpu:4",
               f"--config.model_dir={tmp_path / 'run'}", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_the_default_output_is_kbatchs_lines_and_the_verbosity_flag_brings_the_rest_back(tmp_path):
    run = _train(tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert not [line for line in lines if ABSL_INFO.match(line)]
    others = [line for line in lines if not IMPORT_LINES.match(line) and not line.startswith(("kbatch:", "epoch ", "  step "))
              and not re.match(r"^\d+/\d+ ", line)]  # the progress bar
    assert len(others) <= 2, others  # TensorFlow warnings, e.g. a generator dataset not optimized
    # It ran to the end, though the last of its evaluation batches (40 of the 1,000 test
    # examples) leaves one of the 4 replicas nothing (that crashed: tests/test_runner.py).
    assert json.loads((tmp_path / "run" / "result.json").read_text())["num_replicas"] == 4
    loud = _train(tmp_path, "--verbosity=0", "--config.model_dir=" + str(tmp_path / "loud"))
    assert loud.returncode == 0
    assert len([line for line in loud.stderr.splitlines() if ABSL_INFO.match(line)]) >= 10


def test_the_two_worker_readme_run_prints_kbatchs_lines_and_ends_cleanly(tmp_path):
    """It printed 386 lines, 220 of them `Collective all_reduce tensors` INFO, and ended with
    `Exception in thread PeerTerminationWatcher ... Socket closed` after a successful run."""
    launcher = pathlib.Path(__file__).resolve().parents[1] / "tools" / "launch_local.py"
    run = subprocess.run([sys.executable, str(launcher), "--workers=2", "--timeout_s=300", "--", "kbatch-train",
                          "--config.strategy=multiworker", "--config.dataset=mnist1d/original", "--config.num_epochs=1",
                          "--config.warmup_epochs=0.25", f"--config.model_dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, timeout=400)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-2000:]
    assert "kbatch: done" in output and "Exception in thread" not in output and "Traceback" not in output
    assert "Collective all_reduce" not in output and not [l for l in output.splitlines() if ABSL_INFO.match(l)]
    assert len(output.splitlines()) <= 40
