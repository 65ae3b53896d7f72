"""kbatch.diagnostics.bn_coupling: BN's gradient through batch statistics against the gradient with
them held fixed, both checked against backpropagation written out in NumPy for Dense -> BN -> Dense
(Ioffe & Szegedy 2015, section 3: per channel, the gradient through the statistics is
(g - mean(g) - x_hat mean(g x_hat)) / sigma, the fixed one g / sigma), ghost batches included;
batch 2, where the statistics pass back only eps / (sigma^2 + eps) of the difference; and the
trainer's action on a short run. Runs under both Keras backends (`components`)."""

import json
import pathlib

import keras
import numpy as np
import pytest

from kbatch.diagnostics import bn_coupling
from kbatch.layers import GhostBatchNormalization

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX
EPS = 1e-3


def _model(norm, inputs=3, channels=4, outputs=2):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(channels), norm, keras.layers.Dense(outputs)])
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=w.shape) if w.ndim == 2 else w for w in model.get_weights()])
    norm.gamma.assign(rng.uniform(0.5, 2.0, channels))
    norm.beta.assign(rng.normal(size=channels))
    return model


def _reference(weights, x, y, ghost):
    """Loss and the gradients (fixed statistics, batch statistics) of the mean squared error of
    Dense -> BN(eps, statistics per `ghost` consecutive examples) -> Dense, written out in float64."""
    w1, b1, gamma, beta, w2, b2 = [np.asarray(w, np.float64) for w in weights[:4] + weights[6:]]
    h = (x @ w1 + b1).reshape(-1, ghost, w1.shape[1])
    mean, variance = h.mean(axis=1, keepdims=True), h.var(axis=1, keepdims=True)
    sigma = np.sqrt(variance + EPS)
    x_hat = (h - mean) / sigma
    z = (gamma * x_hat + beta).reshape(len(x), -1)
    out = z @ w2 + b2
    d_out = 2 * (out - y) / out.size
    d_z = d_out @ w2.T
    d_x_hat = (d_z * gamma).reshape(h.shape)
    head = [(d_z * x_hat.reshape(z.shape)).sum(0), d_z.sum(0), z.T @ d_out, d_out.sum(0)]
    through = d_x_hat - d_x_hat.mean(axis=1, keepdims=True) - x_hat * (d_x_hat * x_hat).mean(axis=1, keepdims=True)
    gradients = []
    for d_h in (d_x_hat / sigma, through / sigma):
        d_h = d_h.reshape(len(x), -1)
        gradients.append([x.T @ d_h, d_h.sum(0), *head])
    return np.mean((out - y) ** 2), gradients[0], gradients[1]


@pytest.mark.parametrize(
    "batch, ghost",
    [(8, None), (2, None), (8, 4)],
    ids=["batch_norm", "batch_2", "ghost_batch_norm_of_4"],
)
def test_both_gradients_against_backpropagation_written_out(batch, ghost):
    if ghost:
        norm = GhostBatchNormalization(virtual_batch_size=ghost, epsilon=EPS)
    else:
        norm = keras.layers.BatchNormalization(epsilon=EPS)
    model = _model(norm)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(batch, 3)).astype("float32"), rng.normal(size=(batch, 2)).astype("float32")
    before = [np.array(w) for w in model.get_weights()]
    loss, g_batch, g_fixed = bn_coupling.gradient_pair(model, keras.losses.MeanSquaredError())(x, y)
    ref_loss, ref_fixed, ref_batch = _reference(before, x.astype(np.float64), y.astype(np.float64), ghost or batch)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for got, want in zip(g_fixed + g_batch, ref_fixed + ref_batch):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)
    assert not np.allclose(g_batch[0], g_fixed[0], atol=1e-3)  # the statistics' part, measured apart
    np.testing.assert_allclose(g_batch[1], 0, atol=1e-5)  # the mean is taken out: Dense's bias gets nothing
    ratio, cosine = bn_coupling.compare(g_batch, g_fixed)
    assert (ratio, cosine) == pytest.approx(bn_coupling.compare(ref_batch, ref_fixed), rel=1e-4)
    for was, now in zip(before, model.get_weights()):  # weights and moving statistics left alone
        np.testing.assert_array_equal(was, now)


def test_at_batch_2_the_statistics_pass_back_eps_over_sigma_squared_plus_eps():
    """One channel, examples x = +-1: x_hat = +-s with s^2 = sigma^2 / (sigma^2 + eps), and what
    reaches BN's input through the statistics is (1 - s^2) (g_1 - g_2) / 2 (+1, -1) / sigma_eps."""
    model = _model(keras.layers.BatchNormalization(epsilon=EPS), inputs=1, channels=1, outputs=1)
    x, y = np.array([[1.0], [-1.0]], "float32"), np.array([[3.0], [-2.0]], "float32")
    _, g_batch, g_fixed = bn_coupling.gradient_pair(model, keras.losses.MeanSquaredError())(x, y)
    w1, _, gamma, beta, _, _, w2, b2 = [float(np.ravel(w)[0]) for w in model.get_weights()]
    sigma_eps = np.sqrt(w1**2 + EPS)  # the batch's h = w1 x + b1 has variance w1^2
    x_hat = w1 * x[:, 0] / sigma_eps
    g = ((gamma * x_hat + beta) * w2 + b2 - y[:, 0]) * w2 * gamma  # d loss / d x_hat
    through = EPS / (w1**2 + EPS) * (g[0] - g[1]) / 2 * np.array([1.0, -1.0]) / sigma_eps
    assert g_fixed[0][0, 0] == pytest.approx(g @ x[:, 0] / sigma_eps, rel=1e-4)
    assert g_batch[0][0, 0] == pytest.approx(through @ x[:, 0], rel=1e-3)
    assert abs(g_batch[0][0, 0]) < 0.01 * abs(g_fixed[0][0, 0])


def test_a_model_without_batch_norm_is_one_line_and_unequal_forward_losses_are_refused(monkeypatch):
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.LayerNormalization()])
    with pytest.raises(ValueError, match=r"^model '.*' has no batch normalization layer \(.*\): there is no"):
        bn_coupling.coupling(plain, keras.losses.MeanSquaredError(), (np.ones((4, 3)), np.ones((4, 4))))
    model = _model(keras.layers.BatchNormalization())
    rng = np.random.default_rng(3)
    batch = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    result = bn_coupling.coupling(model, keras.losses.MeanSquaredError(), batch)
    assert 0 < result.ratio < 1 and 0 < result.cosine < 1 and result.loss > 0
    monkeypatch.setattr(keras.ops, "stop_gradient", lambda value: value * 1.01)  # fixed, but at other values
    with pytest.raises(RuntimeError, match=r"^the forward losses differ, .*: the statistics changed value\.$"):
        bn_coupling.coupling(model, keras.losses.MeanSquaredError(), batch)


def test_the_trainer_logs_it_at_every_evaluation(make_config):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    from kbatch.training import train

    config = make_config(bn_coupling_every=1, num_epochs=1, evals_per_epoch=2, batch_size=64, base_batch_size=64)
    train(config, verbose=False)
    with open(f"{config.model_dir}/result.json") as file:
        result = json.load(file)
    points = result["bn_coupling"]
    assert [p["step"] for p in points] == [e["step"] for e in result["history"]] and len(points) == 2
    assert all(
        p["examples"] == 64 and 0 < p["bn_gradient_ratio"] and -1 <= p["bn_gradient_cosine"] <= 1 for p in points
    )
    with open(f"{config.model_dir}/history.json") as file:
        assert json.load(file)["bn_coupling"] == points
    logged = {}  # TensorBoard's loader reads both backends' event files
    for path in pathlib.Path(config.model_dir, "diagnostics").glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                logged.setdefault(value.tag, {})[event.step] = float(make_ndarray(value.tensor))
    for tag in ("bn_gradient_ratio", "bn_gradient_cosine"):
        assert logged[tag] == pytest.approx({p["step"]: p[tag] for p in points}, rel=1e-6)
    refused = make_config(bn_coupling_every=1, norm="layer")
    with pytest.raises(ValueError, match=r"^config.bn_coupling_every=1: model .* has no batch normalization"):
        train(refused, verbose=False)
    assert not any(pathlib.Path(refused.model_dir).glob("*"))  # before anything is written
