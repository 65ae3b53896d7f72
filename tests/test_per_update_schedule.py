"""`PerUpdate` under Keras's own `gradient_accumulation_steps`: in `model.fit`, the learning rate each
update applies (read off the weights) is the schedule's NumPy formula at the update count, not at the
micro-step count Keras feeds schedules; `kbatch.optimizers.build` wraps a schedule in it; it
round-trips through a `.keras` file."""

import math

import keras
import numpy as np
import pytest

import kbatch
from kbatch.schedules import PerUpdate, Warmup

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

K = 3  # micro-batches per update
UPDATES = 8
PEAK, WARMUP, DECAY = 0.4, 3, 4


def warmup_cosine_formula(m):
    """Goyal et al.'s linear warmup to PEAK over WARMUP updates, then a cosine decay to 0 over DECAY."""
    if m < WARMUP:
        return PEAK * m / WARMUP
    return PEAK * 0.5 * (1 + math.cos(math.pi * min(m - WARMUP, DECAY) / DECAY))


def piecewise_formula(m):
    return 0.3 if m <= 2 else 0.2 if m <= 5 else 0.05


SCHEDULES = {
    "warmup_cosine": (
        lambda: Warmup(keras.optimizers.schedules.CosineDecay(PEAK, DECAY), WARMUP),
        warmup_cosine_formula,
    ),
    "keras_piecewise": (
        lambda: keras.optimizers.schedules.PiecewiseConstantDecay([2, 5], [0.3, 0.2, 0.05]),
        piecewise_formula,
    ),
}


class WeightRecorder(keras.callbacks.Callback):
    """The single weight after every micro-batch (on JAX, fit keeps the state apart until synced)."""

    def on_train_begin(self, logs=None):
        self.weights = [float(self.model.get_weights()[0].item())]

    def on_train_batch_end(self, batch, logs=None):
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()
        self.weights.append(float(self.model.get_weights()[0].item()))


def applied_rates(optimizer):
    """The rate each micro-step applied in `fit`: for w' = w - lr * mean(x) with x = 1 the loss
    mean(w x) has gradient 1 at every step, so each weight change is minus the rate used."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=optimizer, loss=lambda y_true, y_pred: keras.ops.mean(y_pred))
    recorder = WeightRecorder()
    x = np.ones((2 * K * UPDATES, 1), "float32")
    model.fit(x, x, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
    return -np.diff(recorder.weights)


def micro_step_rates(rate_at_update):
    """0 on the micro-steps that only accumulate, rate_at_update(m) on the last micro-step of update m."""
    return np.array([rate_at_update(i // K) if i % K == K - 1 else 0.0 for i in range(K * UPDATES)])


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_each_accumulated_update_applies_the_schedule_at_the_update_count(schedule):
    make, formula = SCHEDULES[schedule]
    optimizer = kbatch.optimizers.build("sgd", make(), gradient_accumulation_steps=K)
    assert isinstance(optimizer._learning_rate, PerUpdate)
    np.testing.assert_allclose(applied_rates(optimizer), micro_step_rates(formula), atol=1e-6)


def test_keras_alone_reads_the_schedule_at_the_micro_step_count():
    """Why `PerUpdate` exists: Keras's own accumulation applies schedule(micro-step), so the warmup
    ends K times early (update m uses the schedule at m K + K - 1)."""
    optimizer = keras.optimizers.SGD(SCHEDULES["warmup_cosine"][0](), gradient_accumulation_steps=K)
    rates = applied_rates(optimizer)
    np.testing.assert_allclose(rates, micro_step_rates(lambda m: warmup_cosine_formula(m * K + K - 1)), atol=1e-6)
    assert not np.allclose(rates, micro_step_rates(warmup_cosine_formula), atol=1e-3)


def test_a_compiled_model_with_it_round_trips_through_a_keras_file(tmp_path):
    schedule = Warmup(keras.optimizers.schedules.CosineDecay(PEAK, DECAY), WARMUP)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=kbatch.optimizers.build("momentum", schedule, gradient_accumulation_steps=K), loss="mse")
    x = np.linspace(-1, 1, 2 * K * 4, dtype="float32").reshape(-1, 2)
    model.fit(x, x[:, :1], batch_size=2, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    restored = loaded.optimizer._learning_rate
    assert isinstance(restored, PerUpdate) and restored.get_config() == model.optimizer._learning_rate.get_config()
    assert int(loaded.optimizer._iterations) == int(model.optimizer._iterations) == 2 * K
    assert float(loaded.optimizer.learning_rate) == pytest.approx(warmup_cosine_formula(2), rel=1e-6)
    steps = np.arange(40)
    np.testing.assert_allclose(
        [float(restored(s)) for s in steps], [warmup_cosine_formula(s // K) for s in steps], rtol=1e-6, atol=1e-7
    )


def test_build_wraps_only_schedules_and_only_once():
    schedule = PerUpdate(keras.optimizers.schedules.CosineDecay(0.1, 10), K)
    assert kbatch.optimizers.build("sgd", schedule, gradient_accumulation_steps=K)._learning_rate is schedule
    assert float(kbatch.optimizers.build("sgd", 0.1, gradient_accumulation_steps=K).learning_rate) == pytest.approx(0.1)
    cosine = keras.optimizers.schedules.CosineDecay(0.1, 10)
    assert kbatch.optimizers.build("sgd", cosine)._learning_rate is cosine  # no accumulation: read as given


@pytest.mark.parametrize(
    "schedule, steps, field",
    [(0.1, K, "schedule"), (keras.optimizers.schedules.CosineDecay(0.1, 10), 0, "gradient_accumulation_steps")],
)
def test_bad_arguments_name_the_field(schedule, steps, field):
    with pytest.raises(ValueError, match=field):
        PerUpdate(schedule, steps)
