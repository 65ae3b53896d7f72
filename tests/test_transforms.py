"""The gradient transforms (`kbatch.training.transforms`), each against a NumPy transcription of
its rule, eagerly and compiled as this backend compiles (`components`: CI runs this
file on JAX too); the chain applies them in order, a later one reading an earlier one's record,
and keeps their state as optimizer variables."""

import types

import keras
import numpy as np
import pytest
from backend_ops import COMPILE_MODES, compiled

from kbatch.diagnostics import noise_scale
from kbatch.training import transforms
from kbatch.training.transforms import spike_guard

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

GRADS = [np.array([[3.0, 0.0], [0.0, 4.0]], np.float32), np.array([12.0], np.float32)]  # global norm 13


def _optimizer():
    variables = [keras.Variable(np.zeros_like(g)) for g in GRADS]
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(variables)
    return optimizer, variables


def _context(optimizer, batch=8, parts=1, sums=None, part_sq=None):
    context = transforms.Context(
        optimizer, transforms.Geometry(batch), parts, values=[(v, v.value) for v in optimizer.variables]
    )
    context.took(sums or {}, part_sq)
    return context


def _apply(transform, context, mode, state=None):
    """(grads, state, record) of `transform` on GRADS, as NumPy."""

    def run(grads, state):
        return transform.apply(grads, state, context)

    state = list(state or [context.read(v) for v in transform.variables])
    grads, state, record = compiled(run, mode)(list(GRADS), state)
    as_numpy = lambda values: [np.asarray(keras.ops.convert_to_numpy(v)) for v in values]  # noqa: E731
    return as_numpy(grads), as_numpy(state), {k: float(keras.ops.convert_to_numpy(v)) for k, v in record.items()}


@pytest.mark.parametrize("mode", COMPILE_MODES)
def test_the_global_norm_is_recorded_and_the_gradients_pass(mode):
    optimizer, _ = _optimizer()
    grads, _, record = _apply(transforms.GlobalNorm(), _context(optimizer), mode)
    assert record["grad_norm"] == pytest.approx(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in GRADS)))
    for got, want in zip(grads, GRADS):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", COMPILE_MODES)
@pytest.mark.parametrize("clip", [6.5, 13.0, 26.0])
def test_clipping_scales_by_min_of_one_and_clip_over_the_norm(mode, clip):
    optimizer, _ = _optimizer()
    context = _context(optimizer)
    context.record = {"grad_norm": keras.ops.convert_to_tensor(13.0)}
    grads, _, record = _apply(transforms.ClipByGlobalNorm(clip), context, mode)
    assert record == {}
    for got, want in zip(grads, GRADS):
        np.testing.assert_allclose(got, want * min(1.0, clip / 13.0), rtol=1e-6)


def _guard_reference(loss, mean, square, count, k):
    """The guard's rule for one update, in float64: (factor, new statistics)."""
    std = np.sqrt(max(square - mean * mean, 0.0))
    z = (loss - mean) / max(std, 1e-12)
    spike = count >= spike_guard.WARMUP and z > k
    taken = mean + k * std if spike else loss
    d = spike_guard.DECAY
    new = (taken, taken * taken) if count == 0 else (d * mean + (1 - d) * taken, d * square + (1 - d) * taken * taken)
    return (k / z if spike else 1.0), [*new, count + 1]


@pytest.mark.parametrize("mode", COMPILE_MODES)
@pytest.mark.parametrize("mean_loss, count", [(2.0, 25), (1.05, 25), (2.0, 3), (2.0, 0)])
def test_the_spike_guard_scales_a_spike_by_k_over_z(mode, mean_loss, count):
    optimizer, variables = _optimizer()
    guard = transforms.SpikeGuard(3.0)
    guard.build(optimizer, variables)
    assert [v.name for v in guard.variables] == list(spike_guard.NAMES)
    state = [np.float32(1.0), np.float32(1.01), np.float32(count)]  # mean 1, std 0.1
    context = _context(optimizer, batch=8, sums={"loss": keras.ops.convert_to_tensor(np.float32(8 * mean_loss))})
    grads, new, record = _apply(guard, context, mode, state)
    factor, want = _guard_reference(mean_loss, 1.0, 1.01, count, 3.0)
    assert record["spike_factor"] == pytest.approx(factor, rel=1e-4)
    np.testing.assert_allclose([float(v) for v in new], want, rtol=1e-4)
    for got, g in zip(grads, GRADS):
        np.testing.assert_allclose(got, g * factor, rtol=1e-4)


def test_the_delay_line_applies_the_gradient_of_tau_updates_ago():
    optimizer, variables = _optimizer()
    line = transforms.DelayLine(2)
    line.build(optimizer, variables)
    assert [tuple(v.shape) for v in line.variables] == [(2, 2, 2), (2, 1)]
    state, applied = [v.value for v in line.variables], []
    for t in range(5):
        context = _context(optimizer)
        context.values[id(optimizer.iterations)] = keras.ops.convert_to_tensor(t)
        grads, state, record = line.apply([g * (t + 1) for g in GRADS], state, context)
        applied.append([keras.ops.convert_to_numpy(g) for g in grads])
        assert record == {}
    for t, got in enumerate(applied):  # zeros while the line fills, then update t - 2's gradient
        for g, want in zip(got, GRADS):
            np.testing.assert_array_equal(g, want * (t - 1) if t >= 2 else np.zeros_like(want))


@pytest.mark.parametrize("mode", COMPILE_MODES)
def test_the_noise_record_is_the_parts_mean_squared_norm(mode):
    optimizer, _ = _optimizer()
    context = _context(optimizer, parts=4, part_sq=keras.ops.convert_to_tensor(np.float32(10.0)))
    context.loss_scale = 2.0
    grads, _, record = _apply(transforms.NoiseRecord(), context, mode)
    assert record == {noise_scale.RECORD: pytest.approx(10.0 * 4 / 4.0)}
    for got, want in zip(grads, GRADS):
        np.testing.assert_array_equal(got, want)


def _settings(**fields):
    defaults = dict(
        clip_global_norm=None,
        log_gradient_norm=False,
        noise_scale_every=0,
        loss_spike_guard=None,
        staleness=0,
        lr_gain="none",
        base_batch_size=8,
        noise_scale_decay=0.99,
    )
    return types.SimpleNamespace(**{**defaults, **fields})


@pytest.mark.parametrize(
    "fields, kinds",
    [
        ({}, []),
        ({"log_gradient_norm": True}, ["GlobalNorm"]),
        ({"noise_scale_every": 5}, ["GlobalNorm", "NoiseRecord"]),
        (
            {"clip_global_norm": 1.0, "loss_spike_guard": 3.0, "staleness": 2},
            ["GlobalNorm", "ClipByGlobalNorm", "SpikeGuard", "DelayLine"],
        ),
        ({"noise_scale_every": 5, "lr_gain": "adascale"}, ["GlobalNorm", "NoiseRecord", "AdaScaleGain"]),
    ],
)
def test_the_settings_build_the_chain_in_its_order(fields, kinds):
    optimizer, variables = _optimizer()
    before = len(optimizer.variables)
    model = types.SimpleNamespace(trainable_variables=variables)
    chain = transforms.from_settings(_settings(**fields), optimizer, model, 4000)
    assert [type(t).__name__ for t in chain] == kinds
    added = [v for t in chain for v in t.variables]
    assert len(optimizer.variables) == before + len(added)  # the state is the optimizer's (checkpointed)
    assert all(any(v is o for o in optimizer.variables) for v in added)


def test_the_chain_clips_with_the_norm_before_it_and_writes_the_state():
    optimizer, variables = _optimizer()
    chain = transforms.Chain(
        [transforms.GlobalNorm(), transforms.ClipByGlobalNorm(1.3), transforms.DelayLine(1)]
    ).build(optimizer, variables)
    context = _context(optimizer)
    grads, record = chain.apply(list(GRADS), context)
    assert float(keras.ops.convert_to_numpy(record["grad_norm"])) == pytest.approx(13.0)
    for got, line, want in zip(grads, chain.get(transforms.DelayLine).variables, GRADS):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), np.zeros_like(want))  # the line was empty
        np.testing.assert_allclose(keras.ops.convert_to_numpy(context.written[id(line)])[0], want * 0.1, rtol=1e-6)
