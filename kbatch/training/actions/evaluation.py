"""Evaluating while training: one set of moving statistics first, then a pass over the
evaluation split."""

from kbatch.training.actions.action import Action


class AverageMovingStatistics(Action):
    """Before an evaluation or a checkpoint, one set of moving statistics on every replica:
    non-synchronized BN keeps one per replica (a collective: every worker takes part)."""

    def after_loop(self, run, loop):
        if run.step in run.plan.eval_points or run.step in run.plan.checkpoint_points:
            run.backend.average_moving_statistics()


class Evaluate(Action):
    """At each evaluation point: one pass over the evaluation split, appended to the history,
    written to TensorBoard (`eval/`), and published as `run.last_evaluation`; with the
    training throughput since the last evaluation. The task's `summary` (a language model's
    perplexity and token accuracy) is taken of the evaluation's means (`eval_`) and of the
    training updates' since the last evaluation (`train_`, in the history only)."""

    def __init__(self):
        self._examples, self._seconds, self._train_sums = 0, 0.0, {}

    def after_loop(self, run, loop):
        self._examples += loop.num_steps * loop.phase.batch_size
        self._seconds += loop.seconds
        for name in [*loop.task_values(), "count"]:
            self._train_sums[name] = self._train_sums.get(name, 0.0) + float(loop.records[name].sum())
        if run.step not in run.plan.eval_points:
            return
        sums = run.backend.evaluate()
        count = sums.pop("count")
        means = {name: value / count for name, value in sums.items()}
        means.update(run.task.summary(means))
        examples = run.plan.ledger.examples_seen(run.step)
        entry = {
            "step": run.step,
            "epoch": examples / run.info.num_train_examples,
            "examples": examples,
            **{f"eval_{name}": value for name, value in means.items()},
            **{f"train_{name}": value for name, value in self._train_summary(run).items()},
            "learning_rate": float(loop.records["learning_rate"][-1]),
            "global_batch_size": loop.phase.batch_size,
            "examples_per_second": self._examples / max(self._seconds, 1e-9),
        }
        self._examples, self._seconds, self._train_sums = 0, 0.0, {}
        run.history.evals.append(entry)
        run.backend.summaries.scalars("eval", run.step, means)
        run.backend.summaries.scalars("train", run.step, {"examples_per_second": entry["examples_per_second"]})
        run.backend.summaries.flush()
        run.publish("last_evaluation", entry)

    def _train_summary(self, run):
        """The task's `summary` of the training updates since the last evaluation ({} for most tasks)."""
        count = self._train_sums.pop("count", 0.0)
        return run.task.summary({name: value / count for name, value in self._train_sums.items()}) if count else {}
