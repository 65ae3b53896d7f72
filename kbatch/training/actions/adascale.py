"""`AdaScaleProgress`: with `lr_gain="adascale"`, the gain and the scale-invariant progress logged,
and the run ended once the progress reaches the base schedule's `num_epochs` (Johnson et al. 2020)."""

import math

import numpy as np

from kbatch.training.actions.action import Action


class AdaScaleProgress(Action):
    """After each loop: every update's gain r and progress (base epochs) to TensorBoard
    (`train/adascale_gain`, `train/adascale_progress`). Once the fewest updates that may be left
    (each at the largest gain, S) are fewer than a loop's, the plan ends there (`Run.end_at`: an
    evaluation and a checkpoint), then again a little later until the progress is done: the run ends
    after the update that takes the progress to `num_epochs`, as AdaScale's loop does. That step is
    its state (a resumed finished run ends there again), and one console line says so."""

    def __init__(self, verbose=True):
        self.verbose, self.end_step = verbose, None

    def state(self):
        return None if self.end_step is None else {"end_step": self.end_step}

    def after_loop(self, run, loop):
        gains, progress = loop.records["adascale_gain"], loop.records["adascale_progress"]
        for i in range(loop.num_steps):
            point = {"adascale_gain": gains[i], "adascale_progress": progress[i]}
            run.backend.summaries.scalars("train", loop.first_step + i + 1, point)
        s, done = run.settings, float(progress[-1])
        if done >= s.num_epochs:
            self._end(run, loop, done)
            return
        most = loop.phase.batch_size / run.info.num_train_examples  # an update's progress at the largest gain, S
        fewest = math.ceil((s.num_epochs - done) / most)  # so many updates at least are left
        if fewest <= s.steps_per_loop or run.step == run.plan.total_steps:
            run.end_at(run.step + fewest)  # a loop ends there, and another after it until the progress is done

    def _end(self, run, loop, done):
        self.end_step = run.step
        run.end_at(run.step)
        if self.verbose and run.backend.is_chief:
            batch, base, gains = loop.phase.batch_size, run.settings.base_batch_size, loop.records["adascale_gain"]
            print(
                f"kbatch: AdaScale: {done:.3f} epochs of progress at batch {base} after {run.step} updates at batch "
                f"{batch} (mean gain {float(np.mean(gains)):.2f} of {batch / base:g} in the last loop): the run ends.",
                flush=True,
            )
