"""What each update did, written down: its values to TensorBoard, the loss spikes the guard
scaled, the staleness each update had."""

import numpy as np

from kbatch import optimizers
from kbatch.training.actions.action import Action


class LogSteps(Action):
    """TensorBoard, one point per update: the task's values and what its `summary` derives from
    them (perplexity), the tokens of the update (a task with "tokens"), the learning rate, the global batch
    and gradient norm against the update count (`train/`), the learning rate and batch against
    examples seen (`examples/`); LARS's trust ratios once per loop."""

    def after_loop(self, run, loop):
        records, count, batch = loop.records, loop.records["count"], loop.phase.batch_size
        values = loop.task_values()
        first_example = run.plan.ledger.examples_seen(loop.first_step)
        for i in range(loop.num_steps):
            step, lr = loop.first_step + i + 1, records["learning_rate"][i]
            point = {name: records[name][i] / count[i] for name in values}
            point.update(run.task.summary(point))
            if "tokens" in values:  # a sequence task: the (unmasked) tokens this update trained on
                point["tokens_per_batch"] = records["tokens"][i]
            point.update(learning_rate=lr, global_batch_size=batch)
            if np.isfinite(records["grad_norm"][i]):
                point["gradient_norm"] = records["grad_norm"][i]
            run.backend.summaries.scalars("train", step, point)
            run.backend.summaries.scalars(
                "examples", first_example + i * batch, {"learning_rate": lr, "global_batch_size": batch}
            )
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
            print(
                f"kbatch: loss spike guard scaled {len(spikes)} update(s): {listed}{' ...' if len(spikes) > 5 else ''}",
                flush=True,
            )


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
