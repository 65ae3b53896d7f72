"""Batch-size scaling rules: how a recipe tuned at one batch size moves to another.

Pure Python arithmetic, no TensorFlow graph: the trainer, the configs and the tools call these
to turn a recipe given at a base batch size into the numbers for another batch size.
Throughout, k = batch_size / base_batch_size.
"""

import dataclasses
import math
import numbers
from typing import Optional

RULES = ("linear", "sqrt", "none")


def _real(name, value, *, low=None, low_open=False, high=None, high_open=True):
    """`value` as a float, or a ValueError naming `name` and the allowed interval."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}.")
    return float(value)


def _batch(name, value):
    return _real(name, value, low=0, low_open=True)


def scaling_exponent(rule):
    """The exponent alpha of a rule: lr scales as (B / B0) ** alpha.

    "linear" is alpha = 1 (Goyal et al. 2017, "Accurate, Large Minibatch SGD"), "sqrt" alpha = 0.5
    (Krizhevsky 2014, "One weird trick"; Hoffer et al. 2017, "Train longer, generalize better";
    for Adam, Malladi et al. 2022), "none" alpha = 0, and a real number is used as alpha itself.
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
    (see `scaling_exponent`). Multiplicative: scaling B0 -> B1 -> B2 equals B0 -> B2.
    """
    base_lr = _real("base_lr", base_lr, low=0)
    k = _batch("batch_size", batch_size) / _batch("base_batch_size", base_batch_size)
    return base_lr * k ** scaling_exponent(rule)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training recipe at one global batch size; `rescale` moves it to another.

    Field names follow Keras: `momentum` is SGD's heavy-ball coefficient, `beta_1`, `beta_2`,
    `epsilon` Adam's, `ema_momentum` the optimizer's `use_ema` averaging (None: no EMA),
    `bn_momentum` BatchNormalization's `momentum`. `weight_decay` is Keras's decoupled decay
    (each step shrinks a weight by `learning_rate * weight_decay`). `adaptive` says the
    optimizer is Adam-like (its betas and epsilon are rescaled). Durations are in epochs.
    """

    batch_size: int
    learning_rate: float
    num_epochs: float
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    momentum: float = 0.0
    adaptive: bool = False
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    ema_momentum: Optional[float] = None
    bn_momentum: float = 0.99

    def __post_init__(self):
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, numbers.Integral) \
                or self.batch_size <= 0:
            raise ValueError(f"Recipe.batch_size must be a positive integer, got {self.batch_size!r}.")
        _real("Recipe.learning_rate", self.learning_rate, low=0)
        _real("Recipe.num_epochs", self.num_epochs, low=0, low_open=True)
        _real("Recipe.warmup_epochs", self.warmup_epochs, low=0)
        if self.warmup_epochs >= self.num_epochs:
            raise ValueError(
                f"Recipe.warmup_epochs={self.warmup_epochs} must be shorter than "
                f"Recipe.num_epochs={self.num_epochs} (a warmup longer than training)."
            )
        _real("Recipe.weight_decay", self.weight_decay, low=0)
        for name in ("momentum", "beta_1", "beta_2", "bn_momentum"):
            _real(f"Recipe.{name}", getattr(self, name), low=0, high=1)
        if self.ema_momentum is not None:
            _real("Recipe.ema_momentum", self.ema_momentum, low=0, high=1)
        _real("Recipe.epsilon", self.epsilon, low=0, low_open=True)
        if not isinstance(self.adaptive, bool):
            raise ValueError(f"Recipe.adaptive must be True or False, got {self.adaptive!r}.")


def rescale(recipe, batch_size, rule=None):
    """`recipe` moved to global batch `batch_size`, so that what happens per epoch stays the same.

    With k = batch_size / recipe.batch_size and alpha the exponent of `rule` (default: "sqrt"
    for an adaptive recipe, "linear" otherwise):

    - learning_rate -> learning_rate * k**alpha: Goyal et al. 2017 (linear, SGD); Malladi et al.
      2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms" (square root, Adam).
    - momentum (SGD) unchanged, as Goyal et al. do. Keras's heavy ball v <- m v - lr g has gain
      1 / (1 - m): the linear rule already scales the effective step lr / (1 - m) by k. Taking
      m -> m**k as well would divide that step by about k again (1 - m**k ~ k (1 - m)) and undo
      the rule. (Smith & Le 2018: the noise scale lr N / (B (1 - m)) stays fixed.)
    - beta_1, beta_2 -> beta**k and epsilon -> epsilon / sqrt(k), when `adaptive`: Malladi et al.'s
      square-root rule, 1 - beta -> k (1 - beta) and epsilon -> epsilon / sqrt(k). Adam's moments
      are true averages (gain 1), so their memory is kept in examples. kbatch uses beta**k, which
      equals 1 - k (1 - beta) to first order in k (1 - beta), composes exactly, and stays in
      [0, 1) where the linear form turns negative (beta_1 = 0.9 beyond k = 10).
    - ema_momentum, bn_momentum -> rho**k: Busbridge et al. 2023, "How to Scale Your EMA". An
      exponential moving average updated once per step keeps the same memory in examples.
      (BatchNormalization's moving statistics are such an average.)
    - weight_decay -> weight_decay * k**(1 - alpha): Keras shrinks weights by lr * wd per step, so
      the shrink per epoch, (steps per epoch) * lr * wd, stays fixed. Unchanged under the linear
      rule (as Goyal et al. keep it), times sqrt(k) under the square-root rule.
    - num_epochs and warmup_epochs unchanged (epochs are the unit); see `warmup_epochs` for a
      warmup that grows with the batch.

    Every rule is multiplicative, so rescaling B0 -> B1 -> B2 equals B0 -> B2.
    """
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a kbatch.scaling.Recipe, got {type(recipe).__name__}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer (the global batch), got {batch_size!r}.")
    if rule is None:
        rule = "sqrt" if recipe.adaptive else "linear"
    alpha = scaling_exponent(rule)
    k = batch_size / recipe.batch_size
    changes = dict(
        batch_size=int(batch_size),
        learning_rate=scale_learning_rate(recipe.learning_rate, recipe.batch_size, batch_size, rule),
        weight_decay=recipe.weight_decay * k ** (1.0 - alpha),
        bn_momentum=recipe.bn_momentum**k,
    )
    if recipe.ema_momentum is not None:
        changes["ema_momentum"] = recipe.ema_momentum**k
    if recipe.adaptive:
        changes.update(beta_1=recipe.beta_1**k, beta_2=recipe.beta_2**k, epsilon=recipe.epsilon / math.sqrt(k))
    return dataclasses.replace(recipe, **changes)


def warmup_epochs(batch_size, base_batch_size, base_warmup_epochs, *, epochs_per_doubling=1.0,
                  num_epochs=None, max_fraction=0.25):
    """A warmup length in epochs that grows with the batch size.

    W(B) = base_warmup_epochs + epochs_per_doubling * log2(B / B0), at least 0. With `num_epochs`,
    the growth stops at `max_fraction * num_epochs` (a base warmup longer than that is kept).

    Gradual warmup (Goyal et al. 2017, section 2.2) ramps the rate up to its scaled value; the
    larger k, the further the ramp has to go. The default anchors on Goyal et al.'s ImageNet runs:
    no warmup needed at B0 = 256, and 5 epochs at 8k = 256 * 2**5, one epoch per doubling. The
    same 5 epochs for every batch (their choice) is `epochs_per_doubling=0`. This is a heuristic
    fitted to that anchor, not a derivation; the warmup and scaling-rule ablation in docs/results
    measures it.
    """
    k = _batch("batch_size", batch_size) / _batch("base_batch_size", base_batch_size)
    base = _real("base_warmup_epochs", base_warmup_epochs, low=0)
    per_doubling = _real("epochs_per_doubling", epochs_per_doubling, low=0)
    grown = max(0.0, base + per_doubling * math.log2(k))
    if num_epochs is None:
        return grown
    num_epochs = _real("num_epochs", num_epochs, low=0, low_open=True)
    fraction = _real("max_fraction", max_fraction, low=0, high=1, high_open=False)
    if base >= num_epochs:
        raise ValueError(
            f"base_warmup_epochs={base_warmup_epochs} must be shorter than num_epochs={num_epochs} "
            f"(a warmup longer than training)."
        )
    return min(grown, max(fraction * num_epochs, base))


def max_stable_learning_rate(sharpness, momentum=0.0):
    """The largest learning rate at which gradient descent does not diverge on a quadratic whose
    top Hessian eigenvalue is `sharpness`: 2 / lambda_max, and (2 + 2 m) / lambda_max for heavy-ball
    momentum m (Keras's SGD; Cohen et al. 2021, "Gradient Descent on Neural Networks Typically
    Occurs at the Edge of Stability", section 2 and appendix).
    """
    sharpness = _real("sharpness", sharpness, low=0, low_open=True)
    momentum = _real("momentum", momentum, low=0, high=1)
    return (2.0 + 2.0 * momentum) / sharpness


def min_batch_size(grad_variance, tolerance, confidence=0.95):
    """The smallest batch whose mean gradient is within `tolerance` of the true gradient with
    probability at least `confidence`, by Chebyshev's inequality: n >= sigma^2 / (eps^2 * delta),
    delta = 1 - confidence.

    `grad_variance` is sigma^2 = E||g_i - g||^2, the per-example gradient variance summed over
    parameters (the trace of the covariance; McCandlish et al. 2018 call it tr(Sigma)), and
    `tolerance` is eps in the same norm: P(||mean of n - g|| >= eps) <= sigma^2 / (n eps^2).
    """
    variance = _real("grad_variance", grad_variance, low=0)
    tolerance = _real("tolerance", tolerance, low=0, low_open=True)
    delta = 1.0 - _real("confidence", confidence, low=0, low_open=True, high=1)
    bound = variance / (tolerance**2 * delta)
    # Shave float noise (1 - 0.95 is 0.050000000000000044) so exact bounds do not round up.
    return max(1, math.ceil(bound * (1.0 - 1e-12)))
