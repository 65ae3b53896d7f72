"""Keras callbacks in a kbatch run: the hooks `model.fit` would call, at the points the runner has.

- `on_train_begin()`, then `on_epoch_begin(epoch)` before an epoch's first update;
- `on_train_batch_end(batch, logs)` after each compiled loop (Keras does the same with
  `steps_per_execution`): `batch` is the index of the loop's last update in its epoch, `logs`
  the loop's mean loss and metrics;
- `on_epoch_end(epoch, logs)` at an epoch's end: the epoch's mean training loss and metrics and
  the evaluation's, prefixed `val_` as in `model.fit`;
- `on_train_end(logs)` with the final evaluation, after `result.json` is written.

A callback that sets `model.stop_training = True` (EarlyStopping) ends the run after that loop.
The model is not compiled, so give monitoring callbacks their `mode`:
`EarlyStopping(monitor="val_accuracy", mode="max")`.
"""

import keras

from kbatch.training.actions.action import Action


class KerasCallbacks(Action):
    """An action that calls a list of `keras.callbacks.Callback`s."""

    after = ("Evaluate",)  # an epoch's logs hold `run.last_evaluation`

    def __init__(self, callbacks=()):
        self.callbacks = list(callbacks)

    def begin(self, run):
        self._list = keras.callbacks.CallbackList(
            self.callbacks,
            add_history=False,
            add_progbar=False,
            model=run.model,
            epochs=run.settings.num_epochs,
            verbose=0,
        )
        self._list.on_train_begin()
        self._start_epoch(run, run.plan.epoch_at(run.step))

    def _start_epoch(self, run, epoch):
        self._epoch, self._sums, self._count = epoch, {}, 0.0
        self._list.on_epoch_begin(epoch)

    def after_loop(self, run, loop):
        logs = loop.train_logs()
        count = float(loop.records["count"].sum())
        for name, mean in logs.items():
            self._sums[name] = self._sums.get(name, 0.0) + mean * count
        self._count += count
        start = run.plan.epoch_starts[self._epoch]
        self._list.on_train_batch_end(loop.last_step - start - 1, logs)
        if loop.last_step == run.plan.epoch_starts[self._epoch + 1]:
            epoch_logs = {name: total / self._count for name, total in self._sums.items()}
            epoch_logs.update(_val_logs(run.last_evaluation if run.evaluated(loop) else None))
            self._list.on_epoch_end(self._epoch, epoch_logs)
            if loop.last_step < run.plan.total_steps:
                self._start_epoch(run, self._epoch + 1)

    def end(self, run, result):
        final = run.history.evals[-1] if run.history.evals else None
        self._list.on_train_end(_val_logs(final))


def _val_logs(entry):
    """An evaluation's metrics as Keras names them: eval_accuracy -> val_accuracy."""
    if not entry:
        return {}
    return {"val_" + k[len("eval_") :]: v for k, v in entry.items() if k.startswith("eval_")}
