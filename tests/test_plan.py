"""kbatch.training.config.plan.Plan against a walk of the example stream one batch at a time: where each
epoch starts, where the run evaluates and checkpoints, which phase each update is in, and loop
calls that never run past any of those points."""

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_walk import walk

from kbatch.schedules import BatchSizeSchedule
from kbatch.training.config.plan import Plan

pytestmark = pytest.mark.fast

FAST = settings(max_examples=60, deadline=None)


def first_count_reaching(updates, examples):
    """Updates done when the stream first reaches `examples` (exact), at most the run's total."""
    return next((step for step, (seen, _) in enumerate(updates) if seen >= examples), len(updates))


@st.composite
def runs(draw):
    count = draw(st.integers(1, 4))
    quarters = sorted(draw(st.sets(st.integers(1, 15), min_size=count - 1, max_size=count - 1)))
    boundaries = [Fraction(q, 4) for q in quarters]
    batch_sizes = draw(st.lists(st.integers(1, 500), min_size=count, max_size=count))
    num_examples = draw(st.integers(1, 1000))
    num_epochs = draw(st.integers(1, 4))
    evals_per_epoch = draw(st.integers(1, 4))
    checkpoint_every = draw(st.sampled_from([0, 1, 3, 7, 50]))
    return batch_sizes, boundaries, num_examples, num_epochs, evals_per_epoch, checkpoint_every


def make(batch_sizes, boundaries, num_examples, num_epochs, evals_per_epoch, checkpoint_every):
    schedule = BatchSizeSchedule(batch_sizes, [float(b) for b in boundaries])
    return Plan.make(schedule, num_examples, num_epochs, evals_per_epoch, checkpoint_every)


@FAST
@given(case=runs())
def test_steps_epochs_and_phases_match_the_walk(case):
    batch_sizes, boundaries, num_examples, num_epochs = case[:4]
    plan = make(*case)
    updates = walk(batch_sizes, boundaries, num_examples, num_epochs)
    assert plan.total_steps == len(updates)
    assert plan.epoch_starts == tuple(first_count_reaching(updates, e * num_examples) for e in range(num_epochs + 1))
    used = sorted({phase for _, phase in updates})
    assert [p.batch_size for p in plan.phases] == [batch_sizes[i] for i in used]
    assert all(p.num_steps > 0 for p in plan.phases)
    for step, (seen, phase) in enumerate(updates):
        current = plan.phase_at(step)
        assert current.batch_size == batch_sizes[phase]
        assert current.start_step <= step < current.start_step + current.num_steps
        assert plan.epoch_at(step) == min(seen // num_examples, num_epochs - 1)
        assert plan.ledger.examples_seen(step) == seen
        assert plan.ledger.epoch(step) == seen / num_examples


@FAST
@given(case=runs())
def test_evaluation_and_checkpoint_points(case):
    batch_sizes, boundaries, num_examples, num_epochs, evals_per_epoch, checkpoint_every = case
    plan = make(*case)
    updates = walk(batch_sizes, boundaries, num_examples, num_epochs)
    total = len(updates)
    epochs = {e + Fraction(j, evals_per_epoch) for e in range(num_epochs) for j in range(1, evals_per_epoch + 1)}
    evals = {first_count_reaching(updates, epoch * num_examples) for epoch in epochs} - {0}
    assert plan.eval_points == tuple(sorted(evals))
    assert plan.eval_points[-1] == total  # the run ends with an evaluation
    if checkpoint_every:
        checkpoints = {k for k in range(1, total + 1) if k % checkpoint_every == 0} | {total}
    else:
        checkpoints = {first_count_reaching(updates, e * num_examples) for e in range(1, num_epochs + 1)} - {0}
    assert plan.checkpoint_points == tuple(sorted(checkpoints))


@FAST
@given(case=runs(), steps_per_loop=st.integers(1, 40))
def test_loop_calls_stop_at_every_point_and_never_cross_one(case, steps_per_loop):
    plan = make(*case)
    points = set(plan.eval_points) | set(plan.checkpoint_points)
    points |= {p.start_step + p.num_steps for p in plan.phases}
    step, stops = 0, []
    while step < plan.total_steps:
        run = plan.next_stop(step, steps_per_loop)
        assert 1 <= run <= steps_per_loop
        assert not any(step < p < step + run for p in points)  # never runs past a point
        phase = plan.phase_at(step)
        assert all(plan.phase_at(s) == phase for s in range(step, step + run))  # one batch size
        step += run
        stops.append(step)
    assert step == plan.total_steps
    assert points <= set(stops)


def test_a_hand_counted_run():
    # 1000 examples an epoch, batch 300 until epoch 0.5 then 100, two epochs: phase 0 takes 2
    # updates (600 examples, past 0.5), phase 1 the 14 updates of 100 to 2000 examples.
    plan = Plan.make(BatchSizeSchedule([300, 100], [0.5]), 1000, 2, evals_per_epoch=2, checkpoint_every=0)
    assert [(p.start_step, p.num_steps) for p in plan.phases] == [(0, 2), (2, 14)]
    assert plan.total_steps == 16
    assert plan.epoch_starts == (0, 6, 16)  # 1000 examples after 2 + 4 updates
    assert plan.eval_points == (2, 6, 11, 16)  # 600 >= 500, 1000, 1500, 2000 examples
    assert plan.checkpoint_points == (6, 16)
    assert [plan.next_stop(s, 4) for s in (0, 2, 6, 10, 11, 15)] == [2, 4, 4, 1, 4, 1]
    assert plan.epoch_at(5) == 0 and plan.epoch_at(6) == 1 and plan.epoch_at(16) == 1


def test_a_phase_with_no_updates_is_left_out():
    # One batch of 600 runs past both 0.5 and 0.55: the batch-50 phase has no update.
    plan = Plan.make(BatchSizeSchedule([600, 50, 100], [0.5, 0.55]), 1000, 1, 1, 0)
    assert [p.batch_size for p in plan.phases] == [600, 100]
    assert [(p.start_step, p.num_steps) for p in plan.phases] == [(0, 1), (1, 4)]
    assert plan.phase_at(1).batch_size == 100
    assert plan.ledger.phase_steps(1) == [1, 0, 4]


def test_a_batch_larger_than_an_epoch():
    # Batch 250 over 100-example epochs: one update covers 2.5 epochs; ceil(300 / 250) = 2 updates.
    plan = Plan.make(BatchSizeSchedule([250]), 100, 3, 1, 0)
    assert plan.total_steps == math.ceil(300 / 250) == 2
    assert plan.epoch_starts == (0, 1, 1, 2)
    assert plan.eval_points == (1, 2) and plan.checkpoint_points == (1, 2)
    assert plan.epoch_at(1) == 2  # after 250 examples the next update is in epoch 2
