"""Exact resume: a run killed with SIGKILL and started again with the same command ends with the
same weights as an uninterrupted run. And a non-finite loss stops the run without touching the
last good checkpoint. The runs are kbatch-train forked from a server that imported TensorFlow once
(tests/forked.py)."""

import glob
import json
import os
import signal
import subprocess

import forked
import keras
import numpy as np
import pytest
from stop_run import signal_at_checkpoint

import kbatch  # noqa: F401  (registers the layers for load_model)
from kbatch.training import train

# Two epochs of mnist1d/original at batch 256: 15 steps an epoch, a checkpoint every 4 steps.
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


# The same run with the batch doubled after epoch 1: 16 updates at 256 (4,096 examples), then 8 at
# 512; checkpoint 20 is inside the second phase.
PHASED = ["--config.batch_boundaries=(1.0,)", "--config.batch_sizes=(512,)"]


def _command(model_dir, extra=()):
    """kbatch-train's command line, run forked (tests/forked.py)."""
    return [forked.PROGRAM, *FLAGS, *extra, f"--config.model_dir={model_dir}"]


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


def _run_and_kill(model_dir, checkpoint_step, delay, extra=()):
    """Start the run; SIGKILL it `delay` seconds after checkpoint `checkpoint_step` is written."""
    process = forked.Popen(_command(model_dir, extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    signal_at_checkpoint(process, model_dir, checkpoint_step, signal.SIGKILL, delay=delay)
    assert not os.path.exists(os.path.join(model_dir, "result.json")), "the run finished before the kill"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    forked.run(_command(model_dir), check=True, timeout=300)
    return _weights(model_dir)


@pytest.mark.parametrize(
    "checkpoint_step, delay",
    [
        (4, 0.0),  # right after a checkpoint
        (12, 0.3),  # between checkpoints, inside the first epoch
        (20, 0.1),  # between checkpoints, inside the second epoch (its last 12 updates take ~0.3 s)
    ],
)
def test_killed_and_restarted_run_ends_with_the_uninterrupted_weights(tmp_path, uninterrupted, checkpoint_step, delay):
    model_dir = tmp_path / "run"
    _run_and_kill(model_dir, checkpoint_step, delay)
    restart = forked.run(_command(model_dir), check=True, timeout=300)
    # It continued from a checkpoint at or after the kill point, not from scratch.
    resumed_at = int(restart.stdout.split("resuming at step ")[1].split(";")[0])
    assert checkpoint_step <= resumed_at < 30
    for a, b in zip(uninterrupted, _weights(model_dir)):
        np.testing.assert_array_equal(b, a)


def test_run_killed_in_its_second_batch_phase_resumes_in_that_phase(tmp_path):
    reference, model_dir = tmp_path / "uninterrupted", tmp_path / "run"
    forked.run(_command(reference, PHASED), check=True, timeout=300)
    _run_and_kill(model_dir, 20, 0.0, PHASED)
    restart = forked.run(_command(model_dir, PHASED), check=True, timeout=300)
    assert "resuming at step 20" in restart.stdout
    assert json.load(open(os.path.join(model_dir, "result.json")))["batch_sizes"] == [256, 512]
    for a, b in zip(_weights(reference), _weights(model_dir)):
        np.testing.assert_array_equal(b, a)


def test_sigterm_saves_where_it_lands_exits_42_and_the_same_command_resumes_exactly(tmp_path, uninterrupted):
    """Preemption: TF's PreemptionCheckpointHandler catches SIGTERM; kbatch saves after the next
    loop call, wherever that is, and exits with the restart code."""
    model_dir = tmp_path / "run"
    process = forked.Popen(_command(model_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = signal_at_checkpoint(process, model_dir, 8, signal.SIGTERM)
    assert process.returncode == 42, stderr
    indexes = glob.glob(str(model_dir / "checkpoints" / "*.index"))
    saved = sorted(int(p.split("ckpt-")[1].split(".")[0]) for p in indexes)
    preempted_at = int(stderr.split("checkpoint of step ")[1].split()[0])
    assert saved[-1] == preempted_at and 8 < preempted_at < 30
    assert not os.path.exists(model_dir / "result.json")
    restart = forked.run(_command(model_dir), check=True, timeout=300)
    assert f"resuming at step {preempted_at};" in restart.stdout
    for a, b in zip(uninterrupted, _weights(model_dir)):
        np.testing.assert_array_equal(b, a)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(make_config):
    # Warmup from 0 to an absurd rate: the first updates are sane, then the loss overflows.
    config = make_config(
        num_epochs=1,
        optimizer="sgd",
        base_learning_rate=1e6,
        warmup_epochs=0.9,
        checkpoint_every=1,
        steps_per_loop=1,
        norm="none",
    )
    diverged = r"loss is (nan|inf) at step (\d+).*last good checkpoint.*ckpt-(\d+)"
    with pytest.raises(FloatingPointError, match=diverged) as error:
        train(config, verbose=False)
    bad_step = int(error.value.args[0].split("at step ")[1].split(":")[0])
    checkpoints = sorted(glob.glob(os.path.join(config.model_dir, "checkpoints", "ckpt-*.index")))
    last = max(int(p.split("ckpt-")[1].split(".")[0]) for p in checkpoints)
    assert last < bad_step
    assert f"ckpt-{last}" in str(error.value)
    # The kept checkpoint holds finite weights.
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(config.model_dir, "checkpoints", f"ckpt-{last}"))
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name
