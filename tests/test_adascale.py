"""lr_gain="adascale" (Johnson et al. 2020): the gain r = (tr(Sigma)/B0 + |G|^2) / (tr(Sigma)/B + |G|^2)
against NumPy; on a quadratic (squared error of a linear map, its weights held at zero by a tiny
rate) the gain the step measures is the closed form of the data's per-example gradients; every
update's rate is r x the base rate x the epoch schedule at the progress so far, and the run ends
after the update that takes the progress to num_epochs; a resumed run ends with the uninterrupted
run's weights, bit for bit; bad configs are one line."""

import keras
import numpy as np
import pytest
from test_adaptive_batch import StopAfterEpoch

import kbatch
from kbatch.training import Action, Task, build_run, train
from kbatch.training.config import recipe, schema
from kbatch.training.transforms import adascale

pytestmark = pytest.mark.components  # CI runs them again under KERAS_BACKEND=jax

N, SHORT, DIM, CLASSES = 32768, 2048, 8, 4  # the closed form's examples; the other tests' (fewer updates)


def _data(n=N):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, DIM)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(DIM, CLASSES)) + 2.0 * rng.normal(size=(N, CLASSES)), axis=1).astype(np.int32)
    return x[:n], y[:n]


class HalfSquaredError(Task):
    """1/2 |W x - onehot(y)|^2: a quadratic in the weights."""

    def per_example(self, labels, outputs):
        target = keras.ops.one_hot(labels, CLASSES)
        return {"loss": 0.5 * keras.ops.sum((outputs - target) ** 2, axis=-1)}


def _linear(info):
    inputs = keras.Input(info.input_shape)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, use_bias=False, kernel_initializer="zeros")(inputs))


class Records(Action):
    """Every update's record, kept."""

    def __init__(self):
        self.records = []

    def after_loop(self, run, loop):
        self.records.append({k: np.asarray(v) for k, v in loop.records.items()})

    def field(self, name):
        return np.concatenate([r[name] for r in self.records])


def _config(make_config, **overrides):
    fields = dict(
        batch_size=64,
        base_batch_size=8,
        num_epochs=1,
        warmup_epochs=0.0,
        decay="constant",
        lr_gain="adascale",
        noise_scale_every=16,
        noise_scale_decay=0.99,
        optimizer="sgd",
        weight_decay=0.0,
        norm="none",
        steps_per_loop=64,
        evals_per_epoch=1,
    )
    return make_config(**{**fields, **overrides})


def _source(n):
    x, y = _data(n)
    return kbatch.data.from_arrays(x, y, eval=(x[:256], y[:256]), num_classes=CLASSES)


def _train(config, actions=(), n=SHORT):
    return train(config, model_fn=_linear, task=HalfSquaredError(), data=_source(n), actions=actions, verbose=False)


@pytest.mark.fast
def test_the_gain_is_the_formula_and_stays_in_one_to_the_scale():
    for g, t, b0, b in [(0.2, 7.8, 8, 64), (1.0, 0.0, 8, 64), (0.0, 5.0, 32, 256), (2.0, 300.0, 32, 256)]:
        want = np.clip((t / b0 + g) / (t / b + g), 1, b / b0)
        assert float(adascale.gain(g, t, b0, b)) == pytest.approx(want, rel=1e-6)
    assert float(adascale.gain(-1.0, 5.0, 8, 64)) == pytest.approx(8.0)  # |G|^2 read as 0: all noise, r = S
    assert float(adascale.gain(1.0, -5.0, 8, 64)) == pytest.approx(1.0)  # no noise: r = 1


@pytest.mark.fast
@pytest.mark.parametrize("rule", ["linear", "sqrt"])
def test_the_recorded_peak_rate_is_the_gains_bound_whatever_the_rule(rule):
    fields = dict(batch_size=1024, base_batch_size=128, base_learning_rate=0.1, lr_scaling=rule)
    plain = recipe.RunRecipe.from_settings(schema.resolve(fields)).peak_learning_rate()
    adascale = {**fields, "lr_gain": "adascale", "noise_scale_every": 10, "optimizer": "momentum"}
    gained = recipe.RunRecipe.from_settings(schema.resolve(adascale)).peak_learning_rate()
    assert gained == pytest.approx(0.1 * 8) and plain == pytest.approx(0.1 * (8 if rule == "linear" else 8**0.5))


def test_on_a_quadratic_the_measured_gain_is_the_closed_form(make_config):
    """At W = 0 each example's gradient is -onehot(y) x^T: |G|^2 and tr(Sigma) over the training
    set give r* = 3.38 for B0 = 8, B = 64 (B_simple 33); the step's averaged estimate over the
    second half of an epoch (256 updates, the average's memory 100) is within 6% of it."""
    x, y = _data()
    per_example = -(np.eye(CLASSES)[y][:, :, None] * x[:, None, :]).reshape(N, -1).astype(np.float64)
    mean = per_example.mean(0)
    gradient_sq, trace = mean @ mean, ((per_example - mean) ** 2).sum(1).mean()
    closed_form = (trace / 8 + gradient_sq) / (trace / 64 + gradient_sq)
    records = Records()
    _train(_config(make_config, base_learning_rate=1e-7, num_epochs=1), actions=[records], n=N)
    gains = records.field("adascale_gain")
    assert closed_form == pytest.approx(3.38, abs=0.01)
    assert np.mean(gains[len(gains) // 2 :]) == pytest.approx(closed_form, rel=0.06)


def test_the_rate_is_the_gain_times_the_base_schedule_at_the_progress_and_the_run_ends_there(make_config):
    records = Records()
    config = _config(make_config, base_learning_rate=0.01, num_epochs=2, decay="cosine", steps_per_loop=25)
    result = _train(config, actions=[records])
    gains, progress, rates = (records.field(f) for f in ("adascale_gain", "adascale_progress", "learning_rate"))
    before = np.concatenate([[0.0], np.cumsum(gains.astype(np.float64))[:-1]]) * 8 / SHORT  # base epochs
    np.testing.assert_allclose(progress, before + gains * 8 / SHORT, rtol=1e-4)
    cosine = 0.5 * (1 + np.cos(np.pi * np.minimum(before, 2) / 2))
    np.testing.assert_allclose(rates, gains * 0.01 * cosine, rtol=1e-4, atol=1e-7)  # float32 progress
    assert progress[-1] >= 2 and progress[-2] < 2  # the last update took the progress past the end
    assert result["steps"] == len(gains) < 2 * SHORT // 8 and len(gains) > 2 * SHORT // 64  # r between 1 and S


def test_a_resumed_run_ends_where_the_uninterrupted_one_did(make_config):
    fields = dict(base_learning_rate=0.01, num_epochs=2, decay="cosine", steps_per_loop=25)
    whole, stopped = _config(make_config, **fields), _config(make_config, **fields)
    reference = _train(whole)
    data = _source(SHORT)
    build_run(stopped, model_fn=_linear, task=HalfSquaredError(), data=data).train(
        callbacks=[StopAfterEpoch(1)], verbose=False
    )
    resumed = build_run(stopped, model_fn=_linear, task=HalfSquaredError(), data=data)
    assert 0 < resumed.step < reference["steps"]
    assert resumed.train(verbose=False)["steps"] == reference["steps"]
    weights = [keras.models.load_model(f"{c.model_dir}/model.keras").get_weights() for c in (whole, stopped)]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(noise_scale_every=0), r"config.lr_gain='adascale' reads the noise scale's estimates"),
        (dict(optimizer="adam"), r"is SGD's gain \(sgd, momentum, nesterov\), not adam's"),
        (dict(batch_size=4), r"batch_size=4 is below it"),
        (dict(decay="step", decay_boundaries=(0.5,)), r"use decay cosine, linear, polynomial or constant, not step"),
        (dict(batch_schedule="adaptive", max_batch_size=128), r"leave batch_schedule fixed"),
    ],
)
def test_bad_adascale_configs_are_one_line(make_config, overrides, message):
    with pytest.raises(ValueError, match=message):
        _train(_config(make_config, **overrides))
