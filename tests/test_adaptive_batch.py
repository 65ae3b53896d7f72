"""batch_schedule="adaptive": at each epoch's end the global batch doubles while the measured noise
scale B_simple is above it (softmax regression on mnist1d/original, whose B_simple is about 70 at
the start), up to max_batch_size; the learning rate follows the linear rule; a run stopped part
way and resumed follows the phases it chose to the same weights, bit for bit. "warmup" jumps to a
multiple of B_simple; "goodput" takes the doubling with the most examples/s x statistical
efficiency (Pollux), from a given time curve (checked against NumPy's argmax of the formula) or
from the times it measures (kept with the checkpoints)."""

import contextlib
import io
import json
import os
import re

import keras
import numpy as np
import pytest
from conftest import small_config
from smooth_model import linear_model

from kbatch.diagnostics import goodput
from kbatch.training import build_run, train
from kbatch.training.actions.batch_control import next_batch

pytestmark = pytest.mark.components  # CI runs them again under KERAS_BACKEND=jax

ADAPTIVE = dict(
    batch_size=32,
    base_batch_size=32,
    base_learning_rate=0.05,
    decay="constant",
    warmup_epochs=0.0,
    num_epochs=5,
    batch_schedule="adaptive",
    max_batch_size=256,
    noise_scale_every=5,
    noise_scale_decay=0.95,
    norm="none",
)


class StopAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            self.model.stop_training = True


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory):
    """One whole adaptive run, shared by the tests that read it: its config, result and printed lines."""
    return _whole_run(tmp_path_factory, ADAPTIVE)


WARMUP = {**ADAPTIVE, "batch_schedule": "warmup", "batch_warmup_multiple": 2.0}


@pytest.fixture(scope="module")
def warmup_run(tmp_path_factory):
    return _whole_run(tmp_path_factory, WARMUP)


CURVE = (0.01, 1e-4, 1.0)  # T_update(B) = 10 ms + 0.1 ms x B: at B_simple ~70 the best batch is 64 or 128
GOODPUT = {**ADAPTIVE, "batch_schedule": "goodput", "update_time_model": CURVE}


@pytest.fixture(scope="module")
def goodput_run(tmp_path_factory):
    return _whole_run(tmp_path_factory, GOODPUT)


def _whole_run(tmp_path_factory, fields):
    config = small_config(tmp_path_factory.mktemp(fields["batch_schedule"]) / "run", **fields)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = train(config, model_fn=linear_model, verbose=True)
    return config, result, printed.getvalue()


def test_next_batch_doubles_or_follows_the_multiple_of_the_noise_scale_by_hand():
    assert [next_batch("adaptive", 128, b, 4096) for b in (100, 129, 5000)] == [128, 256, 256]
    assert next_batch("adaptive", 2048, 5000, 4096) == 4096 and next_batch("adaptive", 4096, 9e9, 4096) == 4096
    assert [next_batch("warmup", 128, b, 4096) for b in (100, 255, 256, 1000, 1e6)] == [128, 128, 256, 512, 4096]
    assert next_batch("warmup", 128, 300, 4096, multiple=4.0) == 1024  # 4 x 300 = 1,200: 128 x 2**3
    assert next_batch("warmup", 96, 400, 1000) == 384  # doublings of 96: 192, 384 (768 > 400)


def test_the_batch_warmup_jumps_to_the_multiple_of_the_noise_scale(warmup_run):
    _, result, printed = warmup_run
    pattern = r"kbatch: batch warmup: 2 x B_simple = ([\d,]+) at epoch (\d+): the batch grows from (\d+) to (\d+)"
    decisions = [m for m in map(re.compile(pattern).match, printed.splitlines()) if m]
    assert decisions, "the batch never grew"
    assert result["batch_sizes"] == [32] + [int(m.group(4)) for m in decisions]
    for m in decisions:
        target, before, after = float(m.group(1).replace(",", "")), int(m.group(3)), int(m.group(4))
        assert after == next_batch("warmup", before, target / 2, 256, multiple=2.0)  # the largest doubling below
    assert any(int(m.group(4)) >= 4 * int(m.group(3)) for m in decisions) or max(result["batch_sizes"]) == 256


def test_the_batch_doubles_while_the_noise_scale_is_above_it(adaptive_run):
    _, result, printed = adaptive_run
    lines = [
        re.match(
            r"kbatch: adaptive batch: B_simple ([\d,.]+) > batch (\d+) at epoch (\d+): the batch doubles "
            r"to (\d+)",
            line,
        )
        for line in printed.splitlines()
    ]
    decisions = [m for m in lines if m]
    assert decisions, "the batch never grew"
    sizes = [32] + [int(m.group(4)) for m in decisions]
    assert result["batch_sizes"] == sizes and sizes == [32 * 2**i for i in range(len(sizes))]
    assert max(sizes) <= 256
    for m in decisions:
        assert float(m.group(1).replace(",", "")) > int(m.group(2)) and 1 <= int(m.group(3)) < 5
    for entry in result["history"]:  # the linear rule, with a constant decay: lr / B stays 0.05 / 32
        assert entry["learning_rate"] / entry["global_batch_size"] == pytest.approx(0.05 / 32, rel=1e-5)


def _goodput_by_hand(batch, b_simple, limit, curve, base=32):
    """argmax over batch x 2**n <= limit of B / (T0 + k B**gamma) x (B_simple + base) / (B_simple + B)."""
    t0, k, gamma = curve
    candidates = batch * 2 ** np.arange(int(np.floor(np.log2(limit / batch))) + 1)
    rates = candidates / (t0 + k * candidates**gamma) * (b_simple + base) / (b_simple + candidates)
    return int(candidates[np.argmax(rates)])


def test_goodput_picks_the_doubling_with_the_most_progress_per_second_by_hand():
    model = goodput.update_time.UpdateTimeFit(*CURVE, residual=0.0)
    for batch, b_simple in [(32, 70.0), (32, 1000.0), (64, 10.0), (32, 1e6), (128, 300.0)]:
        assert goodput.best_batch(batch, 32, b_simple, 256, model) == _goodput_by_hand(batch, b_simple, 256, CURVE)
    assert goodput.best_batch(32, 32, 70.0, 256, model) == 64  # 2,424 / 2,970 / 2,892 / 2,251 examples/s at 32..256
    assert goodput.best_batch(32, 32, float("nan"), 256, model) == 32
    assert [goodput.best_batch(32, 32, b, 256, None) for b in (20.0, 40.0)] == [32, 64]  # untimed: as adaptive
    assert goodput.efficiency(32, 32, 70.0) == 1.0 and goodput.efficiency(256, 32, 70.0) == pytest.approx(102 / 326)


def test_the_time_model_is_fitted_from_two_or_more_batch_sizes_timed():
    t0, k = 2e-3, 3e-5
    two = goodput.time_model({64: t0 + k * 64, 256: t0 + k * 256})
    assert (two.t0, two.k, two.gamma) == (pytest.approx(t0), pytest.approx(k), 1.0)
    three = goodput.time_model({b: t0 + k * b**0.6 for b in (32, 128, 512, 2048)})
    assert (three.t0, three.k, three.gamma) == (
        pytest.approx(t0, rel=1e-3),
        pytest.approx(k, rel=1e-3),
        pytest.approx(0.6, rel=1e-4),
    )
    assert goodput.time_model({64: 0.01}) is None


def test_goodput_decides_by_the_formula_on_a_given_time_curve(goodput_run):
    _, result, printed = goodput_run
    pattern = r"kbatch: goodput: B_simple ([\d.e+]+), T_update\(B\) = .* at epoch (\d+): batch (\d+) -> (\d+)"
    decisions = [m for m in map(re.compile(pattern).match, printed.splitlines()) if m]
    assert decisions, "the batch never grew"
    assert result["batch_sizes"] == [32] + [int(m.group(4)) for m in decisions]
    for m in decisions:
        b_simple, before, after = float(m.group(1)), int(m.group(3)), int(m.group(4))
        assert after == _goodput_by_hand(before, b_simple, 256, CURVE)


def test_goodput_times_the_updates_and_keeps_the_times_with_its_checkpoints(make_config):
    config = make_config(**{**GOODPUT, "update_time_model": (), "num_epochs": 2})
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = train(config, model_fn=linear_model, verbose=True)
    assert "kbatch: goodput: one batch timed, B_simple" in printed.getvalue()  # epoch 1: explores as adaptive
    with open(os.path.join(config.model_dir, "history.json")) as file:
        times = json.load(file)["actions"]["AdaptBatchSize"]["update_seconds"]
    assert set(map(int, times)) == set(result["batch_sizes"]) and all(0 < t < 1 for s in times.values() for t in s)


@pytest.mark.parametrize("schedule", ["adaptive", "warmup", "goodput"])
def test_a_resumed_run_follows_the_phases_it_chose(make_config, request, schedule):
    whole, reference, _ = request.getfixturevalue(f"{schedule}_run")
    assert len(reference["batch_sizes"]) >= 2
    stopped = make_config(**{"adaptive": ADAPTIVE, "warmup": WARMUP, "goodput": GOODPUT}[schedule])
    build_run(stopped, model_fn=linear_model).train(callbacks=[StopAfterEpoch(3)], verbose=False)
    resumed = build_run(stopped, model_fn=linear_model)
    assert resumed.step > 0 and resumed.plan.phases[-1].batch_size >= 64
    result = resumed.train(verbose=False)
    assert result["batch_sizes"] == reference["batch_sizes"] and result["steps"] == reference["steps"]
    weights = [keras.models.load_model(f"{c.model_dir}/model.keras").get_weights() for c in (whole, stopped)]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(noise_scale_every=0),
            r"config.batch_schedule='adaptive' reads the noise scale: set config.noise_scale_every",
        ),
        (dict(max_batch_size=48), r"must be at least 2 x batch_size=64 \(it is 48\)"),
        (dict(batch_boundaries=(2.0,), batch_sizes=(64,)), r"chooses the phases itself"),
        (
            dict(batch_schedule="goodput", noise_scale_every=0),
            r"config.batch_schedule='goodput' reads the noise scale: set config.noise_scale_every",
        ),
        (dict(batch_schedule="goodput", update_time_model=(0.01, 1e-4)), r"config.update_time_model=\(0.01, 0.0001\)"),
        (dict(batch_schedule="goodput", update_time_model=(0.01, 1e-4, 0)), r"config.update_time_model\[2\]=0"),
    ],
)
def test_bad_adaptive_configs_are_one_line(make_config, overrides, message):
    config = make_config(**{**ADAPTIVE, **overrides})
    with pytest.raises(ValueError, match=message):
        train(config, model_fn=linear_model, verbose=False)
