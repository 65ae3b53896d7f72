"""strategy='parameter_server': real clusters on 127.0.0.1 started by tools/launch_local.py (a
coordinator, workers and parameter servers, each a process). With one worker the updates cannot
overlap, so the run must end with the weights of a one-device run and measure no staleness, and a
run stopped and started again must end as if never stopped; with two, `kbatch-train` records each
update's measured staleness (TensorBoard histogram and result.json) and the launcher leaves no
process behind. Bad configs are refused in one line
before anything starts.

The equality run uses the smooth user model (tests/smooth_model.py) and XLA off on both sides:
the workers read the weights from the parameter servers, outside any XLA cluster."""

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
import psutil
import pytest
import tensorflow as tf
from smooth_model import smooth_model
from stop_run import signal_at_checkpoint
from tensorboard.backend.event_processing import event_accumulator

from kbatch import distribute
from kbatch.launcher import launch
from kbatch.training import train
from kbatch.training.config import schema

ROOT = pathlib.Path(__file__).resolve().parents[1]

WORKER = str(ROOT / "tests" / "multiworker_worker.py")
TIMEOUT_S = 180  # per launch; the launcher stops every process past it (and always, on return)


def _launch(command, workers, ps):
    out, err = io.StringIO(), io.StringIO()
    code = launch(command, workers, ps=ps, timeout_s=TIMEOUT_S, grace_s=2.0, stdout=out, stderr=err)
    assert code == 0, (out.getvalue() + err.getvalue())[-4000:]
    return out.getvalue()


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


def test_one_worker_ends_with_the_weights_of_one_device_and_no_staleness(make_config):
    fields = dict(num_epochs=1, jit_compile=False)
    config = make_config(strategy="parameter_server", **fields)
    _launch([sys.executable, WORKER, config.to_json()], workers=1, ps=1)

    reference = make_config(strategy="one_device", **fields)
    expected = train(reference, model_fn=smooth_model, verbose=False)
    result = json.load(open(os.path.join(config.model_dir, "result.json")))
    assert expected["steps"] >= 20 and result["steps"] == expected["steps"]
    assert result["staleness"] == {"counts": [expected["steps"]], "mean": 0.0, "max": 0}
    assert result["final_eval_accuracy"] == pytest.approx(expected["final_eval_accuracy"], abs=2e-3)
    for a, b in zip(_weights(reference.model_dir), _weights(config.model_dir)):
        np.testing.assert_allclose(b, a, atol=1e-5)


def _staleness_histograms(model_dir):
    """{step: [buckets, 3] (left edge, right edge, count)} of the `train/staleness` histograms."""
    events = event_accumulator.EventAccumulator(str(model_dir / "train"), size_guidance={"tensors": 0})
    events.Reload()
    return {event.step: tf.make_ndarray(event.tensor_proto) for event in events.Tensors("staleness")}


def test_two_workers_record_their_staleness_and_the_launcher_leaves_no_process(tmp_path):
    model_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "kbatch.train",
        "--config.strategy=parameter_server",
        "--config.dataset=mnist1d/original",
        "--config.batch_size=128",
        "--config.base_batch_size=128",
        "--config.num_epochs=1",
        "--config.warmup_epochs=0.5",
        "--config.steps_per_loop=8",
        f"--config.model_dir={model_dir}",
    ]
    out = _launch(command, workers=2, ps=2)

    left = [child for child in psutil.Process().children(recursive=True) if child.pid not in forked.server_pids()]
    assert left == []  # coordinator, workers, servers: all gone (tests/forked.py's server is not the run's)
    assert "[chief 0] kbatch: starting; 2 asynchronous worker(s) and 2 parameter server(s)" in out
    assert "[chief 0] kbatch: done." in out
    result = json.load(open(model_dir / "result.json"))
    steps = -(-4000 // 128)
    counts = result["staleness"]["counts"]
    assert result["steps"] == steps and sum(counts) == steps
    assert result["staleness"]["mean"] == pytest.approx(sum(t * n for t, n in enumerate(counts)) / steps)
    assert result["staleness"]["max"] == len(counts) - 1
    assert result["final_eval_accuracy"] > 0.2  # it trains: twice chance (10 classes) after one short epoch
    histograms = _staleness_histograms(model_dir)
    assert sorted(histograms) == [8, 16, 24, 32]  # one per loop of 8 updates
    for buckets in histograms.values():
        assert buckets[:, 2].sum() == 8
        assert buckets[0, 0] >= 0 and buckets[-1, 1] <= result["staleness"]["max"]


def test_a_stopped_run_resumes_from_its_checkpoint_and_ends_as_if_never_stopped(tmp_path):
    """SIGTERM to the launcher after checkpoint 8 stops the coordinator and the servers; the same
    command resumes from the checkpoint at the stream position it had reached and, with one
    worker (no race), ends with the weights of an uninterrupted run."""

    def command(model_dir):  # 2 epochs of mnist1d/original at batch 256: 32 updates, a checkpoint every 4
        return [
            sys.executable,
            "-m",
            "kbatch.train",
            "--config.strategy=parameter_server",
            "--config.dataset=mnist1d/original",
            "--config.batch_size=256",
            "--config.base_batch_size=256",
            "--config.num_epochs=2",
            "--config.warmup_epochs=0.5",
            "--config.steps_per_loop=2",
            "--config.checkpoint_every=4",
            f"--config.model_dir={model_dir}",
        ]

    _launch(command(tmp_path / "reference"), workers=1, ps=1)
    model_dir = tmp_path / "run"
    launcher = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tools" / "launch_local.py"),
            "--workers=1",
            "--ps=1",
            f"--timeout_s={TIMEOUT_S}",
            "--",
            *command(model_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    signal_at_checkpoint(launcher, model_dir, 8, signal.SIGTERM, timeout_s=TIMEOUT_S)
    assert not (model_dir / "result.json").exists(), "the run ended before it was stopped"

    out = _launch(command(model_dir), workers=1, ps=1)
    resumed_at = int(out.split("[chief 0] kbatch: resuming at step ")[1].split(";")[0])
    assert 8 <= resumed_at < 32
    assert json.load(open(model_dir / "result.json"))["steps"] == 32
    for a, b in zip(_weights(tmp_path / "reference"), _weights(model_dir)):
        np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("staleness", 2, "config.staleness=2: the delay is real here"),
        ("accumulation_steps", 2, "config.accumulation_steps=2: each worker's update is one batch"),
        ("noise_scale_every", 10, "config.noise_scale_every=10"),
        ("norm", "sync_batch", "config.norm='sync_batch'"),
        ("mixed_precision", "mixed_float16", "config.mixed_precision='mixed_float16'"),
        ("dataset", "imagenet2012", "held in memory"),
        ("backend", "jax", "needs config.backend='tensorflow'"),
    ],
)
def test_what_an_asynchronous_run_cannot_do_is_refused_naming_the_field(make_config, field, value, message):
    config = make_config(strategy="parameter_server")
    config[field] = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(")) as error:
        schema.resolve(config)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "strategy 'parameter_server' needs the TF_CONFIG environment variable"),
        (
            {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}},
            "needs a cluster with 'chief', 'worker' and 'ps' jobs .TF_CONFIG has worker.",
        ),
        (
            {"cluster": {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}, "task": {"type": "chief", "index": 0}},
            "needs a cluster with 'chief', 'worker' and 'ps' jobs .TF_CONFIG has chief, worker.",
        ),
        (
            {
                "cluster": {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]},
                "task": {"type": "worker", "index": 0},
            },
            "the training process is the coordinator, TF_CONFIG task 'chief'",
        ),
    ],
)
def test_a_cluster_without_coordinator_workers_and_servers_is_refused(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    with pytest.raises(ValueError, match=message):
        distribute._create_strategy("parameter_server")
