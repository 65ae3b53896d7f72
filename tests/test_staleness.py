"""Exact staleness (`config.staleness = tau`, kbatch.training.transforms.delay_line): update t applies the
gradient computed at update t - tau on the weights of that time (Lian et al. 2015's delayed SGD),
zero for the first tau updates; checked on softmax regression against its gradient in closed form,
on both backends (`components`: CI runs this file on JAX) and on two replicas; tau = 0
is the synchronous run bit for bit; the delay line is checkpointed, so a resumed run goes on
exactly."""

import os

import keras
import numpy as np
import pytest
from smooth_model import linear_model

import kbatch
from kbatch.training import Classification
from kbatch.training.transforms import Chain, DelayLine, Geometry
from kbatch.training.transforms import delay_line as staleness

pytestmark = pytest.mark.components  # CI runs them again under KERAS_BACKEND=jax

BATCH, STEPS, FEATURES, CLASSES, LR = 32, 9, 6, 4, 0.5


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(STEPS, BATCH, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=(STEPS, BATCH)).astype(np.int32)
    w = (0.3 * rng.normal(size=(FEATURES, CLASSES))).astype(np.float32)
    b = (0.1 * rng.normal(size=CLASSES)).astype(np.float32)
    return x, y, w, b


def _gradient(w, b, x, y):
    """The gradient of the mean softmax cross-entropy in (w, b): X^T (softmax(XW + b) - Y) / B."""
    logits = x.astype(np.float64) @ w + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    return x.T @ p / len(y), p.sum(axis=0) / len(y)


def delayed_sgd(tau):
    """w_{t+1} = w_t - lr g(w_{t-tau}; batch t-tau), g = 0 before the first update."""
    x, y, w, b = _data()
    w, b, computed = w.astype(np.float64), b.astype(np.float64), []
    for t in range(STEPS):
        computed.append(_gradient(w, b, x[t], y[t]))
        if t >= tau:
            gw, gb = computed[t - tau]
            w, b = w - LR * gw, b - LR * gb
    return w, b


def _model_and_optimizer():
    x, y, w, b = _data()
    model = linear_model(type("Info", (), {"input_shape": (FEATURES,), "num_classes": CLASSES})())
    model.set_weights([w, b])
    optimizer = keras.optimizers.SGD(LR)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _train_tensorflow(tau, strategy_name):
    import tensorflow as tf

    from kbatch import distribute
    from kbatch.training.backends import tf_step

    strategy = distribute.resolve_strategy(strategy_name)
    with strategy.scope():
        model, optimizer = _model_and_optimizer()
        chain = Chain([DelayLine(tau)] if tau else []).build(optimizer, model.trainable_variables)
    step = tf_step.make_train_step(strategy, model, optimizer, Classification(), chain, Geometry(BATCH))
    x, y, _, _ = _data()
    batches = tf.data.Dataset.from_tensor_slices((x, y))
    tf_step.make_train_loop(strategy, step)(iter(strategy.experimental_distribute_dataset(batches)), tf.constant(STEPS))
    return model.get_weights()


def _train_jax(tau):
    from kbatch.training.backends import jax_step

    model, optimizer = _model_and_optimizer()
    chain = Chain([DelayLine(tau)] if tau else []).build(optimizer, model.trainable_variables)
    step = jax_step.make_train_step(model, optimizer, Classification(), chain, Geometry(BATCH))
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    x, y, _, _ = _data()
    for t in range(STEPS):
        state, _ = step(state, x[t], y[t])
    return [np.asarray(v) for v in state[0]]


def _train(tau, strategy_name="one_device"):
    if keras.backend.backend() == "jax":
        return _train_jax(tau)
    return _train_tensorflow(tau, strategy_name)


@pytest.mark.parametrize("tau", [0, 1, 3])
def test_each_update_applies_the_gradient_of_the_weights_tau_updates_earlier(tau):
    w, b = delayed_sgd(tau)
    got_w, got_b = _train(tau)
    np.testing.assert_allclose(got_w, w, atol=2e-6)
    np.testing.assert_allclose(got_b, b, atol=2e-6)
    other_w, _ = delayed_sgd(tau + 1)
    assert np.abs(other_w - w).max() > 1e-3  # a delay of one more update is a different run


@pytest.mark.tensorflow_only
def test_on_two_replicas_the_delayed_gradient_is_the_global_one():
    w, b = delayed_sgd(2)
    got_w, got_b = _train(2, "cpu:2")
    np.testing.assert_allclose(got_w, w, atol=2e-6)
    np.testing.assert_allclose(got_b, b, atol=2e-6)


def test_the_delay_line_is_a_ring_of_tau_slots():
    line = [np.zeros((3, 2), np.float32)]
    applied_total = []
    for t in range(7):
        applied, line = staleness.delay([np.full(2, t + 1.0, np.float32)], line, t)
        line = [np.asarray(v) for v in line]
        applied_total.append(float(np.asarray(applied[0])[0]))
    assert applied_total == [0, 0, 0, 1, 2, 3, 4]  # g_{t-3}, zero while the line fills


def test_staleness_zero_is_the_synchronous_run_bit_for_bit_and_one_is_not(make_config):
    def weights(**fields):
        config = make_config(num_epochs=1, **fields)
        kbatch.training.train(config)
        return keras.models.load_model(os.path.join(config.model_dir, "model.keras")).get_weights()

    synchronous, zero, one = weights(), weights(staleness=0), weights(staleness=1)
    assert all(np.array_equal(a, b) for a, b in zip(synchronous, zero))
    assert any(not np.array_equal(a, b) for a, b in zip(synchronous, one))


class _Crash(kbatch.training.Action):
    """Dies after the loop that ends at update 20 (its checkpoint, every 5 updates, is written)."""

    def after_loop(self, run, loop):
        if run.step >= 20:
            raise RuntimeError("crashed at update 20")


def test_a_resumed_run_goes_on_with_the_delay_line_it_saved(make_config):
    config = make_config(staleness=3, checkpoint_every=5)
    kbatch.training.train(config)
    whole = keras.models.load_model(os.path.join(config.model_dir, "model.keras")).get_weights()

    resumed = make_config(staleness=3, checkpoint_every=5)
    with pytest.raises(RuntimeError, match="crashed at update 20"):
        kbatch.training.train(resumed, actions=[_Crash()])
    kbatch.training.train(resumed)  # restores update 20, the delay line with it
    again = keras.models.load_model(os.path.join(resumed.model_dir, "model.keras")).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(whole, again))


def test_staleness_is_refused_with_float16_loss_scaling(make_config):
    from kbatch.training.config import schema

    with pytest.raises(ValueError, match=r"config.staleness=2: .*loss scale"):
        schema.resolve(make_config(staleness=2, mixed_precision="mixed_float16"))
    with pytest.raises(ValueError, match=r"config.staleness=-1"):
        schema.resolve(make_config(staleness=-1))
