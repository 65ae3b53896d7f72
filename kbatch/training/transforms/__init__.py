"""The gradient pipeline, written once in `keras.ops` for every backend: what happens between the
update's summed micro-batch gradients and `optimizer.apply` (see `chain` for the order)."""

from kbatch.training.transforms.adascale import AdaScaleGain, ProgressSchedule
from kbatch.training.transforms.base import Context, Geometry, GradientTransform
from kbatch.training.transforms.chain import Chain
from kbatch.training.transforms.delay_line import DelayLine
from kbatch.training.transforms.noise_record import NoiseRecord
from kbatch.training.transforms.norm import ClipByGlobalNorm, GlobalNorm
from kbatch.training.transforms.spike_guard import SpikeGuard

__all__ = [
    "AdaScaleGain",
    "Chain",
    "ClipByGlobalNorm",
    "Context",
    "DelayLine",
    "Geometry",
    "GlobalNorm",
    "GradientTransform",
    "NoiseRecord",
    "ProgressSchedule",
    "SpikeGuard",
    "from_settings",
]


def from_settings(settings, optimizer, model, examples_per_epoch):
    """The chain a run's settings ask for, its state built as `optimizer` variables (call once,
    after `optimizer.build`)."""
    measure_noise = settings.noise_scale_every > 0
    chain = []
    if settings.clip_global_norm or settings.log_gradient_norm or measure_noise:
        chain.append(GlobalNorm())
    if measure_noise:
        chain.append(NoiseRecord())
    if settings.lr_gain == "adascale":
        chain.append(AdaScaleGain(settings.base_batch_size, examples_per_epoch, settings.noise_scale_decay))
    if settings.clip_global_norm:
        chain.append(ClipByGlobalNorm(settings.clip_global_norm))
    if settings.loss_spike_guard:
        chain.append(SpikeGuard(settings.loss_spike_guard))
    if settings.staleness:
        chain.append(DelayLine(settings.staleness))
    return Chain(chain).build(optimizer, model.trainable_variables)
