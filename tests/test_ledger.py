"""kbatch.ledger against a walk of the example stream one batch at a time (exact fractions), hand
counts of the cases that matter (the last batch of a phase running past its boundary, a phase
left with no updates, decimal epochs), and the per-replica batch arithmetic."""

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_walk import walk

from kbatch import distribute, ledger
from kbatch.ledger import StepLedger

pytestmark = pytest.mark.fast

FAST = settings(max_examples=60, deadline=None)


@st.composite
def streams(draw):
    """A schedule with boundaries on quarter epochs (exact in floating point) and a run length."""
    count = draw(st.integers(1, 4))
    quarters = sorted(draw(st.sets(st.integers(1, 20), min_size=count - 1, max_size=count - 1)))
    boundaries = [Fraction(q, 4) for q in quarters]
    batch_sizes = draw(st.lists(st.integers(1, 700), min_size=count, max_size=count))
    num_examples = draw(st.integers(1, 1200))
    num_epochs = Fraction(draw(st.integers(1, 28)), 4)
    return batch_sizes, boundaries, num_examples, num_epochs


def make(batch_sizes, boundaries, num_examples):
    return StepLedger(batch_sizes, [float(b) for b in boundaries], num_examples)


@FAST
@given(case=streams())
def test_phase_steps_and_total_match_the_walk(case):
    batch_sizes, boundaries, num_examples, num_epochs = case
    updates = walk(*case)
    book = make(batch_sizes, boundaries, num_examples)
    started = sum(b < num_epochs for b in boundaries) + 1  # phases that start before the end
    expected = [sum(phase == i for _, phase in updates) for i in range(started)]
    assert book.phase_steps(float(num_epochs)) == expected
    assert book.total_steps(float(num_epochs)) == len(updates)
    assert book.step_at(float(num_epochs)) == len(updates)  # no update starts at or after the end


@FAST
@given(case=streams())
def test_every_update_has_the_walks_examples_epoch_and_phase(case):
    batch_sizes, boundaries, num_examples, _ = case
    # Past the last boundary by two of the largest batches: every phase has started.
    beyond = (boundaries[-1] if boundaries else 0) + Fraction(2 * max(batch_sizes), num_examples)
    updates = walk(batch_sizes, boundaries, num_examples, beyond)
    book = make(batch_sizes, boundaries, num_examples)
    for step, (seen, phase) in enumerate(updates):
        assert book.examples_seen(step) == seen
        assert book.epoch(step) == seen / num_examples
        assert book.phase_index(step) == phase
    for i, start in enumerate(book.phase_starts):
        first = next(step for step, (_, phase) in enumerate(updates) if phase >= i)
        assert start == (first, updates[first][0])


@FAST
@given(case=streams(), eighths=st.lists(st.integers(0, 200), min_size=1, max_size=10))
def test_step_at_is_the_first_update_that_starts_at_or_after_the_epoch(case, eighths):
    batch_sizes, boundaries, num_examples, _ = case
    book = make(batch_sizes, boundaries, num_examples)
    for epoch in (Fraction(e, 8) for e in eighths):
        before = walk(batch_sizes, boundaries, num_examples, epoch)  # the updates that start before it
        assert book.step_at(float(epoch)) == len(before)


@FAST
@given(case=streams(), step=st.integers(0, 5000))
def test_examples_are_monotone_and_step_at_inverts_epoch(case, step):
    batch_sizes, boundaries, num_examples, _ = case
    book = make(batch_sizes, boundaries, num_examples)
    assert book.examples_seen(step + 1) - book.examples_seen(step) == batch_sizes[book.phase_index(step)] > 0
    assert book.step_at(book.epoch(step)) == step  # the update that starts exactly there


@FAST
@given(a=st.integers(-(10**6), 10**6), b=st.integers(1, 10**4))
def test_ceil_div_is_the_exact_ceiling(a, b):
    assert ledger.ceil_div(a, b) == math.ceil(Fraction(a, b))


def test_decimal_epochs_count_the_examples_they_mean():
    # 0.1 epochs of 48000 examples are 4800 examples (0.1 * 48000 is 4800.000000000001): 48
    # batches of 100, not 49.
    book = StepLedger([100, 200], [0.1], 48000)
    assert book.phase_steps(1) == [48, 216]
    assert book.phase_starts[1] == (48, 4800)
    assert ledger.examples_at(0.1, 48000) == 4800
    assert ledger.examples_at(0.3, 10) == 3  # 3.0000000000000004
    assert ledger.examples_at(0.25, 10) == 3  # 2.5 examples: the batch that reaches it counts


def test_the_last_batch_of_a_phase_runs_past_its_boundary():
    # 1000 examples an epoch; phase 0 needs 500 examples at batch 300: 2 updates, 600 examples,
    # so phase 1 starts at epoch 0.6, and reaches 1 epoch after 4 updates of 100.
    book = StepLedger([300, 100], [0.5], 1000)
    assert book.phase_starts == ((0, 0), (2, 600))
    assert book.phase_steps(1.0) == [2, 4] and book.total_steps(1.0) == 6
    assert [book.examples_seen(s) for s in range(7)] == [0, 300, 600, 700, 800, 900, 1000]
    assert [book.phase_index(s) for s in range(6)] == [0, 0, 1, 1, 1, 1]
    assert book.epoch(2) == 0.6
    assert [book.step_at(e) for e in (0.0, 0.3, 0.31, 0.5, 0.6, 0.61, 1.0)] == [0, 1, 2, 2, 2, 3, 6]


def test_a_phase_the_previous_batch_jumped_over_has_no_updates():
    # Phase 0's one batch of 600 ends past both 0.5 and 0.55: phase 1 gets no update at all.
    book = StepLedger([600, 50, 100], [0.5, 0.55], 1000)
    assert book.phase_starts == ((0, 0), (1, 600), (1, 600))
    assert book.phase_steps(1) == [1, 0, 4] and book.total_steps(1) == 5
    assert book.phase_index(1) == 2  # passed over, never current
    assert book.examples_seen(2) == 700
    assert book.step_at(0.52) == 1  # an epoch inside the empty phase: the next update
    assert book.phase_steps(0.52) == [1, 0]  # a run that ends inside it


def test_a_run_shorter_than_the_schedule_counts_only_its_phases():
    book = StepLedger([100, 200, 400], [1, 2], 1000)
    assert book.phase_steps(1) == [10]
    assert book.phase_steps(1.5) == [10, 3]  # 500 examples at batch 200: the last runs 100 past
    assert book.phase_steps(2.5) == [10, 5, 2]


@FAST
@given(micro=st.integers(1, 64), replicas=st.integers(1, 8), accumulation=st.integers(1, 8), extra=st.integers(0, 63))
def test_per_replica_batch_size_divides_or_says_what_to_choose(micro, replicas, accumulation, extra):
    parts = replicas * accumulation
    batch = micro * parts + extra % parts
    if batch % parts == 0:
        assert ledger.per_replica_batch_size(batch, replicas, accumulation) * parts == batch
    else:
        message = (
            rf"batch_size={batch} \(global\) does not divide by {replicas} replicas x "
            rf"accumulation_steps={accumulation} = {parts}; choose a multiple of {parts}\."
        )
        with pytest.raises(ValueError, match=message):
            ledger.per_replica_batch_size(batch, replicas, accumulation)


def test_distribute_reexports_the_same_function():
    assert distribute.per_replica_batch_size is ledger.per_replica_batch_size


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ledger.per_replica_batch_size(0, 2), "batch_size=0: must be a positive integer"),
        (lambda: ledger.per_replica_batch_size(64, 0), "num_replicas=0: must be a positive integer"),
        (lambda: ledger.per_replica_batch_size(64, 2, 0), "accumulation_steps=0: must be a positive integer"),
        (lambda: ledger.per_replica_batch_size(64, 2, True), "accumulation_steps=True: must be a positive integer"),
        (lambda: StepLedger([64], [], 0), "num_examples=0: must be a positive integer"),
        (lambda: StepLedger([64, 0], [1], 10), r"batch_sizes\[1\]=0: must be a positive integer"),
        (lambda: StepLedger([64, 32], [0], 10), r"boundaries\[0\]=0: must be a finite number > 0"),
        (lambda: StepLedger([64, 32, 16], [2, 1], 10), r"boundaries=\[2.0, 1.0\]: must be strictly increasing"),
        (lambda: StepLedger([64], [1], 10), r"boundaries=\[1.0\]: must be 0 epoch\(s\)"),
        (lambda: StepLedger([64], [], 10).examples_seen(-1), "step=-1: must be an integer >= 0"),
        (lambda: StepLedger([64], [], 10).phase_index(2.0), "step=2.0: must be an integer >= 0"),
        (lambda: StepLedger([64], [], 10).step_at(float("nan")), "epoch=nan: must be a finite number >= 0"),
        (lambda: StepLedger([64], [], 10).phase_steps(0), "num_epochs=0: must be a finite number > 0"),
    ],
)
def test_bad_input_names_the_argument_and_the_allowed_values(call, message):
    with pytest.raises(ValueError, match=message):
        call()
