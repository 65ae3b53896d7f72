"""AdaScale's gain (`config.lr_gain = "adascale"`; Johnson, Agrawal, Gu & Guestrin, "AdaScale SGD",
ICML 2020): the learning rate of an update at S times the base batch B0 is

    r = (sigma^2 + |G|^2) / (sigma^2 / S + |G|^2)  (in [1, S])

times the base schedule's rate at the run's scale-invariant progress tau, the sum of the gains so
far (in base-batch updates). sigma^2 = tr(Sigma) / B0 is the variance of a base batch's gradient,
|G|^2 the squared norm of the true gradient: where noise dominates, r -> S (the linear rule); where
the gradient does, r -> 1 (a larger batch buys nothing). The two come from the same unbiased
estimates as the noise scale (`kbatch.diagnostics.noise_scale`, McCandlish et al. 2018), averaged
inside the step (bias-corrected moving averages, decay as `noise_scale_decay`).

`AdaScaleGain` computes r in the compiled update, after the noise record it reads, and keeps the
averages, r and tau as optimizer variables (checkpointed: a resumed run goes on exactly).
`ProgressSchedule` is the optimizer's learning rate: r x the base rate x the epoch schedule at tau
(in base epochs), 0 once tau reaches the run's epochs; the run ends there (`AdaScaleProgress`).
"""

import keras
from keras import ops

from kbatch.diagnostics import noise_scale
from kbatch.training.transforms.base import GradientTransform

RECORDS = ("adascale_gain", "adascale_progress")  # each update's, the same on every replica
NAMES = ("adascale_gradient_sq", "adascale_trace", "adascale_weight", "adascale_gain", "adascale_progress")


def gain(gradient_sq, trace, base_batch, batch):
    """r of the estimates |G|^2 and tr(Sigma) (negative ones read as 0), clipped to [1, batch / base_batch]."""
    scale = batch / base_batch
    variance = ops.maximum(trace, 0.0) / base_batch
    gradient_sq = ops.maximum(gradient_sq, 0.0)
    ratio = (variance + gradient_sq) / ops.maximum(variance / scale + gradient_sq, 1e-30)
    return ops.clip(ratio, 1.0, scale)


class AdaScaleGain(GradientTransform):
    """Records `adascale_gain` (r) and `adascale_progress` (tau after this update, in base epochs:
    base-batch updates x B0 / examples per epoch); the gradients pass unchanged."""

    def __init__(self, base_batch, examples_per_epoch, decay):
        super().__init__()
        self.base_batch, self.examples_per_epoch, self.decay = base_batch, examples_per_epoch, decay

    def build(self, optimizer, trainable_variables):
        self.variables = [
            optimizer.add_variable((), initializer="zeros", dtype="float32", aggregation="only_first_replica", name=n)
            for n in NAMES
        ]

    def apply(self, grads, state, context):
        batch = context.geometry.global_batch_size
        small_sq = context.record[noise_scale.RECORD]
        big_sq = ops.square(context.record["grad_norm"])
        gradient_sq, trace = noise_scale.unbiased_estimates(small_sq, big_sq, batch / context.parts, batch)
        average_g, average_t, weight, last_gain, progress = state
        d = self.decay
        average_g, average_t = d * average_g + (1 - d) * gradient_sq, d * average_t + (1 - d) * trace
        weight = d * weight + (1 - d)
        r = gain(average_g / weight, average_t / weight, self.base_batch, batch)
        progress = progress + last_gain * self.base_batch / self.examples_per_epoch  # tau before this update
        done = progress + r * self.base_batch / self.examples_per_epoch
        return grads, [average_g, average_t, weight, r, progress], {"adascale_gain": r, "adascale_progress": done}

    def schedule(self, base_rate, epoch_schedule, num_epochs):
        """The optimizer's learning rate for this gain (a `ProgressSchedule`)."""
        return ProgressSchedule(base_rate, epoch_schedule, num_epochs, self.variables[3], self.variables[4])


class ProgressSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """gain x `base_rate` x `epoch_schedule`(tau) for the update under way, read from AdaScale's
    variables (written by `AdaScaleGain` before the optimizer applies the update); 0 from
    `num_epochs` of progress on. The update count the optimizer passes is not used."""

    def __init__(self, base_rate, epoch_schedule, num_epochs, gain_variable, progress_variable):
        super().__init__()
        self.base_rate, self.epoch_schedule, self.num_epochs = base_rate, epoch_schedule, num_epochs
        self.gain_variable, self.progress_variable = gain_variable, progress_variable

    def __call__(self, step):
        progress = ops.convert_to_tensor(self.progress_variable)
        shape = self.epoch_schedule(progress) if callable(self.epoch_schedule) else self.epoch_schedule
        rate = ops.convert_to_tensor(self.gain_variable) * self.base_rate * ops.cast(shape, "float32")
        return ops.where(progress < self.num_epochs, rate, ops.zeros_like(rate))

    def get_config(self):
        return {"base_rate": self.base_rate, "num_epochs": self.num_epochs}
