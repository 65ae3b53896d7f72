"""Warmup and PhasedSchedule as Keras schedules: warmup's shape against its definition and against
Keras's own CosineDecay warmup, int and float steps compiled (tf.function and XLA, or jax.jit), serialization,
a saved .keras model's optimizer, and subclassing."""

import keras
import numpy as np
import pytest
from backend_ops import COMPILE_MODES, STEP_DTYPES, compiled
from hypothesis import given, settings
from hypothesis import strategies as st

from kbatch import schedules

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

FAST = settings(max_examples=50, deadline=None)
Cosine = keras.optimizers.schedules.CosineDecay
Polynomial = keras.optimizers.schedules.PolynomialDecay


def values(schedule, steps):
    """The schedule at every step, evaluated one scalar step at a time."""
    return np.array([float(schedule(keras.ops.convert_to_tensor(s, "float32"))) for s in steps])


def vector_values(schedule, steps):
    """The schedule at every step in one call (kbatch's schedules are elementwise)."""
    return np.asarray(schedule(keras.ops.convert_to_tensor(np.asarray(steps, np.float32))))


afters = st.one_of(
    st.floats(0.01, 2.0),
    st.builds(
        lambda lr, end, n: Polynomial(lr, n, end_learning_rate=lr + end),  # increasing
        st.floats(0.01, 1.0),
        st.floats(0.0, 1.0),
        st.integers(1, 500),
    ),
)


@FAST
@given(after=afters, warmup=st.integers(1, 300), initial=st.floats(0.0, 0.01), offset=st.booleans())
def test_warmup_is_monotone_continuous_and_reaches_after_exactly(after, warmup, initial, offset):
    schedule = schedules.Warmup(after, warmup, initial_learning_rate=initial, offset=offset)
    after_at = (lambda s: float(after(s))) if callable(after) else (lambda s: after)
    steps = np.arange(0, 2 * warmup + 5)
    lr = vector_values(schedule, steps)
    assert lr[0] == pytest.approx(initial, abs=1e-7)
    assert np.all(np.diff(lr) >= -1e-6)  # monotone
    target = after_at(0 if offset else warmup)
    assert lr[warmup] == pytest.approx(target, rel=1e-6)  # reaches `after`
    just_before = float(schedule(keras.ops.convert_to_tensor(warmup - 1e-3)))
    assert just_before == pytest.approx(target, abs=1e-3 * abs(target - initial) / warmup + 1e-6)
    # The ramp is the straight line from `initial` to the target.
    ramp = initial + steps[:warmup] / warmup * (target - initial)
    np.testing.assert_allclose(lr[:warmup], ramp, rtol=1e-5, atol=1e-7)
    # After warmup `after` is indexed from the end of warmup (offset) or from step 0.
    later = steps[warmup:]
    expected = vector_values(after, later - warmup if offset else later) if callable(after) else after
    np.testing.assert_allclose(lr[warmup:], expected, rtol=1e-5)


def test_warmup_around_cosine_equals_keras_cosine_with_warmup():
    ours = schedules.Warmup(Cosine(0.4, decay_steps=900), warmup_steps=100)
    keras_own = Cosine(0.0, decay_steps=900, warmup_target=0.4, warmup_steps=100)
    steps = np.arange(0, 1100, 7)
    np.testing.assert_allclose(values(ours, steps), values(keras_own, steps), rtol=1e-5, atol=1e-7)


def test_zero_warmup_is_after_itself():
    cosine = Cosine(0.1, 50)
    np.testing.assert_allclose(values(schedules.Warmup(cosine, 0), range(60)), values(cosine, range(60)))


BATCH = schedules.BatchSizeSchedule.from_step_decay(0.2, 64, [2, 4, 5.5], factor=4, max_batch_size=2048)
PHASED_WARMUP = schedules.PhasedSchedule(BATCH, 3000, schedules.Warmup(1.0, 0.5, offset=False))
PHASED_COSINE = schedules.PhasedSchedule(256, 3000, schedules.Warmup(Cosine(0.3, 7.0), 1.0))


def all_schedules():
    return [
        schedules.Warmup(Cosine(0.4, 90), 10),
        schedules.Warmup(0.1, 5, 0.01, offset=False),
        PHASED_WARMUP,
        PHASED_COSINE,
    ]


@pytest.mark.parametrize("schedule", all_schedules(), ids=lambda s: type(s).__name__)
def test_int_and_float_steps_compiled(schedule):
    """tf.function with and without XLA on TensorFlow, jax.jit on JAX; int and float steps."""
    steps = [0, 1, 3, 10, 46, 47, 93, 94, 95, 200]
    eager = values(schedule, steps)
    for mode in COMPILE_MODES[1:]:
        compiled_schedule = compiled(lambda s: schedule(s), mode)
        for dtype in STEP_DTYPES:
            got = [float(compiled_schedule(keras.ops.convert_to_tensor(s, dtype))) for s in steps]
            np.testing.assert_allclose(got, eager, rtol=1e-6, atol=1e-7, err_msg=f"{mode} {dtype}")
    # An optimizer's own step variable, as the trainer passes it.
    iterations = keras.Variable(94, dtype=STEP_DTYPES[-2])
    got = float(compiled(lambda: schedule(iterations), COMPILE_MODES[-1])())
    assert got == pytest.approx(eager[7], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("schedule", all_schedules(), ids=lambda s: type(s).__name__)
def test_serialize_round_trip(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(schedule)
    assert keras.saving.serialize_keras_object(restored) == config
    steps = range(0, 150, 3)
    np.testing.assert_allclose(values(restored, steps), values(schedule, steps))


def optimizer_rates(optimizer, steps):
    rates = []
    for s in steps:
        optimizer.iterations.assign(s)
        rates.append(float(optimizer.learning_rate))
    return np.array(rates)


@pytest.mark.parametrize("schedule", all_schedules(), ids=lambda s: type(s).__name__)
def test_saved_model_optimizer_keeps_the_schedule(schedule, tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=0.9), loss="mse")
    model.fit(np.ones((8, 3)), np.ones((8, 1)), verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    saved = loaded.optimizer.get_config()["learning_rate"]
    assert saved["registered_name"] == f"kbatch>{type(schedule).__name__}"
    steps = [0, 2, 9, 47, 94, 120]
    np.testing.assert_allclose(optimizer_rates(loaded.optimizer, steps), values(schedule, steps), rtol=1e-6)


@keras.saving.register_keras_serializable(package="kbatch_test")
class ScaledWarmup(schedules.Warmup):
    """A user's subclass: the warmup schedule times a constant."""

    def __init__(self, after, warmup_steps, scale=1.0, **kwargs):
        super().__init__(after, warmup_steps, **kwargs)
        self.scale = scale

    def __call__(self, step):
        return self.scale * super().__call__(step)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def test_subclass_round_trips_through_a_saved_model(tmp_path):
    schedule = ScaledWarmup(Cosine(0.2, 50), 10, scale=0.5)
    steps = np.arange(0, 70, 5)
    base = values(schedules.Warmup(Cosine(0.2, 50), 10), steps)
    np.testing.assert_allclose(values(schedule, steps), 0.5 * base, rtol=1e-6)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    path = str(tmp_path / "sub.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.optimizer.get_config()["learning_rate"]["registered_name"] == "kbatch_test>ScaledWarmup"
    np.testing.assert_allclose(optimizer_rates(loaded.optimizer, steps), 0.5 * base, rtol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: schedules.Warmup(0.1, -1), "warmup_steps=-1: must be a finite number >= 0"),
        (lambda: schedules.Warmup(0.1, float("nan")), "warmup_steps=nan: must be a finite number >= 0"),
        (
            lambda: schedules.Warmup(0.1, 10, initial_learning_rate=-0.1),
            "initial_learning_rate=-0.1: must be a finite number >= 0",
        ),
        (lambda: schedules.Warmup("cosine", 10), "after='cosine': must be a finite number >= 0"),
        (lambda: schedules.Warmup(float("inf"), 10), "after=inf: must be a finite number >= 0"),
        (lambda: schedules.PhasedSchedule(BATCH, 0), "num_examples=0: must be a positive integer"),
        (
            lambda: schedules.PhasedSchedule([64, 128], 100),
            r"batch_schedule=\[64, 128\]: must be a BatchSizeSchedule or a positive integer",
        ),
        (lambda: schedules.PhasedSchedule(-64, 100), "batch_schedule=-64: must be a positive integer"),
        (
            lambda: schedules.PhasedSchedule(64, 100, epoch_schedule=-1.0),
            "epoch_schedule=-1.0: must be a finite number >= 0",
        ),
    ],
)
def test_bad_input_is_a_value_error_naming_the_argument_and_the_allowed_values(call, message):
    with pytest.raises(ValueError, match=message):
        call()
