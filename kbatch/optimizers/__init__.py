"""Optimizers for large batches (LARS, which Keras lacks), and a factory from a config or a name.

Every optimizer the factory builds, and `LARS` built directly, leaves biases and normalization
parameters out of weight decay (and LARS out of layer adaptation) unless told otherwise.
Keras's optimizers decide by the variable's name; call `apply_exclusions(optimizer, model)` once
the model is built (and again after `keras.models.load_model`) so that patterns naming a layer or
a path (`stage3_block1_conv1`, `dense_1/bias$`) work too.
"""

import keras

from kbatch import checks
from kbatch.optimizers.exclusions import (
    DEFAULT_EXCLUDE,
    PATTERNS_ATTRIBUTE,
    apply_exclusions,
    check_patterns,
    short_name,
)
from kbatch.optimizers.kinds import kind
from kbatch.optimizers.lars import LARS
from kbatch.optimizers.loss_scale import unwrap
from kbatch.schedules import PerUpdate

__all__ = [
    "DEFAULT_EXCLUDE",
    "LARS",
    "NAMES",
    "apply_exclusions",
    "build",
    "check_patterns",
    "kind",
    "resolve",
    "short_name",
    "unwrap",
]

NAMES = ("sgd", "momentum", "nesterov", "lars", "lamb", "adamw", "adam")

# Config fields `build` reads, with the value used when neither the call nor the config sets one.
DEFAULTS = {
    "momentum": 0.9,
    "weight_decay": 0.0,
    "nesterov": False,
    "trust_coefficient": 0.001,
    "exclude_from_weight_decay": DEFAULT_EXCLUDE,
    "exclude_from_layer_adaptation": None,  # LARS: the weight-decay exclusions
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": None,  # each optimizer's own default: 0 for LARS, 1e-7 for Adam, AdamW, Lamb
}


def resolve(config_or_name, **overrides):
    """(name, settings): the optimizer name and the `DEFAULTS` fields, validated.

    Each field is the keyword argument if given and not None, else the config's if it has the
    field and it is not None, else the default. It creates no TensorFlow state, so a config can be
    checked before anything starts; a ValueError names the field and what is allowed.
    """
    config = None if isinstance(config_or_name, str) else config_or_name
    name = config_or_name if config is None else config.get("optimizer")
    checks.choice("optimizer", name, NAMES)
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown optimizer setting(s) {sorted(unknown)}: choose from {list(DEFAULTS)}.")
    s = {}
    for field, default in DEFAULTS.items():
        value = overrides.get(field)
        if value is None and config is not None:
            value = config.get(field)
        s[field] = default if value is None else value
    for field in ("momentum", "beta_1", "beta_2"):
        s[field] = checks.real(field, s[field], low=0, high=1, high_open=True)
    for field in ("weight_decay", "trust_coefficient"):
        s[field] = checks.real(field, s[field], low=0)
    s["epsilon"] = checks.real("epsilon", s["epsilon"], low=0, allow_none=True)
    checks.boolean("nesterov", s["nesterov"])
    for field in ("exclude_from_weight_decay", "exclude_from_layer_adaptation"):
        if s[field] is not None:
            s[field] = check_patterns(s[field], field)
    return name, s


def build(
    config_or_name,
    learning_rate,
    *,
    momentum=None,
    weight_decay=None,
    nesterov=None,
    trust_coefficient=None,
    exclude_from_weight_decay=None,
    exclude_from_layer_adaptation=None,
    beta_1=None,
    beta_2=None,
    epsilon=None,
    **kwargs,
):
    """A new optimizer: one of `NAMES`, given by name or by a config's `optimizer` field.

    A config (an `ml_collections.ConfigDict` or a dict) supplies, where it has them and they are
    not None, the fields `optimizer`, `momentum` (0.9), `weight_decay` (0.0), `nesterov` (False;
    for "momentum" and "lars"; the name "nesterov" is SGD with it on), `trust_coefficient`
    (0.001, LARS), `exclude_from_weight_decay` (`DEFAULT_EXCLUDE`: biases and normalization
    parameters), `exclude_from_layer_adaptation` (LARS; None: the same as weight decay), `beta_1`,
    `beta_2` (Adam, AdamW, Lamb) and `epsilon` (LARS's trust-ratio epsilon, or Adam's). A keyword
    argument that is not None wins over the config (see `resolve`). `learning_rate` is a float or
    a Keras schedule; other keyword arguments (`global_clipnorm`, `use_ema`, ...) go to the
    optimizer. With Keras's `gradient_accumulation_steps=k`, a schedule is wrapped in
    `kbatch.schedules.PerUpdate(schedule, k)` so that it counts updates, not micro-steps.

    `weight_decay` is LARS's L2 term inside the trust ratio for "lars", Keras's decoupled decay
    (w -= lr * weight_decay * w each step) for the others. "sgd" has no momentum.
    """
    name, s = resolve(
        config_or_name,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
        trust_coefficient=trust_coefficient,
        exclude_from_weight_decay=exclude_from_weight_decay,
        exclude_from_layer_adaptation=exclude_from_layer_adaptation,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
    )
    optimizer = _new_optimizer(name, s, learning_rate, kwargs)
    excluded = s["exclude_from_weight_decay"]
    # Short-name matching now (enough for the defaults under model.fit); `apply_exclusions`
    # re-reads the patterns and adds the variables they match by path.
    setattr(optimizer, PATTERNS_ATTRIBUTE, excluded)
    optimizer.exclude_from_weight_decay(var_names=list(excluded) or None)
    return optimizer


def _per_update(learning_rate, accumulation_steps):
    """A schedule read at update counts under Keras's gradient accumulation (see `PerUpdate`)."""
    schedule = isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule)
    if accumulation_steps and schedule and not isinstance(learning_rate, PerUpdate):
        return PerUpdate(learning_rate, accumulation_steps)
    return learning_rate


def _new_optimizer(name, s, learning_rate, kwargs):
    """Optimizer `name` with the resolved settings `s` (see `build`) and Keras's other `kwargs`."""
    learning_rate = _per_update(learning_rate, kwargs.get("gradient_accumulation_steps"))
    if s["epsilon"] is not None:
        kwargs = {**kwargs, "epsilon": s["epsilon"]}
    if name == "lars":
        return LARS(
            learning_rate,
            momentum=s["momentum"],
            nesterov=s["nesterov"],
            weight_decay=s["weight_decay"],
            trust_coefficient=s["trust_coefficient"],
            exclude_from_weight_decay=s["exclude_from_weight_decay"],
            exclude_from_layer_adaptation=s["exclude_from_layer_adaptation"],
            **kwargs,
        )
    if name in ("sgd", "momentum", "nesterov"):
        return keras.optimizers.SGD(
            learning_rate,
            momentum=0.0 if name == "sgd" else s["momentum"],
            nesterov=name == "nesterov" or (name == "momentum" and s["nesterov"]),
            weight_decay=s["weight_decay"] or None,
            **kwargs,
        )
    cls = {"lamb": keras.optimizers.Lamb, "adamw": keras.optimizers.AdamW, "adam": keras.optimizers.Adam}[name]
    decay = s["weight_decay"] if name == "adamw" else s["weight_decay"] or None  # AdamW needs a number; 0: off
    return cls(learning_rate, beta_1=s["beta_1"], beta_2=s["beta_2"], weight_decay=decay, **kwargs)
