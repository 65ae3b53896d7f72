"""The console: a line when the run starts, a Keras progress bar per epoch, a line per
evaluation, a line when it is done. Only the chief prints."""

import sys

import keras

from kbatch.training.action import Action


class Progress(Action):
    """`enabled=False` prints nothing."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self._epoch = self._bar = None

    def begin(self, run):
        self.enabled = self.enabled and run.backend.is_chief
        if not self.enabled:
            return
        state = f"resuming at step {run.step}" if run.changed is not None and run.step else "starting"
        if run.changed:
            state += " with " + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in run.changed.items())
        sizes = " -> ".join(str(p.batch_size) for p in run.plan.phases)
        print(f"kbatch: {state}; {run.backend.layout}, global batch {sizes}, "
              f"{run.plan.total_steps} steps in {run.settings.num_epochs} epochs. "
              f"TensorBoard: tensorboard --logdir {run.settings.model_dir}", flush=True)

    def after_loop(self, run, loop):
        if not self.enabled:
            return
        plan = run.plan
        epoch = plan.epoch_at(loop.first_step)
        start = plan.epoch_starts[epoch]
        if epoch != self._epoch:
            print(f"epoch {epoch + 1}/{run.settings.num_epochs}", flush=True)
            self._bar = keras.utils.Progbar(plan.epoch_starts[epoch + 1] - start,
                                            verbose=1 if sys.stdout.isatty() else 2,
                                            stateful_metrics=["lr", "batch", "examples/s"])
            self._epoch, self._examples, self._seconds = epoch, 0, 0.0
        self._examples += loop.num_steps * loop.phase.batch_size
        self._seconds += loop.seconds
        values = {**loop.train_logs(), "lr": float(loop.records["learning_rate"][-1]),
                  "batch": loop.phase.batch_size, "examples/s": self._examples / max(self._seconds, 1e-9)}
        self._bar.update(loop.last_step - start, values=list(values.items()))
        if loop.eval_logs:
            e = loop.eval_logs
            metrics = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in e.items() if k.startswith("eval_"))
            print(f"  step {e['step']}: {metrics}, lr {e['learning_rate']:.4g}, batch {e['global_batch_size']}, "
                  f"{e['examples_per_second']:,.0f} examples/s", flush=True)

    def end(self, run, result):
        if self.enabled:
            monitor = run.task.monitor
            final, best = result[f"final_eval_{monitor}"], result[f"best_eval_{monitor}"]
            shown = f"final eval {monitor} {final:.4f} (best {best:.4f})" if final is not None else "no evaluation"
            print(f"kbatch: done. {shown}, {run.step} steps, {result['wall_seconds']:.0f} s. "
                  f"Results in {run.settings.model_dir}", flush=True)
