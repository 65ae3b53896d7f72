"""BatchSizeSchedule and PhasedSchedule against a step-by-step simulation of one stream of
examples, Smith et al.'s batch annealing against its LR-decay twin, the constant-noise and
constant-variance rules, divisibility by replicas, and the errors for bad input."""

from fractions import Fraction

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbatch import schedules

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

FAST = settings(max_examples=50, deadline=None)
Schedule = schedules.BatchSizeSchedule


def simulate(boundaries, batch_sizes, rates, num_examples, num_epochs):
    """Update by update: each takes the batch and rate of the phase where its first example
    falls (exact fractions); returns (epoch, phase, batch, rate) per update."""
    seen, updates = 0, []
    while Fraction(seen, num_examples) < num_epochs:
        epoch = Fraction(seen, num_examples)
        phase = sum(epoch >= b for b in boundaries)
        updates.append((epoch, phase, batch_sizes[phase], rates[phase]))
        seen += batch_sizes[phase]
    return updates


@st.composite
def schedules_and_runs(draw):
    count = draw(st.integers(1, 4))
    quarters = sorted(draw(st.sets(st.integers(1, 24), min_size=count - 1, max_size=count - 1)))
    boundaries = [Fraction(q, 4) for q in quarters]
    batch_sizes = draw(st.lists(st.integers(8, 300), min_size=count, max_size=count))
    rates = draw(st.lists(st.floats(0.001, 1.0), min_size=count, max_size=count))
    num_examples = draw(st.integers(50, 1500))
    num_epochs = Fraction(draw(st.integers(1, 28)), 4)
    return boundaries, batch_sizes, rates, num_examples, num_epochs


@FAST
@given(case=schedules_and_runs())
def test_phases_and_phased_schedule_match_the_simulation(case):
    boundaries, batch_sizes, rates, num_examples, num_epochs = case
    schedule = Schedule(batch_sizes, [float(b) for b in boundaries], rates)
    updates = simulate(boundaries, batch_sizes, rates, num_examples, num_epochs)
    phase_of = np.array([u[1] for u in updates])
    phases = schedule.phases(float(num_epochs), num_examples)
    assert len(phases) == sum(b < num_epochs for b in boundaries) + 1
    for i, phase in enumerate(phases):
        assert phase.batch_size == batch_sizes[i] and phase.learning_rate == rates[i]
        assert phase.start_epoch == (float(boundaries[i - 1]) if i else 0.0)
        assert phase.num_steps == int(np.sum(phase_of == i))
        assert phase.start_step == int(np.sum(phase_of < i))
    assert phases[-1].end_epoch == float(num_epochs)
    # Where a resumed stream starts, and the first update at or after an epoch.
    seen = np.cumsum([0] + [u[2] for u in updates])
    for step in range(0, len(updates) + 1, max(1, len(updates) // 7)):
        assert schedule.examples_seen(step, num_examples) == seen[step]
    for epoch in [Fraction(q, 8) for q in range(0, 8 * int(num_epochs))]:
        first = next((i for i, u in enumerate(updates) if u[0] >= epoch), len(updates))
        assert schedule.step_at(float(epoch), num_examples) == first
    # The optimizer's schedule: the epoch each update starts at, and its phase's rate.
    lr = schedules.PhasedSchedule(schedule, num_examples)
    steps = keras.ops.arange(len(updates) + 5)
    epochs = np.array([float(u[0]) for u in updates])
    np.testing.assert_allclose(np.asarray(lr.epoch(steps))[: len(updates)], epochs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(lr(steps))[: len(updates)], [u[3] for u in updates], rtol=1e-6)


@FAST
@given(case=schedules_and_runs(), epochs=st.lists(st.floats(0, 10), min_size=1, max_size=20))
def test_batch_size_and_rate_per_epoch_are_piecewise_constant(case, epochs):
    boundaries, batch_sizes, rates, _, _ = case
    schedule = Schedule(batch_sizes, [float(b) for b in boundaries], rates)
    epochs = epochs + [float(b) for b in boundaries]  # a boundary belongs to the phase it starts
    index = np.searchsorted(np.array(boundaries, dtype=float), epochs, side="right")
    assert [schedule.batch_size(e) for e in epochs] == [batch_sizes[i] for i in index]
    assert [schedule.learning_rate(e) for e in epochs] == [rates[i] for i in index]


def test_fractional_boundaries_mean_the_decimal_epoch():
    # 0.1 epochs of 48000 examples are 4800 examples: 48 batches of 100, not 49.
    phases = Schedule([100, 200], [0.1]).phases(1, 48000)
    assert [(p.start_step, p.num_steps) for p in phases] == [(0, 48), (48, 216)]


def test_rate_changes_exactly_at_the_phase_start_on_imagenet_scale():
    # 1281167 examples: float32 epochs cannot tell the last update of a phase from the first of
    # the next; the phase is found from the integer step.
    schedule = Schedule.from_step_decay(0.1, 256, [30, 60], factor=4)
    lr = schedules.PhasedSchedule(schedule, 1281167)
    for phase, previous in zip(schedule.phases(90, 1281167)[1:], schedule.learning_rates):
        start = phase.start_step
        got = np.asarray(lr(keras.ops.convert_to_tensor([start - 1, start], "int64")))
        np.testing.assert_allclose(got, [previous, phase.learning_rate], rtol=1e-6)
    # Steps past 2**24, where float32 no longer holds every integer.
    tiny = Schedule([1, 2], [20], [0.5, 0.25])
    start = tiny.phases(30, 1_000_000)[1].start_step
    assert start == 20_000_000
    steps = keras.ops.convert_to_tensor([start - 1, start], "int64")
    got = np.asarray(schedules.PhasedSchedule(tiny, 1_000_000)(steps))
    np.testing.assert_allclose(got, [0.5, 0.25])


smith_cases = dict(
    lr=st.floats(0.01, 1.0),
    batch=st.integers(1, 16).map(lambda b: 8 * b),
    factor=st.integers(2, 10),
    count=st.integers(1, 4),
    cap_doublings=st.integers(0, 12),
    rule=st.sampled_from(["linear", "sqrt"]),
)


@FAST
@given(**smith_cases)
def test_batch_annealing_and_its_decay_twin_see_the_same_rate_to_batch_ratio(
    lr, batch, factor, count, cap_doublings, rule
):
    boundaries = [10.0 * (i + 1) for i in range(count)]
    cap = batch * 2**cap_doublings
    anneal = Schedule.from_step_decay(lr, batch, boundaries, factor, max_batch_size=cap, rule=rule)
    twin = anneal.decay_twin(rule)
    power = 1 if rule == "linear" else 2  # lr / B for the linear rule, lr**2 / B for sqrt
    assert twin.batch_sizes == [batch] * (count + 1)
    epochs = np.linspace(0, 10 * count + 9, 97).tolist() + boundaries
    decays = np.searchsorted(boundaries, epochs, side="right")
    step_decay_rate = lr / factor ** decays.astype(float)  # the step schedule at the fixed batch
    np.testing.assert_allclose([twin.learning_rate(e) for e in epochs], step_decay_rate, rtol=1e-12)
    ratio = [anneal.learning_rate(e) ** power / anneal.batch_size(e) for e in epochs]
    np.testing.assert_allclose(ratio, step_decay_rate**power / batch, rtol=1e-9)
    # The batch grows by factor**power per boundary until the cap; the rate stays until then.
    grown = np.minimum(batch * float(factor) ** (power * decays), cap)
    np.testing.assert_array_equal([anneal.batch_size(e) for e in epochs], np.round(grown))
    uncapped = batch * float(factor) ** (power * decays) <= cap
    np.testing.assert_allclose(np.array([anneal.learning_rate(e) for e in epochs])[uncapped], lr, rtol=1e-12)


def test_seesaw_doubles_the_batch_and_divides_the_rate_by_root_two_where_step_decay_halves_it():
    """Meterez et al. 2025, by hand: 0.1 at 128, then (256, 0.1 / sqrt 2), (512, 0.05), and at the
    cap of 512 the rate halves as the step schedule's (0.025); rounding keeps the sqrt rule's rate."""
    seesaw = Schedule.seesaw(0.1, 128, [2, 4, 6], factor=2.0, max_batch_size=512)
    assert seesaw.batch_sizes == [128, 256, 512, 512]
    np.testing.assert_allclose(seesaw.learning_rates, [0.1, 0.1 / np.sqrt(2), 0.05, 0.025], rtol=1e-12)
    rounded = Schedule.seesaw(0.3, 64, [1, 2], factor=1.7, multiple_of=16)
    assert rounded.batch_sizes == [64, 112, 192]  # 108.8 and 184.96 to the nearest multiples of 16
    np.testing.assert_allclose(
        rounded.learning_rates, [0.3 / 1.7**i * np.sqrt(b / 64) for i, b in enumerate([64, 112, 192])], rtol=1e-12
    )


def test_batch_annealing_run_needs_fewer_updates_for_the_same_rate_to_batch_ratio_per_step():
    # Smith et al.'s CIFAR-10 shape: lr 0.1 at 128, factor 5 at epochs 60, 120, 160, 200 epochs.
    n = 50000
    anneal = Schedule.from_step_decay(0.1, 128, [60, 120, 160], factor=5)
    twin = Schedule.step_decay(0.1, 128, [60, 120, 160], factor=5)
    derived = anneal.decay_twin()
    assert (derived.batch_sizes, derived.boundaries) == (twin.batch_sizes, twin.boundaries)
    np.testing.assert_allclose(derived.learning_rates, twin.learning_rates, rtol=1e-12)
    anneal_lr = schedules.PhasedSchedule(anneal, n)
    total = sum(p.num_steps for p in anneal.phases(200, n))
    steps = keras.ops.arange(total)
    epochs = np.asarray(anneal_lr.epoch(steps), np.float64)
    batches = np.array([anneal.batch_size(e) for e in epochs])
    # Every annealing update sees the lr / B the twin has at the same epoch.
    np.testing.assert_allclose(
        np.asarray(anneal_lr(steps)) / batches, [twin.learning_rate(e) / 128 for e in epochs], rtol=1e-6
    )
    # Updates: ceil(60 n / 128) + ceil(60 n / 640) + ... against ceil(200 n / 128).
    expected = sum(-(-int(span * n) // b) for span, b in [(60, 128), (60, 640), (40, 3200), (40, 16000)])
    assert total == expected == 23438 + 4688 + 625 + 125
    assert sum(p.num_steps for p in twin.phases(200, n)) == -(-200 * n // 128)


def test_constant_noise_and_constant_variance_rules():
    batches, boundaries = [128, 256, 1024, 4096], [1, 2, 4]
    linear = Schedule.scaled(0.1, 128, batches, boundaries, rule="linear")  # (b) lr / B constant
    sqrt = Schedule.scaled(0.1, 128, batches, boundaries, rule="sqrt")  # (c) lr**2 / B constant
    np.testing.assert_allclose(np.array(linear.learning_rates) / batches, 0.1 / 128)
    np.testing.assert_allclose(np.array(sqrt.learning_rates) ** 2 / batches, 0.1**2 / 128)
    # The form of (c): the batch follows B_k = B_0 (lr_k / lr_0)**2.
    np.testing.assert_allclose(128 * (np.array(sqrt.learning_rates) / 0.1) ** 2, batches)


@FAST
@given(
    batch_sizes=st.lists(st.integers(1, 4096), min_size=1, max_size=5),
    replicas=st.integers(1, 8),
    accumulation=st.integers(1, 4),
)
def test_a_batch_that_does_not_divide_is_an_error_naming_the_phase(batch_sizes, replicas, accumulation):
    schedule = Schedule(batch_sizes, [float(i + 1) for i in range(len(batch_sizes) - 1)])
    parts = replicas * accumulation
    bad = [i for i, b in enumerate(batch_sizes) if b % parts]
    if bad:
        with pytest.raises(
            ValueError,
            match=f"phase {bad[0]} .*global batch {batch_sizes[bad[0]]} does not divide by {replicas} replicas",
        ):
            schedule.check_divisible(replicas, accumulation)
    else:
        assert schedule.check_divisible(replicas, accumulation) == [b // parts for b in batch_sizes]


@FAST
@given(**smith_cases, replicas=st.sampled_from([1, 2, 3, 8]))
def test_rounded_annealing_schedules_always_divide(lr, batch, factor, count, cap_doublings, rule, replicas):
    boundaries = [5.0 * (i + 1) for i in range(count)]
    anneal = Schedule.from_step_decay(
        lr,
        batch * replicas,
        boundaries,
        factor,
        rule=rule,
        max_batch_size=batch * replicas * 2**cap_doublings,
        multiple_of=replicas,
    )
    assert anneal.check_divisible(replicas) == [b // replicas for b in anneal.batch_sizes]
    assert all(b % replicas == 0 for b in anneal.batch_sizes)
    twin = anneal.decay_twin(rule)  # rounding moved the batch, so the rate follows the real batch
    power = 1 if rule == "linear" else 2
    np.testing.assert_allclose(
        np.array(anneal.learning_rates) ** power / anneal.batch_sizes,
        np.array(twin.learning_rates) ** power / twin.batch_sizes,
        rtol=1e-9,
    )


def test_check_divisible_ignores_phases_after_training():
    schedule = Schedule([64, 96], [10])
    assert schedule.check_divisible(64, num_epochs=10) == [1]
    with pytest.raises(ValueError, match="phase 1"):
        schedule.check_divisible(64, num_epochs=11)


@keras.saving.register_keras_serializable(package="kbatch_test")
class NamedBatchSchedule(Schedule):
    """A user's subclass: a schedule with a label."""

    def __init__(self, batch_sizes, boundaries=(), learning_rates=None, label="run"):
        super().__init__(batch_sizes, boundaries, learning_rates)
        self.label = label

    def get_config(self):
        return {**super().get_config(), "label": self.label}


def test_serialization_round_trip_and_subclass():
    for schedule in (
        Schedule.from_step_decay(0.1, 128, [3, 6], 5),
        Schedule([64]),
        NamedBatchSchedule([32, 64], [2.5], label="mine"),
    ):
        config = keras.saving.serialize_keras_object(schedule)
        restored = keras.saving.deserialize_keras_object(config)
        assert type(restored) is type(schedule)
        assert restored.get_config() == schedule.get_config()
    # The constructors build the subclass they are called on.
    assert type(NamedBatchSchedule.from_step_decay(0.1, 128, [3], 2)) is NamedBatchSchedule


POSITIVE_INT = "must be a positive integer"
RULE = r"must be one of 'linear', 'sqrt', 'none', or a real exponent"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Schedule([64, 128, 256], [20, 10]), r"boundaries=\[20.0, 10.0\]: must be strictly increasing epochs"),
        (lambda: Schedule([64, 128, 256], [10, 10]), r"boundaries=\[10.0, 10.0\]: must be strictly increasing epochs"),
        (lambda: Schedule([64, 128], [-1]), r"boundaries\[0\]=-1: must be a finite number > 0"),
        (lambda: Schedule([64, 128], [float("nan")]), r"boundaries\[0\]=nan: must be a finite number > 0"),
        (
            lambda: Schedule([64, 128], []),
            r"boundaries=\[\]: must be 1 epoch\(s\), one between each two consecutive batch_sizes \(2 given\)",
        ),
        (lambda: Schedule([64], [5]), r"boundaries=\[5.0\]: must be 0 epoch\(s\)"),
        (lambda: Schedule([], []), r"batch_sizes=\[\]: must be a non-empty list, one global batch per phase"),
        (lambda: Schedule([64, 0], [5]), rf"batch_sizes\[1\]=0: {POSITIVE_INT}"),
        (lambda: Schedule([64, -128], [5]), rf"batch_sizes\[1\]=-128: {POSITIVE_INT}"),
        (lambda: Schedule([64, 96.5], [5]), rf"batch_sizes\[1\]=96.5: {POSITIVE_INT}"),
        (
            lambda: Schedule([64, 128], [5], [0.1]),
            r"learning_rates=\[0.1\]: must be a list of one rate per phase \(2 phases\)",
        ),
        (
            lambda: Schedule([64, 128], [5], [0.1, float("nan")]),
            r"learning_rates\[1\]=nan: must be a finite number >= 0",
        ),
        (lambda: Schedule([64]).batch_size(-1), "epoch=-1: must be a finite number >= 0"),
        (lambda: Schedule([64]).learning_rate(1), "this BatchSizeSchedule has no learning_rates"),
        (lambda: Schedule([64]).decay_twin(), "decay_twin needs a BatchSizeSchedule with learning_rates"),
        (lambda: Schedule([64]).phases(0), "num_epochs=0: must be a finite number > 0"),
        (lambda: Schedule([64]).phases(2, num_examples=0), f"num_examples=0: {POSITIVE_INT}"),
        (lambda: Schedule([64]).check_divisible(0), f"num_replicas=0: {POSITIVE_INT}"),
        (lambda: Schedule([64]).check_divisible(1, accumulation_steps=0), f"accumulation_steps=0: {POSITIVE_INT}"),
        (lambda: Schedule([64]).examples_seen(-1, 100), "step=-1: must be an integer >= 0"),
        (lambda: Schedule([64]).examples_seen(1.5, 100), "step=1.5: must be an integer >= 0"),
        (lambda: Schedule([64]).step_at(-1.0, 100), "epoch=-1.0: must be a finite number >= 0"),
        (lambda: Schedule.step_decay(0.1, 128, [30], factor=1), "factor=1: must be a finite number > 1"),
        (lambda: Schedule.from_step_decay(0.1, 128, [30], factor=0.5), "factor=0.5: must be a finite number > 1"),
        (lambda: Schedule.from_step_decay(0.1, 0, [30], factor=5), f"batch_size=0: {POSITIVE_INT}"),
        (
            lambda: Schedule.from_step_decay(-0.1, 128, [30], factor=5),
            "learning_rate=-0.1: must be a finite number >= 0",
        ),
        (
            lambda: Schedule.from_step_decay(0.1, 128, [30], 5, max_batch_size=64),
            "max_batch_size=64: must be at least batch_size=128",
        ),
        (
            lambda: Schedule.from_step_decay(0.1, 128, [30], 5, multiple_of=3),
            "batch_size=128: must be a multiple of multiple_of=3",
        ),
        (
            lambda: Schedule.from_step_decay(0.1, 128, [30], 5, rule="none"),
            r"rule='none': must be a rule that grows the rate with the batch \(alpha > 0\)",
        ),
        (lambda: Schedule.from_step_decay(0.1, 128, [30], 5, rule="cubic"), f"rule='cubic': {RULE}"),
        (
            lambda: Schedule.from_step_decay(0.1, 128, [30, 20], 5),
            r"boundaries=\[30.0, 20.0\]: must be strictly increasing",
        ),
        (lambda: Schedule.scaled(0.1, 128, [128, 256], [5], rule="cubic"), f"rule='cubic': {RULE}"),
        (lambda: Schedule.scaled(0.1, -128, [128, 256], [5]), "base_batch_size=-128: must be a finite number > 0"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_argument_and_the_allowed_values(call, message):
    with pytest.raises(ValueError, match=message):
        call()
