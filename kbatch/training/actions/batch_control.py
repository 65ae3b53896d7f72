"""The batch as a controlled quantity: the adaptive batch and the batch warmup, which follow the noise scale."""

import math

from kbatch.training.actions.action import Action


def _above(value, bound):
    """`value` (> `bound`) with the fewest decimals that still print it above `bound`: 32.42 > 32."""
    digits = next((d for d in range(7) if math.floor(value * 10**d) / 10**d > bound), 7)
    return f"{value:,.{digits}f}"


def next_batch(schedule, batch, b_simple, limit, multiple=1.0):
    """The global batch after an epoch's end at `batch`, with the noise scale `b_simple`, never
    past `limit` and never smaller: "adaptive" doubles it while B_simple is above it (McCandlish et
    al. 2018); "warmup" grows it by doublings to the largest at most `multiple` x B_simple
    (Merrill et al. 2025: the critical batch rises early in training, and the batch can follow
    it). Doublings keep it a multiple of what the replicas and accumulation need."""
    if schedule == "adaptive":
        return 2 * batch if b_simple > batch and 2 * batch <= limit else batch
    grown = batch
    while 2 * grown <= min(limit, multiple * b_simple):
        grown *= 2
    return grown


class AdaptBatchSize(Action):
    """With `batch_schedule="adaptive"` or `"warmup"`: at the end of each epoch but the last, the
    global batch `next_batch` gives (up to `max_batch_size`), the rate moved by `lr_scaling`
    (`Run.adapt`). The decisions (`run.batch_decisions`) are its state, so a resumed run follows
    them exactly (`Run` re-plans with them when it is built), and each is one console line."""

    after = ("MeasureNoiseScale",)

    def __init__(self, max_batch_size, verbose=True, schedule="adaptive", multiple=1.0):
        self.max_batch_size, self.verbose, self.schedule, self.multiple = max_batch_size, verbose, schedule, multiple
        self._decisions = []

    def state(self):
        return {"decisions": list(self._decisions)}

    def begin(self, run):  # its saved state: the decisions `Run` re-planned with when it was built
        self._decisions = list(run.batch_decisions)

    def after_loop(self, run, loop):
        epoch_ends = run.plan.epoch_starts[1:-1]
        if run.step not in epoch_ends:
            return
        batch, b_simple = loop.phase.batch_size, run.noise_scale
        limit = min(self.max_batch_size, run.info.num_train_examples)
        grown = next_batch(self.schedule, batch, b_simple, limit, self.multiple)
        if grown == batch:
            return
        epoch = epoch_ends.index(run.step) + 1
        before = float(loop.records["learning_rate"][-1])
        self._decisions.append({"epoch": epoch, "batch": grown, "step": run.step})
        run.adapt(self._decisions)
        if self.verbose and run.backend.is_chief:
            print(
                f"kbatch: {self._why(b_simple, batch, epoch, grown)} (lr by the {run.settings.lr_scaling} rule; "
                f"was {before:.4g})",
                flush=True,
            )

    def _why(self, b_simple, batch, epoch, grown):
        if self.schedule == "adaptive":
            return (
                f"adaptive batch: B_simple {_above(b_simple, batch)} > batch {batch} at epoch {epoch}: the "
                f"batch doubles to {grown}"
            )
        return (
            f"batch warmup: {self.multiple:g} x B_simple = {self.multiple * b_simple:,.0f} at epoch {epoch}: "
            f"the batch grows from {batch} to {grown}"
        )
