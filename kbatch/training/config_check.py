"""Checks every config field before anything starts: a bad value is a ValueError naming the
field and what is allowed, raised before TensorFlow is initialized or `model_dir` is touched."""

import numbers

from kbatch import data, distribute, layers, models, optimizers, scaling

MIXED_PRECISION = (None, "float32", "mixed_float16", "mixed_bfloat16")
DECAYS = ("cosine", "linear", "constant")


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
    _choice(config, "decay", DECAYS)
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


REQUIRED = (
    "dataset", "model", "norm", "optimizer", "batch_size", "base_batch_size", "base_learning_rate",
    "lr_scaling", "warmup_epochs", "decay", "num_epochs", "strategy", "accumulation_steps",
    "steps_per_loop", "evals_per_epoch", "seed", "model_dir", "target_accuracy", "checkpoint_every",
    "mixed_precision", "clip_global_norm",
)
