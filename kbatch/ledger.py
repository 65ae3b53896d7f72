"""The step ledger: optimizer updates <-> examples seen <-> epochs <-> batch-size phases.

An epoch is `num_examples` examples of one continuous stream. Phase i of a batch schedule covers
epochs [boundaries[i-1], boundaries[i]) at global batch `batch_sizes[i]`: it takes as many
batches as it needs to reach its end boundary, its last batch may run past it, and the next phase
starts where that batch ended. So E epochs at one batch B are ceil(E N / B) updates, and after
any update epochs = examples seen / N exactly. Every count of steps in kbatch comes from here.
Pure Python: no TensorFlow, no Keras.
"""

import bisect
import collections
import math

from kbatch import checks

PhaseStart = collections.namedtuple("PhaseStart", "step examples")
PhaseStart.__doc__ = "Where a phase starts: its first update and the examples seen before it."


def ceil_div(a, b):
    """ceil(a / b) for integers, exactly (no float)."""
    return -(-a // b)


def examples_at(epoch, num_examples):
    """The number of examples that `epoch` epochs make, rounded up; float noise is rounded away
    (0.1 epochs of 48000 examples are 4800 examples, though 0.1 * 48000 is 4800.000000000001)."""
    exact = epoch * num_examples
    nearest = round(exact)
    return nearest if abs(exact - nearest) <= 1e-9 * max(1.0, exact) else math.ceil(exact)


def check_phases(batch_sizes, boundaries):
    """(batch_sizes as ints, boundaries as floats), or a ValueError naming the bad entry: one
    positive integer batch per phase, and positive, strictly increasing epochs between phases."""
    batch_sizes = [checks.positive_int(f"batch_sizes[{i}]", b) for i, b in enumerate(batch_sizes)]
    boundaries = [checks.real(f"boundaries[{i}]", b, low=0, low_open=True) for i, b in enumerate(boundaries)]
    if not batch_sizes:
        checks.fail("batch_sizes", batch_sizes, "a non-empty list, one global batch per phase")
    if len(boundaries) != len(batch_sizes) - 1:
        checks.fail(
            "boundaries",
            boundaries,
            f"{len(batch_sizes) - 1} epoch(s), one between each two consecutive batch_sizes ({len(batch_sizes)} given)",
        )
    if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
        checks.fail("boundaries", boundaries, "strictly increasing epochs")
    return batch_sizes, boundaries


def phase_epochs(boundaries, num_epochs):
    """(start epoch, end epoch) of each phase that starts before `num_epochs`, the last one cut
    at `num_epochs`."""
    num_epochs = checks.real("num_epochs", num_epochs, low=0, low_open=True)
    starts = [0.0] + [b for b in boundaries if b < num_epochs]
    return list(zip(starts, starts[1:] + [num_epochs]))


def per_replica_batch_size(global_batch_size, num_replicas, accumulation_steps=1):
    """The micro-batch one replica computes per forward pass.

    global batch = micro-batch x replicas x accumulation steps; a ValueError names the fields
    when it does not divide.
    """
    global_batch_size = checks.positive_int("batch_size", global_batch_size)
    num_replicas = checks.positive_int("num_replicas", num_replicas)
    accumulation_steps = checks.positive_int("accumulation_steps", accumulation_steps)
    parts = num_replicas * accumulation_steps
    if global_batch_size % parts:
        raise ValueError(
            f"batch_size={global_batch_size} (global) does not divide by {num_replicas} replicas x "
            f"accumulation_steps={accumulation_steps} = {parts}; choose a multiple of {parts}."
        )
    return global_batch_size // parts


class StepLedger:
    """The updates, examples and epochs of one stream of `num_examples`-example epochs trained
    in phases (see the module docstring). `step` always counts updates done: update number
    `step` (from 0) is the one after `step` updates.

    Attributes:
      batch_sizes, boundaries, num_examples: as given, checked.
      phase_starts: a `PhaseStart(step, examples)` per phase, every phase of the schedule (later
        ones are where the stream would reach them if training went on).
    """

    def __init__(self, batch_sizes, boundaries, num_examples):
        self.batch_sizes, self.boundaries = check_phases(batch_sizes, boundaries)
        self.num_examples = checks.positive_int("num_examples", num_examples)
        step = seen = 0
        starts = []
        for i, batch in enumerate(self.batch_sizes):
            starts.append(PhaseStart(step, seen))
            if i < len(self.boundaries):
                steps = self._steps_to(self.boundaries[i], i, seen)
                step, seen = step + steps, seen + steps * batch
        self.phase_starts = tuple(starts)

    def _steps_to(self, epoch, phase, seen):
        """Updates of `phase`'s batch from `seen` examples until the stream reaches `epoch`."""
        return max(0, ceil_div(examples_at(epoch, self.num_examples) - seen, self.batch_sizes[phase]))

    def phase_index(self, step):
        """The phase of update `step`: the last one started by then (a phase with 0 updates is
        passed over)."""
        step = checks.integer("step", step, low=0)
        return max(i for i, start in enumerate(self.phase_starts) if start.step <= step)

    def examples_seen(self, step):
        """The examples the first `step` updates consume (where a resumed input stream starts)."""
        phase = self.phase_index(step)
        start = self.phase_starts[phase]
        return start.examples + (step - start.step) * self.batch_sizes[phase]

    def epoch(self, step):
        """The (fractional) epoch at which update `step` starts: examples seen / num_examples."""
        return self.examples_seen(step) / self.num_examples

    def step_at(self, epoch):
        """The first update that starts at or after `epoch` (a boundary belongs to the phase it
        starts)."""
        phase = bisect.bisect_right(self.boundaries, checks.real("epoch", epoch, low=0))
        start = self.phase_starts[phase]
        return start.step + self._steps_to(epoch, phase, start.examples)

    def phase_steps(self, num_epochs):
        """The updates of each phase that starts before `num_epochs`, the last one cut at
        `num_epochs`; a phase has 0 when the previous phase's last batch ran past it."""
        return [
            self._steps_to(end, i, self.phase_starts[i].examples)
            for i, (_, end) in enumerate(phase_epochs(self.boundaries, num_epochs))
        ]

    def total_steps(self, num_epochs):
        """The updates of a run of `num_epochs` epochs."""
        return sum(self.phase_steps(num_epochs))
