"""The linear probe as a run's evaluation metric, for a contrastive run (`task="contrastive"`)."""

import keras
import numpy as np

from kbatch.data.sources.views import TwoViews
from kbatch.diagnostics import linear_probe
from kbatch.training.actions.action import Action

CHUNK = 1024  # examples represented at once


class LinearProbe(Action):
    """At each evaluation, a linear probe (`kbatch.diagnostics.linear_probe`) fitted on the
    representation h = f(x) (`ContrastiveModel.represent`) of the first `examples` examples of the
    training stream, un-augmented, and read on the evaluation split's: the evaluation's
    `eval_accuracy` (the run's monitor: `result.json`'s `final_eval_accuracy`), and TensorBoard's
    `eval/accuracy`."""

    after = ("Evaluate",)

    def __init__(self, examples):
        self.examples, self._examples = examples, None

    def begin(self, run):
        source = run.backend.source
        if not isinstance(source, TwoViews) or not hasattr(run.model, "represent"):
            raise TypeError(
                "LinearProbe: the run must train a ContrastiveModel (kbatch.models.contrastive_model) on "
                "kbatch.data.two_views(source): the probe reads the representation of the source's un-augmented, "
                "labelled examples. Without labels or such a model, train with Contrastive(probe=False)."
            )

    def after_loop(self, run, loop):
        if not run.evaluated(loop):
            return
        if self._examples is None:  # the same examples at every evaluation: read once
            self._examples = self._read(run)
        x, y, x_eval, y_eval = self._examples
        accuracy = linear_probe.probe_accuracy(
            represent(run.model, x), y, represent(run.model, x_eval), y_eval, run.info.num_classes
        )
        run.last_evaluation["eval_accuracy"] = accuracy
        run.backend.summaries.scalars("eval", run.step, {"accuracy": accuracy})

    def _read(self, run):
        return probe_examples(run.backend.source.source, self.examples, run.settings.seed)


def probe_examples(source, examples, seed):
    """(x, y, x_eval, y_eval): the first `examples` training examples of `source`'s stream of
    `seed` and its evaluation split, as the probe reads them (un-augmented)."""
    x, y = source.examples_at(0, min(examples, source.describe().num_train_examples), seed)
    eval_parts = list(source.eval_chunks())
    return x, y, np.concatenate([p[0] for p in eval_parts]), np.concatenate([p[1] for p in eval_parts])


def represent(model, x):
    """The representation of examples `x` (`model.represent`), in chunks, as float64 NumPy."""
    parts = [keras.ops.convert_to_numpy(model.represent(x[i : i + CHUNK])) for i in range(0, len(x), CHUNK)]
    return np.concatenate(parts).astype(np.float64)
