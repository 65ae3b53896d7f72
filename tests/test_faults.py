"""Faults planted at chosen points (tests/fault_run.py kills the run there with SIGKILL), damaged
files, Ctrl-C and divergence: the same command then continues exactly, or stops with one line,
and every file a user or an earlier run made is intact. The runs are kbatch-train forked from a
server that imported TensorFlow once (tests/forked.py)."""

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import forked
import keras
import numpy as np
import pytest
import tensorflow as tf
from stop_run import signal_at_checkpoint

import kbatch  # registers the layers for load_model
import kbatch.configs.mnist1d_cnn
from kbatch.training.run_files import run_lock

# Two epochs of mnist1d/original at batch 256: 32 updates, a checkpoint every 4.
FLAGS = [
    "--config.dataset=mnist1d/original",
    "--config.batch_size=256",
    "--config.base_batch_size=256",
    "--config.num_epochs=2",
    "--config.warmup_epochs=0.5",
    "--config.steps_per_loop=2",
    "--config.checkpoint_every=4",
    "--config.strategy=one_device",
    "--config.deterministic=True",
    "--config.norm=group",
]


def _train(model_dir, *extra, fault=None, timeout=300):
    """kbatch-train FLAGS, forked (tests/forked.py), with tests/fault_run.py's `fault` planted."""
    return forked.run([forked.PROGRAM, *FLAGS, *extra, f"--config.model_dir={model_dir}"], fault=fault, timeout=timeout)


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


def _same_as(reference, model_dir):
    for a, b in zip(reference, _weights(model_dir)):
        np.testing.assert_array_equal(a, b)


def _stop_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("kbatch-train:")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(weights, result.json, folder) of FLAGS run to its end."""
    model_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert _train(model_dir).returncode == 0
    return _weights(model_dir), json.loads((model_dir / "result.json").read_text()), model_dir


@pytest.fixture(scope="module")
def killed_at(tmp_path_factory):
    """killed_at(step): the folder of a run of FLAGS killed once checkpoint `step` is recorded,
    made once for the module; tests damage a copy of it (`_copy`)."""
    folders = {}

    def folder(step):
        if step not in folders:
            folders[step] = tmp_path_factory.mktemp(f"killed_at_{step}") / "run"
            _killed_at(folders[step], step)
        return folders[step]

    return folder


def _copy(run, tmp_path):
    """A copy of the run folder `run` in `tmp_path`, for one test to damage. It is the same run:
    a folder reached by another path resumes (`model_dir` is not part of what a run compares)."""
    return pathlib.Path(shutil.copytree(run, tmp_path / "run"))


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
    process = forked.Popen(
        [forked.PROGRAM, *FLAGS, f"--config.model_dir={model_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    signal_at_checkpoint(process, str(model_dir), 12, signal.SIGKILL)
    newest = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    data = next(
        p for p in (model_dir / "checkpoints").iterdir() if p.name.startswith(os.path.basename(newest) + ".data")
    )
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    again = _train(model_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"checkpoint {newest} is damaged" in again.stdout and "resuming at step 8" in again.stdout
    assert "deprecat" not in again.stderr.lower()  # kbatch's own update_checkpoint_state call warned (#31)
    _same_as(uninterrupted[0], model_dir)


def test_ctrl_c_saves_exits_130_in_one_line_and_the_same_command_ends_exactly(tmp_path, uninterrupted):
    model_dir = tmp_path / "run"
    process = forked.Popen(
        [forked.PROGRAM, *FLAGS, f"--config.model_dir={model_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
    model_dir = _copy(uninterrupted[2], tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    moved = tmp_path / "moved"
    shutil.move(model_dir, moved)
    for path in (f"{moved}/", os.path.relpath(moved)):  # a trailing slash; a relative path
        again = _train(path)
        assert again.returncode == 0 and "this run is finished" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in moved.iterdir()} == stamps


def test_the_default_model_dir_is_the_same_for_the_same_command(tmp_path):
    command = [forked.PROGRAM, *FLAGS, "--config.num_epochs=1"]
    first = forked.run(command, cwd=tmp_path, timeout=300)
    assert first.returncode == 0
    (folder,) = (tmp_path / "runs").iterdir()
    again = forked.run(command, cwd=tmp_path, timeout=300)
    assert "this run is finished" in again.stdout and list((tmp_path / "runs").iterdir()) == [folder]
    other = forked.run([*command, "--config.batch_size=128"], cwd=tmp_path, timeout=300)
    assert other.returncode == 0 and len(list((tmp_path / "runs").iterdir())) == 2


def _killed_at(model_dir, step):
    """A run of FLAGS killed (SIGKILL) once checkpoint `step` is recorded."""
    process = forked.Popen(
        [forked.PROGRAM, *FLAGS, f"--config.model_dir={model_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    signal_at_checkpoint(process, str(model_dir), step, signal.SIGKILL)


@pytest.mark.parametrize(
    "damage, content, says",
    [
        ("config.json", "{ not json", "is not readable"),
        ("history.json", "{ not json", "is not readable"),
        ("config.json", "[]", "holds a JSON list, not the dict kbatch writes"),
        ("config.json", "{}", "is not a kbatch run's config"),
        ("history.json", '{"evals": 5}', "is not the evaluation history kbatch writes"),
        ("history.json", "[1, 2]", "holds a JSON list"),
    ],
)
def test_an_unreadable_run_file_is_named_in_one_line(tmp_path, killed_at, damage, content, says):
    model_dir = _copy(killed_at(4), tmp_path)
    (model_dir / damage).write_text(content)
    again = _train(model_dir)
    assert again.returncode == 2
    (line,) = _stop_lines(again.stderr)
    assert f"{model_dir / damage}" in line and says in line and "Traceback" not in again.stderr
    assert (model_dir / damage).read_text() == content


def test_a_checkpointed_run_without_its_history_is_refused_not_resumed_without_it(tmp_path, killed_at):
    model_dir = _copy(killed_at(12), tmp_path)
    (model_dir / "history.json").unlink()
    checkpoints = sorted(p.name for p in (model_dir / "checkpoints").glob("*.index"))
    again = _train(model_dir)
    assert again.returncode == 2
    (line,) = _stop_lines(again.stderr)
    assert "history.json is missing, but the run has a checkpoint of step 12" in line
    assert "ckpt-12.index" in checkpoints
    assert sorted(p.name for p in (model_dir / "checkpoints").glob("*.index")) == checkpoints


@pytest.mark.parametrize("state", ["deleted", "garbage"])
def test_without_a_readable_state_file_the_run_resumes_from_the_checkpoint_files(
    tmp_path, uninterrupted, killed_at, state
):
    model_dir = _copy(killed_at(12), tmp_path)
    state_file = model_dir / "checkpoints" / "checkpoint"
    state_file.unlink() if state == "deleted" else state_file.write_bytes(b"\x00garbage {{")
    again = _train(model_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "the checkpoint state file" in again.stdout and "resuming at step 12" in again.stdout
    _same_as(uninterrupted[0], model_dir)


@pytest.mark.parametrize("damage", ["result_list", "model_deleted", "model_truncated"])
def test_a_finished_run_with_a_damaged_result_or_model_writes_them_again(tmp_path, uninterrupted, damage):
    model_dir = _copy(uninterrupted[2], tmp_path)
    if damage == "result_list":
        (model_dir / "result.json").write_text("[]")
    elif damage == "model_deleted":
        (model_dir / "model.keras").unlink()
    else:
        model = model_dir / "model.keras"
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    again = _train(model_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "this run has finished, but" in again.stdout and "writing them again" in again.stdout
    _same_as(uninterrupted[0], model_dir)
    result = json.loads((model_dir / "result.json").read_text())
    assert result["final_eval_accuracy"] == uninterrupted[1]["final_eval_accuracy"]
    assert "this run is finished" in _train(model_dir).stdout


def test_a_second_run_into_a_folder_in_use_is_refused_and_a_dead_holder_does_not_block(tmp_path, uninterrupted):
    """Finding 1 of issue 31: the same folder, a changed rate, while the first run still trains."""
    model_dir = tmp_path / "run"
    first = forked.Popen(
        [forked.PROGRAM, *FLAGS, f"--config.model_dir={model_dir}"],
        fault="hold:8",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (model_dir / "checkpoints" / "ckpt-8.index").exists():
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.1)
        time.sleep(1.0)  # its state file is written, then it holds
        config = (model_dir / "config.json").read_text()
        second = _train(model_dir, "--config.base_learning_rate=0.5")
        assert second.returncode == 2
        (line,) = _stop_lines(second.stderr)
        assert f"is in use by another run (pid {first.pid} on " in line
        assert (model_dir / "config.json").read_text() == config
    finally:
        first.kill()
        first.wait(timeout=30)
    again = _train(model_dir)  # the lock died with its process
    assert again.returncode == 0 and "resuming at step 8" in again.stdout, again.stderr[-2000:]
    _same_as(uninterrupted[0], model_dir)


@pytest.mark.parametrize(
    "cluster, strategy, says",
    [
        ({"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "one_device", "trains in one process, but TF_CONFIG"),
        ({"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]}, "one_device", "a cluster of 3"),
        ({"worker": ["127.0.0.1:1"]}, "parameter_server", "needs a cluster with 'chief', 'worker' and 'ps' jobs"),
    ],
)
def test_a_cluster_that_cannot_train_this_strategy_is_one_line_not_a_hang(tmp_path, cluster, strategy, says):
    env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})}
    command = [
        forked.PROGRAM,
        *FLAGS,
        f"--config.strategy={strategy}",
        f"--config.model_dir={tmp_path / 'run'}",
    ]
    run = forked.run(command, env=env, timeout=120)
    assert run.returncode == 2
    (line,) = _stop_lines(run.stderr)
    assert says in line and not (tmp_path / "run").exists()


def test_a_resumed_run_with_another_model_says_so_instead_of_calling_checkpoints_damaged(tmp_path):
    model_dir = tmp_path / "run"
    _killed_at(model_dir, 4)
    config = kbatch.configs.mnist1d_cnn.get_config()
    config.update(
        dataset="mnist1d/original",
        batch_size=256,
        base_batch_size=256,
        num_epochs=2,
        warmup_epochs=0.5,
        steps_per_loop=2,
        checkpoint_every=4,
        strategy="one_device",
        deterministic=True,
        norm="group",
        model_dir=str(model_dir),
    )

    def other_model(info):
        return keras.Sequential(
            [keras.Input(info.input_shape), keras.layers.Flatten(), keras.layers.Dense(info.num_classes)]
        )

    with pytest.raises(ValueError, match=r"checkpoint ckpt-4 holds another model .*model_fn changed"):
        kbatch.training.build_run(config, model_fn=other_model)


def test_a_model_dir_under_a_file_is_one_line_before_anything_is_written(tmp_path):
    (tmp_path / "file").write_text("mine")
    run = _train(tmp_path / "file" / "run")
    assert run.returncode == 2
    (line,) = _stop_lines(run.stderr)
    assert "cannot be made" in line and (tmp_path / "file").read_text() == "mine"


def test_when_every_checkpoint_is_damaged_the_run_stops_in_one_line_leaving_them(tmp_path):
    model_dir = tmp_path / "run"
    process = forked.Popen(
        [forked.PROGRAM, *FLAGS, f"--config.model_dir={model_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    signal_at_checkpoint(process, str(model_dir), 8, signal.SIGKILL)
    for data in (model_dir / "checkpoints").glob("ckpt-*.data-*"):
        data.write_bytes(b"")
    files = {p.name: p.read_bytes() for p in (model_dir / "checkpoints").iterdir()}
    again = _train(model_dir)
    assert again.returncode == 2
    (line,) = _stop_lines(again.stderr)
    assert "none of its checkpoints is intact; move the folder away" in line
    assert {p.name: p.read_bytes() for p in (model_dir / "checkpoints").iterdir()} == files


def _loss_steps(model_dir, group="train", tag="loss"):
    """The steps of every `tag` point in `group`'s event files, in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted((model_dir / group).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


def test_a_run_resumed_behind_its_logged_points_logs_each_update_once(tmp_path, uninterrupted):
    """Finding 19 of issue 31: points logged after the checkpoint a run resumes from are logged
    again by the resumed run; the first copies are dropped, so TensorBoard draws each once."""
    from kbatch.training.backends import checkpoint_files

    model_dir = _copy(uninterrupted[2], tmp_path)
    assert sorted(_loss_steps(model_dir)) == list(range(1, 33))
    checkpoints = model_dir / "checkpoints"
    checkpoint_files.write_state(str(checkpoints), [str(checkpoints / "ckpt-24")])  # as if killed after 24
    (model_dir / "result.json").unlink()
    (model_dir / "model.keras").unlink()
    again = _train(model_dir)
    assert again.returncode == 0 and "resuming at step 24" in again.stdout, again.stderr[-2000:]
    assert sorted(_loss_steps(model_dir)) == list(range(1, 33))
    examples = _loss_steps(model_dir, "examples", "learning_rate")
    assert sorted(examples) == [256 * i for i in range(32)]
    _same_as(uninterrupted[0], model_dir)


def test_two_ctrl_c_50_ms_apart_stop_in_one_line_and_the_same_command_ends_exactly(tmp_path, uninterrupted):
    """Finding 13 of issue 31: the second Ctrl-C may land inside the checkpoint's save."""
    model_dir = tmp_path / "run"
    process = forked.Popen(
        [forked.PROGRAM, *FLAGS, f"--config.model_dir={model_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not (model_dir / "checkpoints" / "ckpt-4.index").exists():
            assert process.poll() is None, "the run ended before checkpoint 4"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == 130
    assert len(_stop_lines(stderr)) == 1 and "Traceback" not in stderr, stderr[-2000:]
    again = _train(model_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    _same_as(uninterrupted[0], model_dir)


@contextlib.contextmanager
def _small_disk(path, size):
    """A tmpfs of `size` mounted at `path` (the tests run as root, here and in CI)."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_disk_is_one_line_leaving_no_half_checkpoint_and_the_run_resumes_elsewhere(tmp_path, uninterrupted):
    """Finding 8 of issue 31: the first checkpoint (~360 kB) does not fit in 300 kB."""
    with _small_disk(tmp_path / "disk", "300k") as disk:
        full = _train(disk / "run")
        assert full.returncode == 2, full.stderr[-2000:]
        (line,) = _stop_lines(full.stderr)
        assert "writing the checkpoint of step 4 failed" in line and "resume from the start" in line
        assert "Traceback" not in full.stderr
        assert not [p.name for p in (disk / "run" / "checkpoints").iterdir() if "ckpt-4" in p.name]
        shutil.copytree(disk / "run", tmp_path / "run")
    again = _train(tmp_path / "run")  # with room: the same command finishes, exactly
    assert again.returncode == 0, again.stderr[-2000:]
    _same_as(uninterrupted[0], tmp_path / "run")


def test_a_run_folder_on_a_read_only_mount_is_one_line(tmp_path):
    """Finding 7 of issue 31: an existing run folder on a mount that became read-only."""
    with _small_disk(tmp_path / "disk", "8m") as disk:
        _killed_at(disk / "run", 4)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        again = _train(disk / "run")
        assert again.returncode == 2
        (line,) = _stop_lines(again.stderr)
        assert "cannot be written (Read-only file system)" in line and "Traceback" not in again.stderr


def test_a_data_dir_on_a_read_only_mount_is_one_line(tmp_path):
    """Finding 7 of issue 31, its second half: MNIST-1D generated into a data_dir that cannot be written."""
    with _small_disk(tmp_path / "data", "8m") as data:
        subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
        run = _train(tmp_path / "run", f"--config.data_dir={data}")
        assert run.returncode == 2, run.stderr[-2000:]
        (line,) = _stop_lines(run.stderr)
        assert f"config.data_dir='{data}': preparing mnist1d/original" in line and "Read-only file system" in line
        assert "Traceback" not in run.stderr and not (tmp_path / "run").exists()


UNCLOSED = """
import sys
from absl import flags
from kbatch.configs import mnist1d_cnn
from kbatch.training import build_run

flags.FLAGS(sys.argv[:1])
config = mnist1d_cnn.get_config()
config.update(dataset="mnist1d/original", batch_size=256, steps_per_loop=4, model_dir=sys.argv[1])
run = build_run(config)
run.run_loop()  # neither trained to the end nor closed: Python frees it as it exits
"""


def test_a_run_left_open_at_exit_lets_go_of_its_folder_without_a_traceback(tmp_path):
    """A script that builds a run and ends without `close()` printed `AttributeError: 'NoneType'
    object has no attribute 'close'` from the folder lock's `__del__`, run after `os` was cleared."""
    ended = subprocess.run(
        [sys.executable, "-c", UNCLOSED, str(tmp_path / "run")], capture_output=True, text=True, timeout=300
    )
    assert ended.returncode == 0 and "Traceback" not in ended.stderr, ended.stderr[-2000:]
    run_lock.acquire(str(tmp_path / "run")).release()  # the folder is free
