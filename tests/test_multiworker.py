"""Multi-worker training: two local workers started by tools/launch_local.py, each a process with
its own TF_CONFIG, train under MultiWorkerMirroredStrategy and end with the weights of a
one-device run at the same global batch; only the chief writes the run's files; a stopped run
started again resumes on every worker from the chief's checkpoint; a missing or broken TF_CONFIG
is refused before anything is written.

The equality runs use the smooth user model of tests/multiworker_worker.py (layer norm, tanh):
measured here, the default CNN with group norm and ReLU ends 4e-7 from the one-device run with
SGD-momentum but 1e-3 with Adam (a ReLU that flips on a float32 rounding difference, which Adam's
per-coordinate normalization then amplifies); the smooth model ends within 1e-7 with both."""

import io
import json
import os
import pathlib
import signal
import subprocess
import sys

import forked
import keras
import numpy as np
import pytest
from multiworker_worker import smooth_model
from stop_run import signal_at_checkpoint

from kbatch.launcher import launch
from kbatch.training import train

ROOT = pathlib.Path(__file__).resolve().parents[1]

WORKER = str(ROOT / "tests" / "multiworker_worker.py")
TIMEOUT_S = 150  # per launch; the launcher stops every worker past it (and always, on return)
CHIEF_FILES = {
    "config.json",
    "result.json",
    "model.keras",
    "history.json",
    "checkpoints",
    "train",
    "eval",
    "examples",
    ".kbatch.lock",
}  # the chief alone locks the run folder


def _launch_two_workers(command, tmp_path):
    """Run `command` as 2 workers; their temporary folders go to tmp_path/worker_tmp."""
    worker_tmp = tmp_path / "worker_tmp"
    worker_tmp.mkdir()
    out, err = io.StringIO(), io.StringIO()
    code = launch(command, 2, timeout_s=TIMEOUT_S, grace_s=2.0, env={"TMPDIR": str(worker_tmp)}, stdout=out, stderr=err)
    assert code == 0, (out.getvalue() + err.getvalue())[-4000:]
    return worker_tmp, out.getvalue()


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


@pytest.mark.parametrize("optimizer, learning_rate", [("momentum", 0.05), ("adam", 0.01)])
def test_two_workers_end_with_the_weights_of_one_device(make_config, tmp_path, optimizer, learning_rate):
    fields = dict(num_epochs=1, optimizer=optimizer, base_learning_rate=learning_rate)
    config = make_config(strategy="multiworker", **fields)
    other_model_dir = tmp_path / "model_dir_of_worker_1"
    worker_tmp, _ = _launch_two_workers([sys.executable, WORKER, config.to_json(), str(other_model_dir)], tmp_path)

    reference = make_config(strategy="one_device", **fields)
    expected = train(reference, model_fn=smooth_model, verbose=False)
    assert expected["steps"] >= 20
    result = json.load(open(os.path.join(config.model_dir, "result.json")))
    assert (result["steps"], result["num_replicas"]) == (expected["steps"], 2)
    for a, b in zip(_weights(reference.model_dir), _weights(config.model_dir)):
        np.testing.assert_allclose(b, a, atol=1e-5)
    # Only the chief writes the run; worker 1 never even creates its model_dir, and only worker 1
    # needed a temporary folder (for its copy of the collective checkpoint).
    assert set(os.listdir(config.model_dir)) == CHIEF_FILES
    assert not other_model_dir.exists()
    assert not os.listdir(worker_tmp)  # and worker 1 removed its folder at the end


def test_kbatch_train_on_two_workers_through_the_launcher(tmp_path):
    """The command the README gives: the chief alone writes and reports, and the saved model is
    the one evaluated (its test accuracy is the result's, with the test set split over workers)."""
    model_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "kbatch.train",
        "--config.strategy=multiworker",
        "--config.dataset=mnist1d/original",
        "--config.batch_size=128",
        "--config.base_batch_size=128",
        "--config.num_epochs=1",
        "--config.warmup_epochs=0.5",
        "--config.steps_per_loop=10",
        "--config.deterministic=True",
        "--config.norm=group",
        f"--config.model_dir={model_dir}",
    ]
    worker_tmp, out = _launch_two_workers(command, tmp_path)

    assert set(os.listdir(model_dir)) == CHIEF_FILES
    assert not os.listdir(worker_tmp)
    assert "[worker 0] kbatch: done." in out and "[worker 1] kbatch:" not in out
    result = json.load(open(model_dir / "result.json"))
    steps = -(-4000 // 128)  # one epoch: the updates that see all 4,000 examples
    assert (result["steps"], result["examples_seen"], result["num_replicas"]) == (steps, steps * 128, 2)
    import tensorflow_datasets as tfds

    x, y = tfds.as_numpy(tfds.load("mnist1d/original", split="test", as_supervised=True, batch_size=-1))
    model = keras.models.load_model(model_dir / "model.keras")
    accuracy = np.mean(np.argmax(model.predict(x[..., None], verbose=0), -1) == y)
    assert accuracy == pytest.approx(result["final_eval_accuracy"], abs=1e-6)


def test_stopped_two_worker_run_resumes_on_both_workers_and_ends_as_if_never_stopped(tmp_path):
    """SIGTERM to the launcher after checkpoint 8 stops both workers (they save through the
    preemption handler); the same command then resumes every worker from the chief's checkpoint
    (a non-chief's own folder is new at each start) and ends bitwise equal to an uninterrupted run."""

    def command(model_dir):  # 2 epochs of mnist1d/original at batch 256: 32 updates, a checkpoint every 4
        return [
            sys.executable,
            "-m",
            "kbatch.train",
            "--config.strategy=multiworker",
            "--config.dataset=mnist1d/original",
            "--config.batch_size=256",
            "--config.base_batch_size=256",
            "--config.num_epochs=2",
            "--config.warmup_epochs=0.5",
            "--config.steps_per_loop=2",
            "--config.checkpoint_every=4",
            "--config.deterministic=True",
            "--config.norm=group",
            f"--config.model_dir={model_dir}",
        ]

    (tmp_path / "reference").mkdir()
    _launch_two_workers(command(tmp_path / "reference" / "run"), tmp_path / "reference")
    model_dir, worker_tmp = tmp_path / "run", tmp_path / "worker_tmp"
    worker_tmp.mkdir()
    launcher = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tools" / "launch_local.py"),
            "--workers=2",
            f"--timeout_s={TIMEOUT_S}",
            "--grace_s=30",
            "--",
            *command(model_dir),
        ],
        env={**os.environ, "TMPDIR": str(worker_tmp)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = signal_at_checkpoint(launcher, model_dir, 8, signal.SIGTERM, timeout_s=TIMEOUT_S)
    assert not (model_dir / "result.json").exists(), "the run ended before it was stopped"
    assert "[worker 1] kbatch-train: preempted" in stderr, stderr[-3000:]

    (tmp_path / "restart").mkdir()
    _, out = _launch_two_workers(command(model_dir), tmp_path / "restart")
    resumed_at = int(out.split("[worker 0] kbatch: resuming at step ")[1].split(";")[0])
    assert 8 <= resumed_at < 32
    assert json.load(open(model_dir / "result.json"))["steps"] == 32
    for a, b in zip(_weights(tmp_path / "reference" / "run"), _weights(model_dir)):
        np.testing.assert_array_equal(b, a)
    assert not os.listdir(worker_tmp) and not os.listdir(tmp_path / "restart" / "worker_tmp")


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "strategy 'multiworker' needs the TF_CONFIG environment variable"),
        ("{'cluster': 1", "TF_CONFIG is not valid JSON"),
        ('{"cluster": {"worker": ["127.0.0.1:2222"]}}', "TF_CONFIG names no 'task'"),
        ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG names no 'cluster'"),
        (
            '{"cluster": {"worker": ["127.0.0.1:2222"]}, "task": {"type": "worker", "index": 1}}',
            "is not in its cluster",
        ),
    ],
)
def test_bad_tf_config_is_named_and_nothing_is_written(make_config, monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    config = make_config(strategy="multiworker")
    with pytest.raises(ValueError, match=message):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)


def test_kbatch_train_without_tf_config_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    run = forked.run(
        [forked.PROGRAM, "--config.strategy=multiworker", f"--config.model_dir={tmp_path / 'run'}"],
        env=env,
        timeout=120,
    )
    assert run.returncode == 2
    assert "kbatch-train: strategy 'multiworker' needs the TF_CONFIG environment variable" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "run").exists()
