"""Batch-size scaling rules: how a recipe tuned at one batch size moves to another.

Pure Python arithmetic, no TensorFlow graph: the trainer, the configs and the tools call these
to turn a recipe given at a base batch size into the numbers for another batch size.
Throughout, k = batch_size / base_batch_size, and a staleness tau is the number of updates by
which each gradient is late (tau = 0: synchronous training; see `staleness_factor`).
`rescale_model` (written in `kbatch.model_scaling`, as it needs Keras) applies `rescale` to a
compiled Keras model, in place, for a user's own `model.fit`.
"""

import dataclasses
import math
import numbers
from typing import Optional

from kbatch import checks

_EXPONENTS = {"linear": 1.0, "sqrt": 0.5, "none": 0.0}
# The power rules: what `config.lr_scaling` accepts (kbatch.training.config.schema checks it with
# `scaling_exponent`). The staleness rule is kept out of it until the trainer has a staleness.
RULES = tuple(_EXPONENTS)
STALENESS = "staleness"  # the delay-aware rule of `scale_learning_rate` and `rescale`
_RULES_HERE = "one of " + ", ".join(repr(r) for r in RULES) + ", or a real exponent, or 'staleness' with a staleness"


def _batch(name, value):
    return checks.real(name, value, low=0, low_open=True)


def _is_staleness(rule):
    return isinstance(rule, str) and rule == STALENESS


def scaling_exponent(rule):
    """The exponent alpha of a power rule: lr scales as (B / B0) ** alpha.

    "linear" is alpha = 1 (Goyal et al. 2017, "Accurate, Large Minibatch SGD"), "sqrt" alpha = 0.5
    (Krizhevsky 2014, "One weird trick"; Hoffer et al. 2017, "Train longer, generalize better";
    for Adam, Malladi et al. 2022), "none" alpha = 0, and a real number is used as alpha itself.
    "staleness" is refused here: it is no power of the batch alone (see `scale_learning_rate`).
    """
    if isinstance(rule, str):
        if rule in _EXPONENTS:
            return _EXPONENTS[rule]
    elif not isinstance(rule, bool) and isinstance(rule, numbers.Real) and math.isfinite(rule):
        return float(rule)
    must = "one of " + ", ".join(repr(r) for r in RULES) + ", or a real exponent"
    if _is_staleness(rule):
        must += (
            " (the staleness rule moves the rate with the staleness too: give it to scale_learning_rate "
            "or rescale with staleness=...)"
        )
    checks.fail("rule", rule, must)


def _power_exponent(rule):
    """`scaling_exponent`, with the message of the functions that also take the staleness rule."""
    try:
        return scaling_exponent(rule)
    except ValueError:
        checks.fail("rule", rule, _RULES_HERE)


def _staleness(name, value):
    return checks.integer(name, value, low=0)


def _momentum(name, value):
    return checks.real(name, value, low=0, high=1, high_open=True)


def _delayed_limit(momentum, staleness):
    """a* = lr * h at which heavy ball (Keras's SGD) on f = h x**2 / 2, fed gradients `staleness`
    updates old, stops converging: x' = x + m (x - x_prev) - a x_{t - tau}.

    The characteristic polynomial is z**(tau-1) (z - 1) (z - m) + a. A root z = e^{i theta}
    on the unit circle needs a = -z**(tau-1) (z - 1)(z - m) real and > 0, that is
    g(theta) = (tau - 1/2) theta + arg(e^{i theta} - m) - pi/2 = 0, and then
    a = |z - 1| |z - m| = 2 sin(theta/2) sqrt((1 - m)**2 + 4 m sin(theta/2)**2). g increases
    (its slope exceeds 1/2 for m < 1) and so does a, so the first root is the limit. Without
    momentum theta = pi / (2 tau + 1): a* = 2 sin(pi / (2 (2 tau + 1))) (Levin & May 1976);
    tau = 0 gives the synchronous 2 + 2m; tau = 1 gives 1 - m (the quadratic z**2 - (1 + m) z + m + a).
    """
    if staleness == 0:
        return 2.0 + 2.0 * momentum
    if momentum == 0.0:
        return 2.0 * math.sin(math.pi / (2 * (2 * staleness + 1)))

    def g(theta):
        return (staleness - 0.5) * theta + math.atan2(math.sin(theta), math.cos(theta) - momentum) - math.pi / 2

    # arg(e^{i theta} - m) lies in [theta, theta / (1 - m)], which brackets the root.
    lo = (math.pi / 2) / (staleness - 0.5 + 1.0 / (1.0 - momentum))
    hi = math.pi / (2 * staleness + 1)
    while True:  # bisection down to adjacent floats
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            break
        if g(mid) < 0:
            lo = mid
        else:
            hi = mid
    half = math.sin(0.5 * hi)
    return 2.0 * half * math.sqrt((1.0 - momentum) ** 2 + 4.0 * momentum * half**2)


def staleness_factor(staleness, momentum=0.0):
    """The factor by which a gradient `staleness` updates late lowers the largest stable
    learning rate: the delayed limit over the synchronous one, for heavy-ball momentum m.

    On a quadratic with curvature h, gradient descent that applies the gradient taken `tau`
    updates ago is stable iff lr * h < 2 sin(pi / (2 (2 tau + 1))) (Levin & May 1976), against
    2 at tau = 0; with Keras's heavy ball the limit is the first crossing of the unit circle
    (`_delayed_limit`), against (2 + 2m) at tau = 0 (`max_stable_learning_rate`). The ratio does
    not depend on h, so multiplying a learning rate by it keeps the rate's fraction of the
    stability limit of the sharpest direction, without knowing that sharpness. Closed forms:
    1 at tau = 0; sin(pi / (2 (2 tau + 1))) without momentum (1/2, 0.309, 0.223 at tau = 1, 2, 3);
    (1 - m) / (2 (1 + m)) at tau = 1 (1/38 for m = 0.9). For large tau it falls as 1 / tau:
    tau * factor -> pi (1 - m) / (4 (1 + m)). Momentum matters: delay moves the instability from
    the highest frequency, where momentum does not amplify, to low frequencies, where it
    amplifies by 1 / (1 - m) (compare Mitliagkas et al. 2016, "Asynchrony begets momentum").
    For Adam, pass beta_1: with its second moments frozen its update is heavy ball with momentum
    beta_1. The derivation and its assumptions: docs/schedules.md, "Stale gradients".
    """
    return _factor(_staleness("staleness", staleness), _momentum("momentum", momentum))


def _factor(staleness, momentum):
    if staleness == 0:
        return 1.0
    if momentum == 0.0:
        return math.sin(math.pi / (2 * (2 * staleness + 1)))
    return _delayed_limit(momentum, staleness) / (2.0 + 2.0 * momentum)


def scale_learning_rate(
    base_lr, base_batch_size, batch_size, rule="linear", *, staleness=None, base_staleness=0, momentum=0.0
):
    """The learning rate at `batch_size` for a recipe that used `base_lr` at `base_batch_size`.

    lr = base_lr * (batch_size / base_batch_size) ** alpha, alpha given by `rule`
    (see `scaling_exponent`). Multiplicative: scaling B0 -> B1 -> B2 equals B0 -> B2.

    rule="staleness" (stale, asynchronous gradients) moves a rate given at (base_batch_size,
    base_staleness, 0 by default) to (batch_size, staleness):

        lr = base_lr * (B / B0) * staleness_factor(staleness, momentum) / staleness_factor(base_staleness, momentum)

    linear in the batch (as at fixed epochs the rate should be; not the 1 / sqrt(B) some
    readings of the literature give) and falling as 1 / tau for large tau. It needs `staleness`
    (an integer >= 0, the updates by which a gradient is late); staleness=0 is synchronous
    training, where the rule is the linear rule. `momentum` is the heavy-ball momentum of the
    run (beta_1 for Adam), which the delay factor depends on strongly. Moves compose:
    (B0, tau0) -> (B1, tau1) -> (B2, tau2) equals (B0, tau0) -> (B2, tau2). The other rules do
    not move a rate to another staleness: for them `staleness` must be None or `base_staleness`.
    Derivation, sources and assumptions: docs/schedules.md, "Stale gradients".
    """
    base_lr = checks.real("base_lr", base_lr, low=0)
    k = _batch("batch_size", batch_size) / _batch("base_batch_size", base_batch_size)
    if not _is_staleness(rule):
        alpha = _power_exponent(rule)
        if staleness is not None or base_staleness != 0:
            base_staleness = _staleness("base_staleness", base_staleness)
            if staleness is not None and _staleness("staleness", staleness) != base_staleness:
                checks.fail(
                    "staleness",
                    staleness,
                    f"None or base_staleness={base_staleness} with rule={rule!r} "
                    "(only rule='staleness' moves a learning rate to another staleness)",
                )
        _momentum("momentum", momentum)
        return base_lr * k**alpha
    if staleness is None:
        checks.fail(
            "staleness",
            staleness,
            "an integer >= 0 with rule='staleness' (the updates by which each gradient is late; 0 is synchronous)",
        )
    staleness = _staleness("staleness", staleness)
    base_staleness = _staleness("base_staleness", base_staleness)
    momentum = _momentum("momentum", momentum)
    return base_lr * k * (_factor(staleness, momentum) / _factor(base_staleness, momentum))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training recipe at one global batch size; `rescale` moves it to another.

    Field names follow Keras: `momentum` is SGD's heavy-ball coefficient, `beta_1`, `beta_2`,
    `epsilon` Adam's, `ema_momentum` the optimizer's `use_ema` averaging (None: no EMA),
    `bn_momentum` BatchNormalization's `momentum`. `weight_decay` is Keras's decoupled decay
    (each step shrinks a weight by `learning_rate * weight_decay`). `adaptive` says the
    optimizer is Adam-like (its betas and epsilon are rescaled). Durations are in epochs.
    `staleness` is the number of updates by which each gradient was late when the learning rate
    was tuned (0: synchronous training; `rescale` with rule="staleness" moves it).
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
    staleness: int = 0

    def __post_init__(self):
        checks.positive_int("Recipe.batch_size", self.batch_size)
        checks.real("Recipe.learning_rate", self.learning_rate, low=0)
        checks.real("Recipe.num_epochs", self.num_epochs, low=0, low_open=True)
        checks.real("Recipe.warmup_epochs", self.warmup_epochs, low=0)
        if self.warmup_epochs >= self.num_epochs:
            checks.fail(
                "Recipe.warmup_epochs",
                self.warmup_epochs,
                f"shorter than Recipe.num_epochs={self.num_epochs} (a warmup longer than training)",
            )
        checks.real("Recipe.weight_decay", self.weight_decay, low=0)
        for name in ("momentum", "beta_1", "beta_2", "bn_momentum"):
            checks.real(f"Recipe.{name}", getattr(self, name), low=0, high=1, high_open=True)
        checks.real("Recipe.ema_momentum", self.ema_momentum, low=0, high=1, high_open=True, allow_none=True)
        checks.real("Recipe.epsilon", self.epsilon, low=0, low_open=True)
        checks.boolean("Recipe.adaptive", self.adaptive)
        checks.integer("Recipe.staleness", self.staleness, low=0)


def rescale_momentum(momentum, base_batch_size, batch_size):
    """The momentum of an exponential moving average at `batch_size` that keeps the memory, in
    examples, that `momentum` has at `base_batch_size`: momentum ** (batch_size / base_batch_size).

    Busbridge et al. 2023, "How to Scale Your EMA": an average updated once per step with
    rho <- rho**k at k times the batch forgets at the same rate per example seen. It is the
    rule for BatchNormalization's moving statistics (its `momentum`) and for an optimizer's
    weight EMA (`ema_momentum`). Multiplicative: B0 -> B1 -> B2 equals B0 -> B2.
    """
    momentum = checks.real("momentum", momentum, low=0, high=1)
    return momentum ** (_batch("batch_size", batch_size) / _batch("base_batch_size", base_batch_size))


def rescale(recipe, batch_size, rule=None, staleness=None):
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
    - ema_momentum, bn_momentum -> rho**k (`rescale_momentum`): Busbridge et al. 2023, "How to
      Scale Your EMA". An exponential moving average updated once per step keeps the same memory
      in examples. (BatchNormalization's moving statistics are such an average.)
    - weight_decay -> weight_decay * k**(1 - alpha): Keras shrinks weights by lr * wd per step, so
      the shrink per epoch, (steps per epoch) * lr * wd, stays fixed. Unchanged under the linear
      rule (as Goyal et al. keep it), times sqrt(k) under the square-root rule.
    - num_epochs and warmup_epochs unchanged (epochs are the unit); see `warmup_epochs` for a
      warmup that grows with the batch.

    rule="staleness" also moves the recipe from its `staleness` to `staleness` (None: the
    recipe's): the learning rate is the linear rule's times the delay factor
    staleness_factor(staleness, m) / staleness_factor(recipe.staleness, m0), m the heavy-ball
    momentum (beta_1 for an adaptive recipe, after and before it is rescaled). Everything else,
    weight_decay included, is rescaled as under "linear": Keras's decoupled decay is a part of
    the step (lr * wd), so the delay factor shortens the decay with the gradient step, and the
    update keeps the linear rule's direction at a shorter length. The other rules keep the
    recipe's staleness (`staleness` must be None or equal to it).

    Every rule is multiplicative, so rescaling B0 -> B1 -> B2 equals B0 -> B2; with the
    staleness rule, (B0, tau0) -> (B1, tau1) -> (B2, tau2) equals (B0, tau0) -> (B2, tau2).
    """
    if not isinstance(recipe, Recipe):
        checks.fail("recipe", recipe, "a kbatch.scaling.Recipe")
    batch_size = checks.positive_int("batch_size", batch_size)
    if rule is None:
        rule = "sqrt" if recipe.adaptive else "linear"
    target = _target_staleness(recipe, rule, staleness)
    changes = _averages_at(recipe, batch_size)
    changes.update(_step_at(recipe, batch_size, rule, target, changes.get("beta_1", recipe.momentum)))
    return dataclasses.replace(recipe, batch_size=batch_size, **changes)


def _target_staleness(recipe, rule, staleness):
    """The staleness `rescale` moves `recipe` to (None: the recipe's), once `rule` is checked: only
    the staleness rule moves a recipe to another staleness."""
    stale = _is_staleness(rule)
    if not stale:
        _power_exponent(rule)
    target = recipe.staleness if staleness is None else _staleness("staleness", staleness)
    if not stale and target != recipe.staleness:
        checks.fail(
            "staleness",
            staleness,
            f"None or the recipe's staleness {recipe.staleness} with rule={rule!r} "
            "(only rule='staleness' moves a recipe to another staleness)",
        )
    return target


def _averages_at(recipe, batch_size):
    """`rescale`'s moving averages at `batch_size`: the BN and weight-EMA momenta (Busbridge et al.
    2023), and Adam's betas and epsilon when `adaptive` (Malladi et al. 2022)."""
    k = batch_size / recipe.batch_size
    changes = {"bn_momentum": rescale_momentum(recipe.bn_momentum, recipe.batch_size, batch_size)}
    if recipe.ema_momentum is not None:
        changes["ema_momentum"] = rescale_momentum(recipe.ema_momentum, recipe.batch_size, batch_size)
    if recipe.adaptive:
        changes.update(beta_1=recipe.beta_1**k, beta_2=recipe.beta_2**k, epsilon=recipe.epsilon / math.sqrt(k))
    return changes


def _step_at(recipe, batch_size, rule, target, momentum):
    """`rescale`'s learning rate and weight decay at `batch_size`, and under the staleness rule the
    `target` staleness; `momentum` is the heavy-ball momentum once rescaled (beta_1 when adaptive)."""
    k = batch_size / recipe.batch_size
    if not _is_staleness(rule):
        return dict(
            learning_rate=scale_learning_rate(recipe.learning_rate, recipe.batch_size, batch_size, rule),
            weight_decay=recipe.weight_decay * k ** (1.0 - _power_exponent(rule)),
        )
    before = recipe.beta_1 if recipe.adaptive else recipe.momentum
    delay = _factor(target, momentum) / _factor(recipe.staleness, before)
    return dict(learning_rate=recipe.learning_rate * k * delay, weight_decay=recipe.weight_decay, staleness=target)


def warmup_epochs(
    batch_size, base_batch_size, base_warmup_epochs, *, epochs_per_doubling=1.0, num_epochs=None, max_fraction=0.25
):
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
    base = checks.real("base_warmup_epochs", base_warmup_epochs, low=0)
    per_doubling = checks.real("epochs_per_doubling", epochs_per_doubling, low=0)
    grown = max(0.0, base + per_doubling * math.log2(k))
    if num_epochs is None:
        return grown
    num_epochs = checks.real("num_epochs", num_epochs, low=0, low_open=True)
    fraction = checks.real("max_fraction", max_fraction, low=0, high=1)
    if base >= num_epochs:
        checks.fail(
            "base_warmup_epochs",
            base_warmup_epochs,
            f"shorter than num_epochs={num_epochs} (a warmup longer than training)",
        )
    return min(grown, max(fraction * num_epochs, base))


def max_stable_learning_rate(sharpness, momentum=0.0, staleness=0):
    """The largest learning rate at which gradient descent does not diverge on a quadratic whose
    top Hessian eigenvalue is `sharpness`: 2 / lambda_max, and (2 + 2 m) / lambda_max for heavy-ball
    momentum m (Keras's SGD; Cohen et al. 2021, "Gradient Descent on Neural Networks Typically
    Occurs at the Edge of Stability", section 2 and appendix).

    With gradients `staleness` = tau updates old the limit is lower: 2 sin(pi / (2 (2 tau + 1)))
    / lambda_max without momentum (Levin & May 1976), and `staleness_factor(tau, m)` times the
    synchronous limit with momentum.
    """
    sharpness = checks.real("sharpness", sharpness, low=0, low_open=True)
    momentum = checks.real("momentum", momentum, low=0, high=1, high_open=True)
    staleness = _staleness("staleness", staleness)
    if staleness == 0:
        return (2.0 + 2.0 * momentum) / sharpness
    return _delayed_limit(momentum, staleness) / sharpness


def min_batch_size(grad_variance, tolerance, confidence=0.95):
    """The smallest batch whose mean gradient is within `tolerance` of the true gradient with
    probability at least `confidence`, by Chebyshev's inequality: n >= sigma^2 / (eps^2 * delta),
    delta = 1 - confidence.

    `grad_variance` is sigma^2 = E||g_i - g||^2, the per-example gradient variance summed over
    parameters (the trace of the covariance; McCandlish et al. 2018 call it tr(Sigma)), and
    `tolerance` is eps in the same norm: P(||mean of n - g|| >= eps) <= sigma^2 / (n eps^2).
    """
    variance = checks.real("grad_variance", grad_variance, low=0)
    tolerance = checks.real("tolerance", tolerance, low=0, low_open=True)
    delta = 1.0 - checks.real("confidence", confidence, low=0, low_open=True, high=1, high_open=True)
    bound = variance / (tolerance**2 * delta)
    # Shave float noise (1 - 0.95 is 0.050000000000000044) so exact bounds do not round up.
    return max(1, math.ceil(bound * (1.0 - 1e-12)))


# Moving a built Keras model's recipe needs Keras and kbatch's layers: its own module, named here.
from kbatch.model_scaling import rescale_model  # noqa: E402, F401
