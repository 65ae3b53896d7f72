"""Faults planted at chosen points (tests/fault_run.py kills the run there with SIGKILL), damaged
files, Ctrl-C and divergence: the same command then continues exactly, or stops with one line,
and every file a user or an earlier run made is intact."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kbatch  # noqa: F401  (registers the layers for load_model)
from stop_run import signal_at_checkpoint

HERE = pathlib.Path(__file__).resolve().parent
# Two epochs of mnist1d/original at batch 256: 32 updates, a checkpoint every 4.
FLAGS = ["--config.dataset=mnist1d/original", "--config.batch_size=256", "--config.base_batch_size=256",
         "--config.num_epochs=2", "--config.warmup_epochs=0.5", "--config.steps_per_loop=2",
         "--config.checkpoint_every=4", "--config.strategy=one_device", "--config.deterministic=True",
         "--config.norm=group"]


def _train(model_dir, *extra, fault=None, timeout=300):
    entry = [str(HERE / "fault_run.py"), fault] if fault else ["-m", "kbatch.train"]
    command = [sys.executable, *entry, *FLAGS, *extra, f"--config.model_dir={model_dir}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


def _same_as(reference, model_dir):
    for a, b in zip(reference, _weights(model_dir)):
        np.testing.assert_array_equal(a, b)


def _stop_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("kbatch-train:")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert _train(model_dir).returncode == 0
    return _weights(model_dir), json.loads((model_dir / "result.json").read_text())


@pytest.mark.parametrize("fault", ["state_file:8", "model_file", "result_file"])
def test_a_kill_while_a_file_is_written_then_the_same_command_ends_exactly(tmp_path, uninterrupted, fault):
    model_dir = tmp_path / "run"
    killed = _train(model_dir, fault=fault)
    assert killed.returncode == -signal.SIGKILL
    config = (model_dir / "config.json").read_text()
    if fault == "state_file:8":  # the state file still names checkpoint 4 as the newest
        assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-4")
    else:  # the half-written file is beside the final name, never in its place
        assert not (model_dir / ("model.keras" if fault == "model_file" else "result.json")).exists()
    again = _train(model_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    _same_as(uninterrupted[0], model_dir)
    result = json.loads((model_dir / "result.json").read_text())
    assert result["final_eval_accuracy"] == uninterrupted[1]["final_eval_accuracy"]
    assert (model_dir / "config.json").read_text() == config


def test_a_truncated_checkpoint_is_skipped_saying_so_and_the_run_ends_exactly(tmp_path, uninterrupted):
    model_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "kbatch.train", *FLAGS, f"--config.model_dir={model_dir}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    signal_at_checkpoint(process, str(model_dir), 12, signal.SIGKILL)
    newest = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    data = next(p for p in (model_dir / "checkpoints").iterdir() if p.name.startswith(os.path.basename(newest) + ".data"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    again = _train(model_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"checkpoint {newest} is damaged" in again.stdout and "resuming at step 8" in again.stdout
    assert "deprecat" not in again.stderr.lower()  # kbatch's own update_checkpoint_state call warned (#31)
    _same_as(uninterrupted[0], model_dir)


def test_ctrl_c_saves_exits_130_in_one_line_and_the_same_command_ends_exactly(tmp_path, uninterrupted):
    model_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "kbatch.train", *FLAGS, f"--config.model_dir={model_dir}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = signal_at_checkpoint(process, str(model_dir), 4, signal.SIGINT, delay=0.2)
    assert process.returncode == 130
    assert len(_stop_lines(stderr)) == 1 and "interrupted: checkpoint of step" in stderr and "Traceback" not in stderr
    again = _train(model_dir)
    assert again.returncode == 0 and "resuming at step" in again.stdout
    _same_as(uninterrupted[0], model_dir)


def test_divergence_keeps_only_finite_checkpoints_and_resumes_at_a_lower_rate(tmp_path):
    """The issue's case: at LR 1e6 a finite loss can come with non-finite weights; no checkpoint
    may hold them, and the run goes on from the last good one at a lower rate."""
    model_dir = tmp_path / "run"
    recipe = ["--config.checkpoint_every=5", "--config.norm=batch", "--config.warmup_epochs=1.0"]
    diverged = _train(model_dir, *recipe, "--config.base_learning_rate=1e6")
    assert diverged.returncode == 3
    (line,) = _stop_lines(diverged.stderr)
    assert "Traceback" not in diverged.stderr and "--config.base_learning_rate=<lower>" in line
    state = tf.train.get_checkpoint_state(str(model_dir / "checkpoints"))
    kept = list(state.all_model_checkpoint_paths) if state else []
    for path in kept:  # every checkpoint kept is finite
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            value = np.asarray(reader.get_tensor(name))
            if np.issubdtype(value.dtype, np.floating):
                assert np.isfinite(value).all(), (path, name)
    assert (os.path.basename(kept[-1]) if kept else "(none yet)") in line
    again = _train(model_dir, *recipe, "--config.base_learning_rate=0.05")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "base_learning_rate 1000000.0 -> 0.05" in again.stdout or not kept
    assert json.loads((model_dir / "config.json").read_text())["base_learning_rate"] == 0.05


def test_a_finished_run_is_left_as_it_is_by_the_same_command_from_another_path(tmp_path, uninterrupted):
    model_dir = tmp_path / "run"
    assert _train(model_dir).returncode == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    moved = tmp_path / "moved"
    shutil.move(model_dir, moved)
    for path in (f"{moved}/", os.path.relpath(moved)):  # a trailing slash; a relative path
        again = _train(path)
        assert again.returncode == 0 and "this run is finished" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in moved.iterdir()} == stamps


def test_the_default_model_dir_is_the_same_for_the_same_command(tmp_path):
    command = [sys.executable, "-m", "kbatch.train", *FLAGS, "--config.num_epochs=1"]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0
    (folder,) = (tmp_path / "runs").iterdir()
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "this run is finished" in again.stdout and list((tmp_path / "runs").iterdir()) == [folder]
    other = subprocess.run([*command, "--config.batch_size=128"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 0 and len(list((tmp_path / "runs").iterdir())) == 2


@pytest.mark.parametrize("damage", ["config.json", "history.json"])
def test_an_unreadable_run_file_is_named_in_one_line(tmp_path, damage):
    model_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "kbatch.train", *FLAGS, f"--config.model_dir={model_dir}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    signal_at_checkpoint(process, str(model_dir), 4, signal.SIGKILL)
    (model_dir / damage).write_text("{ not json")
    again = _train(model_dir)
    assert again.returncode == 2
    (line,) = _stop_lines(again.stderr)
    assert f"{model_dir / damage} is not readable" in line
    assert (model_dir / damage).read_text() == "{ not json"


def test_a_model_dir_under_a_file_is_one_line_before_anything_is_written(tmp_path):
    (tmp_path / "file").write_text("mine")
    run = _train(tmp_path / "file" / "run")
    assert run.returncode == 2
    (line,) = _stop_lines(run.stderr)
    assert "cannot be made" in line and (tmp_path / "file").read_text() == "mine"


def test_when_every_checkpoint_is_damaged_the_run_stops_in_one_line_leaving_them(tmp_path):
    model_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "kbatch.train", *FLAGS, f"--config.model_dir={model_dir}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    signal_at_checkpoint(process, str(model_dir), 8, signal.SIGKILL)
    for data in (model_dir / "checkpoints").glob("ckpt-*.data-*"):
        data.write_bytes(b"")
    files = {p.name: p.read_bytes() for p in (model_dir / "checkpoints").iterdir()}
    again = _train(model_dir)
    assert again.returncode == 2
    (line,) = _stop_lines(again.stderr)
    assert "none of its checkpoints is intact; move the folder away" in line
    assert {p.name: p.read_bytes() for p in (model_dir / "checkpoints").iterdir()} == files
