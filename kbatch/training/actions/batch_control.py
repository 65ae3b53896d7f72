"""The batch as a controlled quantity: the adaptive batch, the batch warmup and the goodput
controller, which follow the noise scale (and, for goodput, the time an update takes)."""

import math
import statistics

from kbatch.diagnostics import goodput, step_memory, update_time
from kbatch.training.actions import measurements
from kbatch.training.actions.action import Action

KEPT_TIMES = 20  # the latest loops' seconds per update kept for each batch


def _above(value, bound):
    """`value` (> `bound`) with the fewest decimals that still print it above `bound`: 32.42 > 32."""
    digits = next((d for d in range(7) if math.floor(value * 10**d) / 10**d > bound), 7)
    return f"{value:,.{digits}f}"


def probe_memory(run, budget, limit, verbose):
    """`AdaptBatchSize`'s memory state: the `budget` bytes, the largest micro-batch per device whose
    compiled update fits it (`step_memory.largest_micro_batch` from the run's first micro-batch, up
    to a global `limit`) and the bytes measured; a console line saying what it found."""
    s, replicas = run.settings, run.backend.num_replicas
    halves = run.backend.noise_parts(s.accumulation_steps)[1]
    first = s.batch_size // (replicas * step_memory.passes(s.accumulation_steps, halves))
    largest, measured = step_memory.largest_micro_batch(run.backend.step_memory_bytes, first, limit // replicas, budget)
    if verbose and run.backend.is_chief:
        sizes = ", ".join(f"{m:,}: {step_memory.in_words(b)}" for m, b in sorted(measured.items()))
        print(
            f"kbatch: goodput: an update's memory by a device's micro-batch ({sizes}); "
            f"{step_memory.in_words(budget)} holds micro-batches of {largest:,}",
            flush=True,
        )
    return {
        "budget_bytes": budget,
        "largest_micro_batch": largest,
        "measured": {str(m): b for m, b in measured.items()},
    }


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
    (which compiles), or takes `update_time_model` (T0, k, gamma) as given; under a device's memory
    (`Backend.memory_budget_bytes`) it also decides each batch's accumulation steps, the fewest whose
    micro-batch fits by the compiled update's memory (`probe_memory`, once when training begins).
    The decisions (`run.batch_decisions`), the times and the memory found are its state, so a
    resumed run follows the decisions exactly (`Run` re-plans with them when it is built) and
    decides on from the same measurements; each decision is one console line."""

    after = ("MeasureNoiseScale",)

    def __init__(self, max_batch_size, verbose=True, schedule="adaptive", multiple=1.0, update_time_model=None):
        self.max_batch_size, self.verbose, self.schedule, self.multiple = max_batch_size, verbose, schedule, multiple
        self.given_model = update_time.UpdateTimeFit(*update_time_model, residual=0.0) if update_time_model else None
        self._decisions, self._seconds, self._phase, self._memory = [], {}, None, None

    def state(self):
        state = {"decisions": list(self._decisions)}
        if self._seconds:  # seconds of an update at accumulation 1, by its global batch
            state["update_seconds"] = {str(b): s for b, s in self._seconds.items()}
        return {**state, "memory": self._memory} if self._memory else state

    def restore_state(self, state):
        self._seconds = {int(b): list(s) for b, s in state.get("update_seconds", {}).items()}
        self._memory = state.get("memory")

    def begin(self, run):  # its saved state: the decisions `Run` re-planned with when it was built
        self._decisions = list(run.batch_decisions)
        if self.schedule == "goodput" and self._memory is None:
            budget = run.backend.memory_budget_bytes()
            if budget is not None:
                limit = min(self.max_batch_size, run.info.num_train_examples)
                self._memory = probe_memory(run, budget, limit, self.verbose)

    def after_loop(self, run, loop):
        if self.schedule == "goodput" and self.given_model is None:
            self._time(run, loop)
        epoch_ends = run.plan.epoch_starts[1:-1]
        if run.step not in epoch_ends:
            return
        batch, b_simple, accumulation = loop.phase.batch_size, run.noise_scale, run.accumulation_at(loop.phase)
        limit = min(self.max_batch_size, run.info.num_train_examples)
        model = self._model() if self.schedule == "goodput" else None  # fitted once a decision
        grown, steps = self._next(run, batch, accumulation, b_simple, limit, model)
        if (grown, steps) == (batch, accumulation):
            return
        epoch = epoch_ends.index(run.step) + 1
        before = float(loop.records["learning_rate"][-1])
        decision = {"epoch": epoch, "batch": grown, "step": run.step}
        self._decisions.append({**decision, "accumulation_steps": steps} if self._memory else decision)
        run.adapt(self._decisions)
        if self.verbose and run.backend.is_chief:
            why = self._why(b_simple, epoch, run.settings.batch_size, (batch, accumulation), (grown, steps), model)
            print(f"kbatch: {why} (lr by the {run.settings.lr_scaling} rule; was {before:.4g})", flush=True)

    def _time(self, run, loop):
        """Keep the loop's seconds per update at its batch, unless it is its phase's first; with k
        accumulation steps an update is k of the batch B / k (`goodput.update_seconds`)."""
        first = loop.phase is not self._phase
        self._phase = loop.phase
        if not first:
            steps = run.accumulation_at(loop.phase)
            times = self._seconds.setdefault(loop.phase.batch_size // steps, [])
            times[:] = [*times, loop.seconds / loop.num_steps / steps][-KEPT_TIMES:]

    def _model(self):
        measured = {b: statistics.median(s) for b, s in self._seconds.items() if s}
        return self.given_model or goodput.time_model(measured)

    def _next(self, run, batch, accumulation, b_simple, limit, model):
        """(batch, accumulation steps) after this epoch's end."""
        if self.schedule != "goodput":
            return next_batch(self.schedule, batch, b_simple, limit, self.multiple), accumulation
        steps = self._accumulation(run, accumulation)
        grown = goodput.best_batch(batch, run.settings.batch_size, b_simple, limit, model, steps)
        return grown, steps(grown) or accumulation

    def _accumulation(self, run, accumulation):
        """`accumulation(B)`: the steps global batch B takes: the fewest that fit the memory probed,
        `accumulation` (the phase's) without a memory bound."""
        if self._memory is None:
            return lambda b: accumulation
        halves = run.backend.noise_parts(1)[1]
        fewest = 2 if halves and measurements.halves_meet_batch_norm(run.model, run.task) else 1
        largest = self._memory["largest_micro_batch"]
        return lambda b: step_memory.accumulation_for(b, run.backend.num_replicas, largest, fewest, halves)

    def _why(self, b_simple, epoch, base, before, after, model):
        """The decision at `epoch` from (batch, accumulation steps) `before` to `after`, in words."""
        (batch, _), (grown, _) = before, after
        if self.schedule == "adaptive":
            return (
                f"adaptive batch: B_simple {_above(b_simple, batch)} > batch {batch} at epoch {epoch}: the "
                f"batch doubles to {grown}"
            )
        if self.schedule == "goodput":
            return self._why_goodput(b_simple, epoch, base, before, after, model)
        return (
            f"batch warmup: {self.multiple:g} x B_simple = {self.multiple * b_simple:,.0f} at epoch {epoch}: "
            f"the batch grows from {batch} to {grown}"
        )

    def _why_goodput(self, b_simple, epoch, base, before, after, model):
        (batch, _), (grown, steps) = before, after
        if model is None:
            return (
                f"goodput: one batch timed, B_simple {_above(b_simple, batch)} > batch {batch} at epoch {epoch}: "
                f"the batch doubles to {grown} (and is timed there)"
            )
        gain = goodput.goodput(grown, base, b_simple, goodput.update_seconds(model, *after)) / goodput.goodput(
            batch, base, b_simple, goodput.update_seconds(model, *before)
        )
        return (
            f"goodput: B_simple {b_simple:.6g}, T_update(B) = {model.t0:.3g} s + {model.k:.3g} s x "
            f"B^{model.gamma:.2f} at epoch {epoch}: batch {batch} -> {grown}"
            f"{f' in {steps} accumulation step(s)' if self._memory else ''}, {gain:.2f}x the progress per second"
        )
