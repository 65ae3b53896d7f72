"""From config fields to the numbers of a run: the learning-rate schedule and the norm's arguments."""

import keras

from kbatch import scaling, schedules


def peak_learning_rate(config):
    """The base learning rate moved to the run's global batch by `config.lr_scaling`."""
    return scaling.scale_learning_rate(
        config.base_learning_rate, config.base_batch_size, config.batch_size, config.lr_scaling
    )


def learning_rate_schedule(config, steps_per_epoch):
    """Warmup for `warmup_epochs`, then `decay` ("cosine", "linear" or "constant") to the end.

    Indexed by optimizer updates: one per global batch, accumulated micro-batches included.
    """
    peak = peak_learning_rate(config)
    total_steps = config.num_epochs * steps_per_epoch
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    decay_steps = max(total_steps - warmup_steps, 1)
    if config.decay == "cosine":
        after = keras.optimizers.schedules.CosineDecay(peak, decay_steps)
    elif config.decay == "linear":
        after = keras.optimizers.schedules.PolynomialDecay(peak, decay_steps, end_learning_rate=0.0)
    else:
        after = peak
    return schedules.Warmup(after, warmup_steps) if warmup_steps else after


def norm_kwargs(config):
    """Arguments for `kbatch.layers.get(config.norm, ...)` from the config."""
    kwargs = {"momentum": config.get("bn_momentum", 0.99), "groups": config.get("norm_groups", 8)}
    if config.norm == "ghost_batch":
        kwargs["virtual_batch_size"] = config.virtual_batch_size
    return kwargs
