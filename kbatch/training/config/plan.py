"""The steps of a run: its batch-size phases, and where it evaluates, checkpoints and starts epochs.

An epoch is `num_examples` examples of one continuous input stream, so a run of `num_epochs`
epochs at global batch B takes ceil(num_epochs * num_examples / B) updates; with several phases
each takes the updates it needs to reach its end boundary. The arithmetic is the schedule's
`kbatch.ledger.StepLedger`. Every point is a count of updates done: "evaluate at epoch 1.5" is
the first update count whose examples reach 1.5 epochs.
"""

import bisect
import dataclasses

from kbatch.ledger import StepLedger


@dataclasses.dataclass(frozen=True)
class Plan:
    """Built by `Plan.make`; every field but `ledger` counts optimizer updates."""

    phases: tuple  # the schedule's `Phase`s that have updates
    total_steps: int
    epoch_starts: tuple  # update count at the start of each epoch, and the total at the end
    eval_points: tuple  # sorted
    checkpoint_points: tuple  # sorted
    ledger: StepLedger = dataclasses.field(repr=False, compare=False)  # examples_seen(step), epoch(step)

    @classmethod
    def make(cls, schedule, num_examples, num_epochs, evals_per_epoch, checkpoint_every):
        """`schedule`: a `BatchSizeSchedule`; `checkpoint_every`: updates (0: each epoch's end)."""
        ledger = schedule.ledger(num_examples)
        phases = tuple(p for p in schedule.phases(num_epochs, num_examples) if p.num_steps)
        total = ledger.total_steps(num_epochs)  # = ledger.step_at(num_epochs): no point lies past it
        epoch_starts = tuple(ledger.step_at(e) for e in range(num_epochs + 1))
        evals = {
            ledger.step_at(e + j / evals_per_epoch) for e in range(num_epochs) for j in range(1, evals_per_epoch + 1)
        }
        if checkpoint_every:
            checkpoints = set(range(checkpoint_every, total, checkpoint_every)) | {total}
        else:
            checkpoints = set(epoch_starts[1:])
        return cls(phases, total, epoch_starts, tuple(sorted(evals - {0})), tuple(sorted(checkpoints - {0})), ledger)

    def ended_at(self, end):
        """This plan stopped after `end` updates (a run whose length is decided while it trains,
        `lr_gain="adascale"`): its phases cut there, and an evaluation and a checkpoint at `end`."""
        phases = tuple(
            p._replace(num_steps=min(p.num_steps, end - p.start_step)) for p in self.phases if p.start_step < end
        )
        return dataclasses.replace(
            self,
            phases=phases,
            total_steps=end,
            epoch_starts=(*(s for s in self.epoch_starts if s < end), end),
            eval_points=(*(p for p in self.eval_points if p < end), end),
            checkpoint_points=(*(p for p in self.checkpoint_points if p < end), end),
        )

    def phase_at(self, step):
        """The phase that the update after `step` updates belongs to."""
        for phase in self.phases:
            if step < phase.start_step + phase.num_steps:
                return phase
        return self.phases[-1]

    def epoch_at(self, step):
        """The (whole) epoch the update after `step` updates is in."""
        return min(bisect.bisect_right(self.epoch_starts, step) - 1, len(self.epoch_starts) - 2)

    def next_stop(self, step, steps_per_loop):
        """How many updates the next loop call runs: at most `steps_per_loop`, and it stops at
        the next evaluation, checkpoint, phase change and the end."""
        phase = self.phase_at(step)
        stops = [phase.start_step + phase.num_steps, step + steps_per_loop]
        for points in (self.eval_points, self.checkpoint_points):
            later = bisect.bisect_right(points, step)
            if later < len(points):
                stops.append(points[later])
        return min(stops) - step
