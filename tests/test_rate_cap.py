"""config.stability_cap (the capped staleness rule): the cap is c x heavy ball's delayed stability
limit over the measured sharpness, by the closed forms (2 + 2m at no delay, 1 - m at one update
late, 2 sin(pi / 10) at two without momentum); in a run every update's rate is the planned one
bounded by the cap the last measurement set; at a rate twenty times too high the cap keeps the
loss near where it starts, which the plan's rate blows up; a resumed run ends with the
uninterrupted run's weights, bit for bit; bad configs are one line."""

import math

import keras
import numpy as np
import pytest
from conftest import small_config
from smooth_model import linear_model
from test_adaptive_batch import StopAfterEpoch

from kbatch.training import Action, build_run, train
from kbatch.training.rate_cap import cap_value

pytestmark = pytest.mark.components  # CI runs them again under KERAS_BACKEND=jax

CAPPED = dict(
    batch_size=128,
    base_batch_size=128,
    base_learning_rate=1.0,
    optimizer="momentum",
    momentum=0.9,
    staleness=1,
    num_epochs=2,
    warmup_epochs=0.5,
    evals_per_epoch=2,
    sharpness_every=1,
    stability_cap=0.5,
    norm="none",
)


class Rates(Action):
    """Every update's rate, the planned schedule, and the cap at the start."""

    def begin(self, run):
        self.start_cap = float(run.rate_cap.numpy())
        self.planned = run.recipe.learning_rate_schedule(run.info.num_train_examples)
        self.rates = []

    def after_loop(self, run, loop):
        self.rates.extend(loop.records["learning_rate"])


@pytest.mark.fast
def test_the_cap_is_c_times_the_closed_form_limit_over_the_sharpness():
    assert cap_value(0.5, 10.0, 0.9, 0) == pytest.approx(0.5 * 3.8 / 10)
    assert cap_value(0.5, 10.0, 0.9, 1) == pytest.approx(0.5 * 0.1 / 10)  # z^2 - (1 + m) z + m + a: a* = 1 - m
    assert cap_value(1.0, 4.0, 0.0, 2) == pytest.approx(2 * math.sin(math.pi / 10) / 4)  # Levin & May 1976
    assert cap_value(0.5, -3.0, 0.9, 1) == cap_value(0.5, float("nan"), 0.9, 1) == math.inf  # no quadratic limit


def test_each_rate_is_the_plan_bounded_by_the_last_measured_cap(tmp_path):
    rates = Rates()
    result = train(small_config(tmp_path / "capped", **CAPPED), model_fn=linear_model, actions=[rates], verbose=False)
    points = result["sharpness"]
    assert len(points) == 4 and all(
        p["rate_cap"] == pytest.approx(0.5 * 0.1 / p["sharpness"], rel=1e-6) for p in points
    )
    caps, step = [rates.start_cap], 0
    for point in points:  # the cap in force at each update: the last set at or before it
        caps += [caps[-1]] * (point["step"] - step - 1) + [point["rate_cap"]]
        step = point["step"]
    planned = np.array([float(rates.planned(t)) for t in range(len(rates.rates))])
    np.testing.assert_allclose(rates.rates, np.minimum(planned, caps[: len(rates.rates)]), rtol=1e-6)
    assert np.mean(np.array(rates.rates) < planned) > 0.5  # the cap bound most updates
    assert result["final_eval_accuracy"] > 0.2  # it learned (chance: 0.1), finite


def test_at_a_rate_twenty_times_too_high_the_cap_keeps_the_loss_where_the_plan_blows_it_up(tmp_path):
    """One update late with momentum 0.9, rate 20: uncapped, softmax regression's logits run away
    (eval loss ~200, as the sharpness collapses: no NaN, just saturation); capped, about 1.8."""
    runs = {
        cap: small_config(tmp_path / str(cap), **{**CAPPED, "base_learning_rate": 20.0, "stability_cap": cap})
        for cap in (0.0, 0.5)
    }
    loss = {cap: train(config, model_fn=linear_model, verbose=False)["final_eval_loss"] for cap, config in runs.items()}
    assert loss[0.5] < 3 < 50 < loss[0.0]


def test_a_resumed_capped_run_ends_with_the_uninterrupted_weights(tmp_path):
    whole, stopped = (small_config(tmp_path / name, **CAPPED) for name in ("whole", "stopped"))
    train(whole, model_fn=linear_model, verbose=False)
    build_run(stopped, model_fn=linear_model).train(callbacks=[StopAfterEpoch(1)], verbose=False)
    resumed = build_run(stopped, model_fn=linear_model)
    assert resumed.step > 0
    resumed.train(verbose=False)
    weights = [keras.models.load_model(f"{c.model_dir}/model.keras").get_weights() for c in (whole, stopped)]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(sharpness_every=0), r"config.stability_cap=0.5 caps the rate at the measured sharpness: set"),
        (dict(optimizer="adam"), r"is heavy ball's limit \(sgd, momentum without nesterov\), not adam's"),
        (dict(nesterov=True), r"not momentum's"),
    ],
)
def test_bad_capped_configs_are_one_line(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train(small_config(tmp_path / "bad", **{**CAPPED, **overrides}), model_fn=linear_model, verbose=False)
