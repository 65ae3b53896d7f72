"""A user's source named on the command line (`--config.dataset=python:MODULE:FUNCTION`):
`kbatch-train` imports it from the current folder and measures the noise scale on it, a 2-point
sweep and a short LR search train it in their worker processes, and a module, function or return
value that is wrong is one line, exit 2, before anything is written."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import user_sources
from run_tool import REPO, run_tool

SOURCE = "python:tests.user_sources:signals"  # found from the repository root, where the tools run
SMALL = [
    "--config.model=mnist1d_cnn",
    "--config.norm=layer",
    "--config.num_epochs=1",
    "--config.warmup_epochs=0",
    "--config.strategy=one_device",
    "--config.steps_per_loop=2",
    "--config.base_batch_size=32",
]
KBATCH_TRAIN = os.path.join(os.path.dirname(sys.executable), "kbatch-train")


def _kbatch_train(folder, *flags):
    """`kbatch-train` run from `folder` (the console script: the folder is not on its path by itself)."""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([KBATCH_TRAIN, *flags], capture_output=True, text=True, env=env, cwd=folder, timeout=600)


def test_kbatch_train_measures_the_noise_scale_on_a_source_in_the_current_folder(tmp_path):
    shutil.copy(user_sources.__file__, tmp_path / "my_data.py")
    run = _kbatch_train(
        tmp_path,
        "--config.dataset=python:my_data:signals",
        *SMALL,
        "--config.batch_size=32",
        "--config.noise_scale_every=2",
        "--config.model_dir=run",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"] == "python:my_data:signals"
    assert result["steps"] == user_sources.NUM_TRAIN // 32 and result["examples_seen"] == user_sources.NUM_TRAIN
    points = result["noise_scale"]
    assert [p["step"] for p in points] == list(range(2, result["steps"] + 1, 2))
    for point in points:
        assert point["b_simple"] > 0 and point["batch_over_b_simple"] == pytest.approx(32 / point["b_simple"])


def test_a_two_point_sweep_trains_a_users_source_in_its_workers(tmp_path):
    flags = [
        f"--sweep_dir={tmp_path / 's'}",
        f"--config.dataset={SOURCE}",
        *SMALL,
        "--grid=batch_size=32,64",
        "--processes=2",
        "--targets=0.3",
    ]
    run = run_tool("sweep.py", flags, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "s" / "report.csv") as f:
        rows = {int(row["batch_size"]): row for row in csv.DictReader(f)}
    assert set(rows) == {32, 64}
    for batch, row in rows.items():
        assert row["state"] == "finished" and row["dataset"] == SOURCE
        assert int(row["steps"]) == user_sources.NUM_TRAIN // batch


def test_a_short_lr_search_trains_a_users_source(tmp_path):
    flags = [
        f"--sweep_dir={tmp_path / 's'}",
        f"--config.dataset={SOURCE}",
        *SMALL,
        "--batch_sizes=32",
        "--lrs=momentum:0.05,0.2",
        "--targets=0.3",
        "--processes=2",
    ]
    run = run_tool("lr_search.py", flags, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    text = (tmp_path / "s" / "lr_search.md").read_text()
    assert "| optimizer=momentum | 32 |" in text
    with open(tmp_path / "s" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(float(row["base_learning_rate"]) for row in rows) == [0.05, 0.2]
    assert all(row["state"] == "finished" and row["dataset"] == SOURCE for row in rows)


@pytest.mark.parametrize(
    "dataset, message",
    [
        ("python:no_such_module:signals", "no module 'no_such_module' in"),
        ("python:tests.user_sources:missing", "module 'tests.user_sources' has no function 'missing'"),
        ("python:tests.user_sources:NOT_A_FUNCTION", "has no function 'NOT_A_FUNCTION'"),
        ("python:tests.user_sources:arrays_not_a_source", "arrays_not_a_source() returned a tuple, not a kbatch.data"),
        ("python:tests.user_sources", "not MODULE:FUNCTION"),
    ],
)
def test_a_wrong_module_function_or_source_is_one_line_before_anything_is_written(tmp_path, dataset, message):
    run = _kbatch_train(REPO, f"--config.dataset={dataset}", *SMALL, f"--config.model_dir={tmp_path / 'run'}")
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr[-3000:]
    assert lines[0].startswith(f"kbatch-train: config.dataset={dataset!r}: ") and message in lines[0]
    assert "python:MODULE:FUNCTION" in lines[0] and not (tmp_path / "run").exists()
