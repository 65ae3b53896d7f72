"""The console: a line when the run starts, a Keras progress bar per epoch, a line per
evaluation, a line when it is done. Only the chief prints."""

import shlex
import sys

import keras

from kbatch.training.actions.action import Action


class Progress(Action):
    """In a run with `verbose` (`actions.standard`), on the chief. An epoch's bar is made when the
    epoch starts (at `begin`, then at the end of the epoch before), since Keras times a bar from
    its making: the epoch's first loop, compilation included, counts."""

    after = ("Evaluate",)  # it prints `run.last_evaluation`

    def __init__(self):
        self.enabled, self._epoch, self._bar = False, None, None

    def begin(self, run):
        self.enabled = run.backend.is_chief
        if not self.enabled:
            return
        state = f"resuming at step {run.step}" if run.changed is not None and run.step else "starting"
        if run.changed:
            state += " with " + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in run.changed.items())
        sizes = " -> ".join(str(p.batch_size) for p in run.plan.phases)
        print(
            f"kbatch: {state}; {run.backend.layout}, global batch {sizes}, "
            f"{_length(run)}. "
            f"TensorBoard: tensorboard --logdir {shlex.quote(run.settings.model_dir)}",
            flush=True,
        )
        self._bar = _new_bar(run.plan, run.plan.epoch_at(run.step))

    def after_loop(self, run, loop):
        if not self.enabled:
            return
        plan = run.plan
        epoch = plan.epoch_at(loop.first_step)
        start = plan.epoch_starts[epoch]
        if epoch != self._epoch:
            print(f"epoch {epoch + 1}/{len(plan.epoch_starts) - 1}, global batch {_batches(plan, epoch)}", flush=True)
            self._epoch, self._examples, self._seconds = epoch, 0, 0.0
        self._examples += loop.num_steps * loop.phase.batch_size
        self._seconds += loop.seconds
        logs = loop.train_logs()
        values = {
            **logs,
            **run.task.summary(logs),
            "lr": float(loop.records["learning_rate"][-1]),
            "examples/s": self._examples / max(self._seconds, 1e-9),
        }
        self._bar.update(loop.last_step - start, values=list(values.items()))
        if loop.last_step == plan.epoch_starts[epoch + 1] and epoch + 2 < len(plan.epoch_starts):
            self._bar = _new_bar(plan, epoch + 1)  # the next epoch starts now
        if run.evaluated(loop):
            e = run.last_evaluation
            metrics = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in e.items() if k.startswith("eval_"))
            print(
                f"  step {e['step']}: {metrics}, lr {e['learning_rate']:.4g}, batch {e['global_batch_size']}, "
                f"{e['examples_per_second']:,.0f} examples/s",
                flush=True,
            )

    def end(self, run, result):
        if self.enabled:
            monitor = run.task.monitor
            final, best = result[f"final_eval_{monitor}"], result[f"best_eval_{monitor}"]
            shown = f"final eval {monitor} {final:.4f} (best {best:.4f})" if final is not None else "no evaluation"
            print(
                f"kbatch: done. {shown}, {run.step} steps, {result['wall_seconds']:.0f} s. "
                f"Results in {run.settings.model_dir}",
                flush=True,
            )


def _new_bar(plan, epoch):
    """The progress bar of `epoch`, made as it starts."""
    return keras.utils.Progbar(
        plan.epoch_starts[epoch + 1] - plan.epoch_starts[epoch],
        verbose=1 if sys.stdout.isatty() else 2,
        stateful_metrics=["lr", "examples/s"],
    )


def _batches(plan, epoch):
    """The global batch of `epoch`'s updates ("256", or "256 -> 512" when a phase starts inside it):
    an integer, where the progress bar prints every value as 256.0000."""
    first, end = plan.epoch_starts[epoch], plan.epoch_starts[epoch + 1]
    sizes = [p.batch_size for p in plan.phases if p.start_step < end and p.start_step + p.num_steps > first]
    return " -> ".join(str(size) for size in sizes)


def _length(run):
    """`625 steps in 5 epochs`; with AdaScale's gain, whose progress decides where the run ends, at most so many."""
    s, total, epochs = run.settings, run.plan.total_steps, len(run.plan.epoch_starts) - 1
    if s.lr_gain == "adascale":
        return (
            f"at most {total} steps in {epochs} epochs (until {s.num_epochs} epochs of progress at {s.base_batch_size})"
        )
    return f"{total} steps in {s.num_epochs} epochs"
