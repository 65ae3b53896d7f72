"""The batch as a controlled quantity: the adaptive batch that follows the noise scale."""

import math

from kbatch.training.actions.action import Action


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
            print(
                f"kbatch: adaptive batch: B_simple {_above(b_simple, batch)} > batch {batch} at epoch {epoch}: the "
                f"batch doubles to {2 * batch} (lr by the {run.settings.lr_scaling} rule; was {before:.4g})",
                flush=True,
            )
