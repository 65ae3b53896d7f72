"""Checks every config field before anything starts: a bad value is a ValueError naming the
field and what is allowed, raised before TensorFlow is initialized or `model_dir` is touched."""

import numbers

from kbatch import data, distribute, layers, models, optimizers, scaling
from kbatch.training import recipe

MIXED_PRECISION = (None, "float32", "mixed_float16", "mixed_bfloat16")


def _positive_int(config, field):
    value = config[field]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"config.{field} must be a positive integer, got {value!r}.")


def _number(config, field, *, minimum=0.0, allow_none=False, strict=False):
    value = config[field]
    if value is None and allow_none:
        return
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real)
    if bad or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        none = " or None" if allow_none else ""
        raise ValueError(f"config.{field} must be a number {relation} {minimum}{none}, got {value!r}.")


def _choice(config, field, allowed):
    if config[field] not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"config.{field}={config[field]!r} is not one of {shown}.")


def validate(config):
    """Raise a ValueError naming the first bad field of `config`; returns nothing."""
    missing = [f for f in REQUIRED if f not in config]
    if missing:
        raise ValueError(f"config lacks the fields {', '.join(missing)} (see configs/mnist1d_cnn.py).")
    data.dataset_family(config.dataset)
    _choice(config, "model", models.NAMES)
    _choice(config, "norm", layers.NAMES)
    _choice(config, "optimizer", optimizers.NAMES)
    for field in ("batch_size", "base_batch_size", "num_epochs", "accumulation_steps", "steps_per_loop",
                  "evals_per_epoch"):
        _positive_int(config, field)
    _number(config, "base_learning_rate")
    _number(config, "warmup_epochs")
    if config.warmup_epochs >= config.num_epochs:
        raise ValueError(
            f"config.warmup_epochs={config.warmup_epochs} must be shorter than "
            f"config.num_epochs={config.num_epochs}."
        )
    scaling.scaling_exponent(config.lr_scaling)
    _choice(config, "decay", recipe.DECAYS)
    _check_decay_and_batch_phases(config)
    optimizers.resolve(config)
    recipe.base_recipe(config)  # the recipe's fields (bn_momentum, Adam's betas) in range
    distribute.check_strategy_name(config.strategy)
    # The replica count is known now for cpu:N; for the others it is checked again once the
    # strategy exists (still before anything is written).
    known_replicas = int(config.strategy[4:]) if config.strategy.startswith("cpu:") else 1
    distribute.per_replica_batch_size(config.batch_size, known_replicas, config.accumulation_steps)
    if isinstance(config.seed, bool) or not isinstance(config.seed, int):
        raise ValueError(f"config.seed must be an integer, got {config.seed!r}.")
    target = config.target_accuracy
    if target is not None and (not isinstance(target, numbers.Real) or not 0 < target <= 1):
        raise ValueError(f"config.target_accuracy must be None or in (0, 1], got {target!r}.")
    if isinstance(config.checkpoint_every, bool) or not isinstance(config.checkpoint_every, int) \
            or config.checkpoint_every < 0:
        raise ValueError(
            f"config.checkpoint_every must be an integer >= 0 (optimizer steps; 0 = each epoch), "
            f"got {config.checkpoint_every!r}."
        )
    _choice(config, "mixed_precision", MIXED_PRECISION)
    _number(config, "clip_global_norm", allow_none=True, strict=True)


def _epochs(config, field):
    """A tuple of positive, strictly increasing epochs, all before `num_epochs`."""
    value = config.get(field, ())
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(f"config.{field} must be a tuple of epochs, got {value!r}.")
    for i, epoch in enumerate(value):
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Real) or not 0 < epoch < config.num_epochs:
            raise ValueError(f"config.{field}[{i}]={epoch!r} must be an epoch in (0, num_epochs={config.num_epochs}).")
    if any(a >= b for a, b in zip(value, value[1:])):
        raise ValueError(f"config.{field} must be strictly increasing (sorted epochs), got {tuple(value)}.")
    return tuple(value)


def _check_decay_and_batch_phases(config):
    decay_boundaries = _epochs(config, "decay_boundaries")
    batch_boundaries = _epochs(config, "batch_boundaries")
    batch_sizes = config.get("batch_sizes", ())
    if isinstance(batch_sizes, (str, bytes)) or not hasattr(batch_sizes, "__len__") or any(
            isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in batch_sizes):
        raise ValueError(f"config.batch_sizes must be a tuple of positive integers, got {batch_sizes!r}.")
    if len(batch_sizes) != len(batch_boundaries):
        raise ValueError(
            f"config.batch_sizes ({len(batch_sizes)} entries) must have one global batch per epoch in "
            f"config.batch_boundaries ({len(batch_boundaries)}): batch_sizes[i] is used from "
            f"batch_boundaries[i] on.")
    if config.decay == "step":
        if not decay_boundaries:
            raise ValueError('config.decay="step" needs config.decay_boundaries (epochs where the LR drops).')
        _number(config, "decay_factor", minimum=1.0, strict=True)
        if batch_boundaries:
            raise ValueError('config.batch_boundaries cannot be combined with config.decay="step": use '
                             'config.anneal_batch=True to grow the batch at the decay boundaries, or another decay.')
    if config.decay == "polynomial":
        _number(config, "decay_power", strict=True)
    if config.get("anneal_batch", False):
        if config.decay != "step":
            raise ValueError(f'config.anneal_batch=True grows the batch where a step decay would cut the LR: '
                             f'it needs config.decay="step", got {config.decay!r}.')
        if scaling.scaling_exponent(config.lr_scaling) <= 0:
            raise ValueError(f"config.anneal_batch=True needs an lr_scaling that grows the LR with the batch, "
                             f"got {config.lr_scaling!r}.")
        maximum = config.get("max_batch_size")
        if maximum is not None and (isinstance(maximum, bool) or not isinstance(maximum, int)
                                    or maximum < config.batch_size):
            raise ValueError(f"config.max_batch_size must be None or an integer >= batch_size="
                             f"{config.batch_size}, got {maximum!r}.")
    for field in ("rescale_recipe", "anneal_batch"):
        if not isinstance(config.get(field, False), bool):
            raise ValueError(f"config.{field} must be True or False, got {config[field]!r}.")


REQUIRED = (
    "dataset", "model", "norm", "optimizer", "batch_size", "base_batch_size", "base_learning_rate",
    "lr_scaling", "warmup_epochs", "decay", "num_epochs", "strategy", "accumulation_steps",
    "steps_per_loop", "evals_per_epoch", "seed", "model_dir", "target_accuracy", "checkpoint_every",
    "mixed_precision", "clip_global_norm",
)
