"""The batch as a controlled quantity: the adaptive batch, the batch warmup and the goodput
controller, which follow the noise scale (and, for goodput, the time an update takes)."""

import math
import statistics

from kbatch.diagnostics import goodput, update_time
from kbatch.training.actions.action import Action

KEPT_TIMES = 20  # the latest loops' seconds per update kept for each batch


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
    """With `batch_schedule="adaptive"`, `"warmup"` or `"goodput"`: at the end of each epoch but the
    last, the global batch `next_batch` or `goodput.best_batch` gives (up to `max_batch_size`), the
    rate moved by `lr_scaling` (`Run.adapt`). For goodput it times every loop but a phase's first
    (which compiles), or takes `update_time_model` (T0, k, gamma) as given. The decisions
    (`run.batch_decisions`) and the times are its state, so a resumed run follows the decisions
    exactly (`Run` re-plans with them when it is built) and decides on from the same times; each
    decision is one console line."""

    after = ("MeasureNoiseScale",)

    def __init__(self, max_batch_size, verbose=True, schedule="adaptive", multiple=1.0, update_time_model=None):
        self.max_batch_size, self.verbose, self.schedule, self.multiple = max_batch_size, verbose, schedule, multiple
        self.given_model = update_time.UpdateTimeFit(*update_time_model, residual=0.0) if update_time_model else None
        self._decisions, self._seconds, self._phase = [], {}, None

    def state(self):
        state = {"decisions": list(self._decisions)}
        return {**state, "update_seconds": {str(b): s for b, s in self._seconds.items()}} if self._seconds else state

    def restore_state(self, state):
        self._seconds = {int(b): list(s) for b, s in state.get("update_seconds", {}).items()}

    def begin(self, run):  # its saved state: the decisions `Run` re-planned with when it was built
        self._decisions = list(run.batch_decisions)

    def after_loop(self, run, loop):
        if self.schedule == "goodput" and self.given_model is None:
            self._time(loop)
        epoch_ends = run.plan.epoch_starts[1:-1]
        if run.step not in epoch_ends:
            return
        batch, b_simple = loop.phase.batch_size, run.noise_scale
        limit = min(self.max_batch_size, run.info.num_train_examples)
        grown = self._next(batch, run.settings.batch_size, b_simple, limit)
        if grown == batch:
            return
        epoch = epoch_ends.index(run.step) + 1
        before = float(loop.records["learning_rate"][-1])
        self._decisions.append({"epoch": epoch, "batch": grown, "step": run.step})
        run.adapt(self._decisions)
        if self.verbose and run.backend.is_chief:
            print(
                f"kbatch: {self._why(b_simple, batch, epoch, grown, run.settings.batch_size)} (lr by the "
                f"{run.settings.lr_scaling} rule; was {before:.4g})",
                flush=True,
            )

    def _time(self, loop):
        """Keep the loop's seconds per update at its batch, unless it is its phase's first."""
        first = loop.phase is not self._phase
        self._phase = loop.phase
        if not first:
            times = self._seconds.setdefault(loop.phase.batch_size, [])
            times[:] = [*times, loop.seconds / loop.num_steps][-KEPT_TIMES:]

    def _model(self):
        measured = {b: statistics.median(s) for b, s in self._seconds.items() if s}
        return self.given_model or goodput.time_model(measured)

    def _next(self, batch, base, b_simple, limit):
        if self.schedule == "goodput":
            return goodput.best_batch(batch, base, b_simple, limit, self._model())
        return next_batch(self.schedule, batch, b_simple, limit, self.multiple)

    def _why(self, b_simple, batch, epoch, grown, base):
        if self.schedule == "adaptive":
            return (
                f"adaptive batch: B_simple {_above(b_simple, batch)} > batch {batch} at epoch {epoch}: the "
                f"batch doubles to {grown}"
            )
        if self.schedule == "goodput":
            return self._why_goodput(b_simple, batch, epoch, grown, base)
        return (
            f"batch warmup: {self.multiple:g} x B_simple = {self.multiple * b_simple:,.0f} at epoch {epoch}: "
            f"the batch grows from {batch} to {grown}"
        )

    def _why_goodput(self, b_simple, batch, epoch, grown, base):
        model = self._model()
        if model is None:
            return (
                f"goodput: one batch timed, B_simple {_above(b_simple, batch)} > batch {batch} at epoch {epoch}: "
                f"the batch doubles to {grown} (and is timed there)"
            )
        gain = goodput.goodput(grown, base, b_simple, float(model.seconds(grown))) / goodput.goodput(
            batch, base, b_simple, float(model.seconds(batch))
        )
        return (
            f"goodput: B_simple {b_simple:.6g}, T_update(B) = {model.t0:.3g} s + {model.k:.3g} s x "
            f"B^{model.gamma:.2f} at epoch {epoch}: batch {batch} -> {grown}, {gain:.2f}x the progress per second"
        )
