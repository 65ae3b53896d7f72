"""The gradient noise scale (McCandlish et al. 2018): the two-batch-size estimates are exact on
expected norms, the averages are a ratio of averages that resumes where it stopped, and in
training (softmax regression at a vanishing learning rate, so the weights stay where the exact
answer is computed) B_simple lands within 10% of tr(Sigma) / |G|^2 computed with NumPy from the
per-example gradients over the whole training set: on one device (the two halves of each batch),
on cpu:4 (the replicas' batches), and on the JAX backend with 4 host devices."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from smooth_model import linear_model

from kbatch.data import numpy_source
from kbatch.diagnostics import NoiseScale, unbiased_estimates
from kbatch.training import train

HERE = pathlib.Path(__file__).resolve().parent
NOISE = dict(
    base_learning_rate=1e-12,
    num_epochs=12,
    noise_scale_every=25,
    noise_scale_decay=0.995,
    warmup_epochs=0.0,
    weight_decay=0.0,
)


def test_the_estimates_are_exact_on_expected_norms():
    gradient_sq, trace = 0.37, 41.0
    expected = {b: gradient_sq + trace / b for b in (16, 64, 256)}  # E|G_B|^2 = |G|^2 + tr(Sigma) / B
    for small, big in ((16, 64), (64, 256), (16, 256)):
        got = unbiased_estimates(expected[small], expected[big], small, big)
        np.testing.assert_allclose(got, (gradient_sq, trace), rtol=1e-12)
    with pytest.raises(ValueError, match=r"b_small=64, b_big=64: must be 0 < b_small < b_big\."):
        unbiased_estimates(1.0, 1.0, 64, 64)


def test_b_simple_is_the_ratio_of_the_averages_and_resumes_exactly():
    rng = np.random.default_rng(0)
    pairs = [(1.0 + rng.uniform(), 0.2 + 0.5 * rng.uniform()) for _ in range(50)]
    whole, first = NoiseScale(0.9), NoiseScale(0.9)
    for small_sq, big_sq in pairs:
        whole.update(small_sq, big_sq, 32, 128)
    for small_sq, big_sq in pairs[:20]:
        first.update(small_sq, big_sq, 32, 128)
    resumed = NoiseScale(0.9, state=json.loads(json.dumps(first.state())))
    for small_sq, big_sq in pairs[20:]:
        resumed.update(small_sq, big_sq, 32, 128)
    assert resumed.simple == whole.simple
    estimates = np.array([unbiased_estimates(s, b, 32, 128) for s, b in pairs])
    weights = 0.9 ** np.arange(len(pairs))[::-1]
    gradient_sq, trace = (weights @ estimates) / weights.sum()
    assert whole.simple == pytest.approx(trace / gradient_sq, rel=1e-9)
    assert whole.simple != pytest.approx(np.mean(estimates[:, 1] / estimates[:, 0]), rel=1e-3)


def exact_b_simple(weights):
    """tr(Sigma) / |G|^2 of softmax regression at `weights` over mnist1d/original's training set:
    example i's gradient is (x_i, 1) outer (softmax(x_i W + b) - onehot(y_i))."""
    kernel, bias = weights
    x, y, _, _ = numpy_source._arrays("mnist1d/original")
    x = x.reshape(len(x), -1).astype(np.float64)
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    residual = p - np.eye(10)[y]
    per_example = np.concatenate([np.einsum("ni,nj->nij", x, residual).reshape(len(x), -1), residual], axis=1)
    mean = per_example.mean(axis=0)
    trace = (per_example**2).sum(axis=1).mean() - mean @ mean
    return trace / (mean @ mean)


def _check_against_the_exact_answer(model_dir, result):
    points = result["noise_scale"]
    assert [p["step"] for p in points] == list(range(25, result["steps"] + 1, 25))
    model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
    exact = exact_b_simple([w.numpy() if hasattr(w, "numpy") else w for w in model.get_weights()])
    last = points[-1]
    assert last["b_simple"] == pytest.approx(exact, rel=0.10), (last, exact)
    assert last["temperature"] == pytest.approx(1e-12 / 128, rel=1e-3)
    assert last["batch_over_b_simple"] == pytest.approx(128 / last["b_simple"], rel=1e-9)


@pytest.mark.parametrize("strategy", ["one_device", "cpu:4"])
def test_b_simple_in_training_matches_the_closed_form(make_config, strategy):
    config = make_config(strategy=strategy, **NOISE)
    result = train(config, model_fn=linear_model, verbose=False)
    assert result["steps"] >= 300
    _check_against_the_exact_answer(config.model_dir, result)


def test_b_simple_on_jax_with_4_devices_matches_the_closed_form(tmp_path):
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    overrides = {**NOISE, "model_fn": "linear", "deterministic": True}
    run = subprocess.run(
        [sys.executable, str(HERE / "jax_worker.py"), "train", str(tmp_path / "run"), json.dumps(overrides)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["num_replicas"] == 4
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    _check_against_the_exact_answer(tmp_path / "run", result)


def test_the_critical_batch_fit_recovers_mcCandlish_curve():
    from kbatch.diagnostics import fit_critical_batch

    s_min, e_min = 120.0, 60_000.0
    batches = np.array([32, 64, 256, 1024, 4096])
    steps = s_min + e_min / batches  # (S / S_min - 1)(E / E_min - 1) = 1 with E = B S
    np.testing.assert_allclose(((steps / s_min) - 1) * ((batches * steps / e_min) - 1), 1.0)
    fit = fit_critical_batch(batches, steps)
    assert fit.s_min == pytest.approx(s_min) and fit.e_min == pytest.approx(e_min)
    assert fit.b_crit == pytest.approx(500.0)
    with pytest.raises(ValueError, match=r"need steps at two or more batch sizes"):
        fit_critical_batch([64, 64], [10, 12])


def test_the_critical_batch_fit_weighs_every_batch_alike_and_keeps_s_min_nonnegative():
    """10% noise on every point: absolute least squares lets the smallest batches set S_min
    (np.polyfit gives 16 for a true 50); relative errors recover it. A curve that falls as 1/B
    throughout has S_min 0 (the constrained optimum, not a negative value) and no critical batch."""
    from kbatch.diagnostics import fit_critical_batch

    batches = 32.0 * 2 ** np.arange(8)  # 32 ... 4096
    noise = np.where(np.arange(8) % 2 == 0, 1.1, 0.9)
    steps = (50.0 + 100_000.0 / batches) * noise
    assert np.polyfit(1.0 / batches, steps, 1)[1] < 20  # the absolute fit, for contrast
    fit = fit_critical_batch(batches, steps)
    assert fit.s_min == pytest.approx(50.0, rel=0.1) and fit.b_crit == pytest.approx(2_000.0, rel=0.1)
    falling = fit_critical_batch(batches, 100_000.0 / batches * noise)
    a = 1.0 / (batches * 100_000.0 / batches * noise)  # the 1/B column over the steps
    assert falling.s_min == 0.0 and falling.b_crit == float("inf")
    assert falling.e_min == pytest.approx(a.sum() / (a**2).sum())  # least squares of the one term
