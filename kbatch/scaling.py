"""Batch-size scaling rules: how a recipe tuned at one batch size moves to another.

Pure Python arithmetic, no TensorFlow graph: the trainer, the configs and the tools call these
to turn a recipe given at `base_batch_size` into the numbers for `batch_size`.
"""

import math
import numbers

RULES = ("linear", "sqrt", "none")


def _check_batch(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}.")


def scaling_exponent(rule):
    """The exponent alpha of a rule: lr scales as (B / B0) ** alpha.

    "linear" is alpha = 1 (Goyal et al. 2017), "sqrt" alpha = 0.5 (Krizhevsky 2014;
    Hoffer et al. 2017), "none" alpha = 0, and a real number is used as alpha itself.
    """
    if isinstance(rule, str):
        if rule == "linear":
            return 1.0
        if rule == "sqrt":
            return 0.5
        if rule == "none":
            return 0.0
        raise ValueError(f"rule must be one of {RULES} or a real exponent, got {rule!r}.")
    if isinstance(rule, bool) or not isinstance(rule, numbers.Real) or not math.isfinite(rule):
        raise ValueError(f"rule must be one of {RULES} or a real exponent, got {rule!r}.")
    return float(rule)


def scale_learning_rate(base_lr, base_batch_size, batch_size, rule="linear"):
    """The learning rate at `batch_size` for a recipe that used `base_lr` at `base_batch_size`.

    lr = base_lr * (batch_size / base_batch_size) ** alpha, alpha given by `rule`
    (see `scaling_exponent`).
    """
    if isinstance(base_lr, bool) or not isinstance(base_lr, numbers.Real) or base_lr < 0:
        raise ValueError(f"base_lr must be a non-negative number, got {base_lr!r}.")
    _check_batch("base_batch_size", base_batch_size)
    _check_batch("batch_size", batch_size)
    return float(base_lr) * (batch_size / base_batch_size) ** scaling_exponent(rule)
