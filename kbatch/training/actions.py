"""The actions a run takes after each compiled loop of updates, one small class per job (see
`kbatch.training.action.Action` for the hooks); `standard(settings)` builds the ones a config
turns on, in order."""

import contextlib
import math
import signal
import sys
import threading

import keras
import numpy as np

from kbatch import optimizers
from kbatch.diagnostics import hessian, noise_scale
from kbatch.training.action import Action
from kbatch.training.callbacks import KerasCallbacks
from kbatch.training.progress import Progress
from kbatch.training.stops import Interrupted

__all__ = ["Action", "AverageMovingStatistics", "CheckFinite", "Checkpoint", "Evaluate", "KerasCallbacks",
           "AdaptBatchSize", "LogSteps", "MeasureNoiseScale", "MeasureSharpness", "Progress", "RecordStaleness",
           "ReportLossSpikes",
           "WatchInterrupt", "WatchPreemption", "standard"]


def diverged(run, what):
    """The one-line FloatingPointError of a run that stopped being finite: what happened, the last
    good checkpoint, and how to continue from it."""
    latest = run.backend.latest_checkpoint
    return FloatingPointError(
        f"{what}: stopping. The last good checkpoint, kept as it was, is {latest or '(none yet)'}. To go on "
        f"{'from it' if latest else 'from the start'} at a lower learning rate: the same command with "
        f"--config.model_dir={run.settings.model_dir} --config.base_learning_rate=<lower>.")


class CheckFinite(Action):
    """Stop with a FloatingPointError at the first update whose loss is not finite, naming the
    last checkpoint (kept as it was)."""

    def after_loop(self, run, loop):
        losses = loop.records["loss"]
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise diverged(run, f"The training loss is {losses[bad[0]]} at step {loop.first_step + bad[0] + 1}")


class LogSteps(Action):
    """TensorBoard, one point per update: the task's values, the learning rate, the global batch
    and gradient norm against the update count (`train/`), the learning rate and batch against
    examples seen (`examples/`); LARS's trust ratios once per loop."""

    def after_loop(self, run, loop):
        records, count, batch = loop.records, loop.records["count"], loop.phase.batch_size
        values = loop.task_values()
        first_example = run.plan.ledger.examples_seen(loop.first_step)
        for i in range(loop.num_steps):
            step, lr = loop.first_step + i + 1, records["learning_rate"][i]
            point = {name: records[name][i] / count[i] for name in values}
            point.update(learning_rate=lr, global_batch_size=batch)
            if np.isfinite(records["grad_norm"][i]):
                point["gradient_norm"] = records["grad_norm"][i]
            run.backend.summaries.scalars("train", step, point)
            run.backend.summaries.scalars("examples", first_example + i * batch,
                                          {"learning_rate": lr, "global_batch_size": batch})
        if optimizers.kind(run.optimizer) == "lars":
            stats = optimizers.unwrap(run.optimizer).trust_ratio_stats()
            run.backend.summaries.scalars("train", loop.last_step, {f"trust_ratio/{k}": v for k, v in stats.items()})


class ReportLossSpikes(Action):
    """With `loss_spike_guard`: each update whose step the guard scaled (`spike_guard`) goes to
    TensorBoard (`train/loss_spike_factor`), to the history (`result.json`'s `loss_spikes`) and,
    on the console, to one line per loop that had any."""

    def __init__(self, verbose=True):
        self.verbose = verbose

    def after_loop(self, run, loop):
        factors = loop.records["spike_factor"]
        spikes = [(loop.first_step + i + 1, float(f)) for i, f in enumerate(factors) if f < 1.0]
        for step, factor in spikes:
            run.history.loss_spikes.append({"step": step, "factor": factor})
            run.backend.summaries.scalars("train", step, {"loss_spike_factor": factor})
        if spikes and self.verbose and run.backend.is_chief:
            listed = ", ".join(f"step {step} x{factor:.2f}" for step, factor in spikes[:5])
            print(f"kbatch: loss spike guard scaled {len(spikes)} update(s): {listed}"
                  f"{' ...' if len(spikes) > 5 else ''}", flush=True)


class RecordStaleness(Action):
    """Under `strategy="parameter_server"`: the staleness each update was measured to have
    (`ps_backend`) goes to TensorBoard, one histogram per loop (`train/staleness`) and the loop's
    mean (`train/staleness_mean`), and into the counts of `result.json`'s `staleness` (updates
    per delay, published as `run.staleness_counts`; its state, so a resumed run adds to them)."""

    def __init__(self):
        self._counts = []

    def state(self):
        return {"counts": list(self._counts)}

    def restore_state(self, state):
        self._counts = list(state["counts"])

    def begin(self, run):
        run.publish("staleness_counts", self._counts)

    def after_loop(self, run, loop):
        values = loop.records["staleness"]
        for tau, n in enumerate(np.bincount(values.astype(np.int64))):
            self._counts.extend([0] * (tau + 1 - len(self._counts)))
            self._counts[tau] += int(n)
        run.publish("staleness_counts", self._counts)
        run.backend.summaries.histogram("train", loop.last_step, "staleness", values)
        run.backend.summaries.scalars("train", loop.last_step, {"staleness_mean": float(values.mean())})


class MeasureNoiseScale(Action):
    """With `noise_scale_every` N > 0: takes in every update's squared gradient norms (the global
    batch's and its parts', from the step's record), and every N updates logs the gradient noise
    scale B_simple, |G|^2, tr(Sigma), the temperature lr / B and B / B_simple to TensorBoard
    (`noise/`) and to the history (`result.json`'s `noise_scale`); after each loop it publishes
    B_simple as `run.noise_scale`. Its averages (decay `decay`) are its state, so a resumed run
    goes on with them."""

    def __init__(self, every, decay):
        self.every = every
        self.estimate = noise_scale.NoiseScale(decay)

    def state(self):
        return {"averages": self.estimate.state()}

    def restore_state(self, state):
        self.estimate = noise_scale.NoiseScale(self.estimate.decay, state["averages"])

    def begin(self, run):
        self.parts = run.backend.noise_parts()[0]

    def after_loop(self, run, loop):
        records, batch = loop.records, loop.phase.batch_size
        for i in range(loop.num_steps):
            self.estimate.update(records[noise_scale.RECORD][i], records["grad_norm"][i] ** 2,
                                 batch / self.parts, batch)
            step = loop.first_step + i + 1
            if step % self.every == 0:
                b_simple = self.estimate.simple
                point = {"b_simple": b_simple, "gradient_sq": self.estimate.gradient_sq,
                         "trace_sigma": self.estimate.trace,
                         "temperature": float(records["learning_rate"][i]) / batch,
                         "batch_over_b_simple": batch / b_simple if b_simple > 0 else float("nan")}
                run.backend.summaries.scalars("noise", step, point)
                run.history.noise_scale.append({"step": step, "global_batch_size": batch, **point})
        run.publish("noise_scale", self.estimate.simple)


def _above(value, bound):
    """`value` (> `bound`) with the fewest decimals that still print it above `bound`: 32.42 > 32."""
    digits = next((d for d in range(7) if math.floor(value * 10**d) / 10**d > bound), 7)
    return f"{value:,.{digits}f}"


class AdaptBatchSize(Action):
    """With `batch_schedule="adaptive"`: at the end of each epoch but the last, double the global
    batch (up to `max_batch_size`) if the noise scale B_simple is above it (McCandlish et al. 2018:
    below B_simple a larger batch still cuts the updates nearly in proportion), the rate moved by
    `lr_scaling` (`Run.adapt`). The decisions (`run.batch_decisions`) are its state, so a resumed
    run follows them exactly (`Run` re-plans with them when it is built), and each is one console line."""

    after = ("MeasureNoiseScale",)

    def __init__(self, max_batch_size, verbose=True):
        self.max_batch_size, self.verbose = max_batch_size, verbose
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
        if not (b_simple > batch and 2 * batch <= min(self.max_batch_size, run.info.num_train_examples)):
            return
        epoch = epoch_ends.index(run.step) + 1
        before = float(loop.records["learning_rate"][-1])
        self._decisions.append({"epoch": epoch, "batch": 2 * batch, "step": run.step})
        run.adapt(self._decisions)
        if self.verbose and run.backend.is_chief:
            print(f"kbatch: adaptive batch: B_simple {_above(b_simple, batch)} > batch {batch} at epoch {epoch}: the "
                  f"batch doubles to {2 * batch} (lr by the {run.settings.lr_scaling} rule; was {before:.4g})",
                  flush=True)


class AverageMovingStatistics(Action):
    """Before an evaluation or a checkpoint, one set of moving statistics on every replica:
    non-synchronized BN keeps one per replica (a collective: every worker takes part)."""

    def after_loop(self, run, loop):
        if run.step in run.plan.eval_points or run.step in run.plan.checkpoint_points:
            run.backend.average_moving_statistics()


class Evaluate(Action):
    """At each evaluation point: one pass over the evaluation split, appended to the history,
    written to TensorBoard (`eval/`), and published as `run.last_evaluation`; with the
    training throughput since the last evaluation."""

    def __init__(self):
        self._examples, self._seconds = 0, 0.0

    def after_loop(self, run, loop):
        self._examples += loop.num_steps * loop.phase.batch_size
        self._seconds += loop.seconds
        if run.step not in run.plan.eval_points:
            return
        sums = run.backend.evaluate()
        count = sums.pop("count")
        examples = run.plan.ledger.examples_seen(run.step)
        entry = {"step": run.step, "epoch": examples / run.info.num_train_examples, "examples": examples,
                 **{f"eval_{name}": value / count for name, value in sums.items()},
                 "learning_rate": float(loop.records["learning_rate"][-1]),
                 "global_batch_size": loop.phase.batch_size,
                 "examples_per_second": self._examples / max(self._seconds, 1e-9)}
        self._examples, self._seconds = 0, 0.0
        run.history.evals.append(entry)
        run.backend.summaries.scalars("eval", run.step, {name: value / count for name, value in sums.items()})
        run.backend.summaries.scalars("train", run.step, {"examples_per_second": entry["examples_per_second"]})
        run.backend.summaries.flush()
        run.publish("last_evaluation", entry)


class MeasureSharpness(Action):
    """With `sharpness_every` N > 0: at every N-th evaluation, the sharpness lambda_max
    (`kbatch.diagnostics.sharpness`) of the task's loss on the first `PROBE_EXAMPLES` examples of
    the evaluation split, and lr x lambda_max beside the bound past which heavy-ball SGD diverges
    on a quadratic, 2 + 2 x momentum (Cohen et al. 2021; for SGD only: Adam's preconditioning and
    LARS's trust ratios move it). Logged to TensorBoard (`diagnostics/`) and the
    history (`result.json`'s `sharpness`); a warning line each time lr x lambda_max crosses it."""

    PROBE_EXAMPLES = 1024
    after = ("Evaluate",)

    def __init__(self, every, verbose=True):
        self.every, self.verbose, self._above, self._hvp = every, verbose, False, None

    def after_loop(self, run, loop):
        if not run.evaluated(loop) or len(run.history.evals) % self.every:
            return
        if self._hvp is None:  # built (and traced) once; it reads the weights as they are
            task = run.task
            loss = lambda y, out: keras.ops.mean(task.per_example(y, out)["loss"])  # noqa: E731
            self._hvp = hessian.hessian_vector_product(run.model, loss, run.backend.probe_batch(self.PROBE_EXAMPLES))
        value = hessian.top_eigenvalue(self._hvp, [v.shape for v in run.model.trainable_variables])
        lr = float(loop.records["learning_rate"][-1])
        sgd = optimizers.kind(run.optimizer) == "sgd"
        bound = 2.0 + 2.0 * float(optimizers.unwrap(run.optimizer).momentum) if sgd else None
        entry = {"step": run.step, "sharpness": value, "lr_times_sharpness": lr * value, "stability_bound": bound}
        run.history.sharpness.append(entry)
        run.backend.summaries.scalars("diagnostics", run.step, {k: v for k, v in entry.items()
                                                                if k != "step" and v is not None})
        above = bound is not None and lr * value > bound
        if above and not self._above and self.verbose and run.backend.is_chief:
            print(f"kbatch: warning: lr x sharpness = {lr * value:.3g} at step {run.step} is past the stability "
                  f"bound {bound:.3g} (2 + 2 x momentum; Cohen et al. 2021): the loss may oscillate or diverge. A "
                  "lower learning rate or a longer warmup keeps it below.", flush=True)
        self._above = above


class Checkpoint(Action):
    """At each checkpoint point: the model, optimizer and step, with the history beside them;
    never a checkpoint with a weight or optimizer slot that is not finite (an update can make
    one infinite while its loss was still finite)."""

    def after_loop(self, run, loop):
        if run.step in run.plan.checkpoint_points:
            if not run.backend.all_finite():
                raise diverged(run, f"A weight or optimizer slot is not finite after step {run.step}")
            run.save(run.step)


class WatchPreemption(Action):
    """On SIGTERM or a maintenance notice: save where the run is, then raise `Preempted`."""

    def __init__(self):
        self._stack = contextlib.ExitStack()

    def begin(self, run):
        self._check = self._stack.enter_context(run.backend.preemption(run.save, lambda: run.step))

    def after_loop(self, run, loop):
        self._check(run.step)

    def close(self, run):
        self._stack.close()


class WatchInterrupt(Action):
    """Ctrl-C: finish the loop under way, save, and raise `Interrupted` (a second Ctrl-C stops
    at once). Signal handlers can only be set on the main thread: elsewhere nothing watches."""

    def __init__(self):
        self._previous, self._pressed, self._unraisable = None, False, None

    def begin(self, run):
        # Several workers would each see Ctrl-C after a different loop, and a save is a
        # collective: there it stops at once, as before, and resumes from the last checkpoint.
        if threading.current_thread() is threading.main_thread() and not run.backend.multi_worker:
            self._previous = signal.signal(signal.SIGINT, self._press)

    def _press(self, signum, frame):
        signal.signal(signal.SIGINT, self._previous)
        self._pressed = True
        # A second Ctrl-C raises KeyboardInterrupt wherever the main thread is; where that is a
        # garbage collector's callback, Python swallows it and prints a traceback: not that one.
        self._unraisable = sys.unraisablehook
        sys.unraisablehook = lambda unraisable: (
            None if issubclass(unraisable.exc_type, KeyboardInterrupt) else self._unraisable(unraisable))

    def after_loop(self, run, loop):
        if self._pressed:
            run.save(run.step)
            raise Interrupted(run.step, run.backend.latest_checkpoint)

    def close(self, run):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        if self._unraisable is not None:
            sys.unraisablehook = self._unraisable


def standard(settings, verbose=True):
    """The actions `settings` (`Settings`) turn on, each with its parameters, in the order they run."""
    s = settings
    return [CheckFinite(), LogSteps(),
            *([ReportLossSpikes(verbose)] if s.loss_spike_guard else []),
            *([RecordStaleness()] if s.strategy == "parameter_server" else []),
            *([MeasureNoiseScale(s.noise_scale_every, s.noise_scale_decay)] if s.noise_scale_every else []),
            *([AdaptBatchSize(s.max_batch_size, verbose)] if s.batch_schedule == "adaptive" else []),
            AverageMovingStatistics(), Evaluate(),
            *([MeasureSharpness(s.sharpness_every, verbose)] if s.sharpness_every else []),
            *([Progress()] if verbose else []),
            Checkpoint(), WatchPreemption(), WatchInterrupt()]
