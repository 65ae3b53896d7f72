"""kbatch.scaling: the scaling rules against their closed forms, their composition, the stability
and Chebyshev helpers against simulations, and the errors for bad input."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbatch import scaling

pytestmark = pytest.mark.fast

FAST = settings(max_examples=50, deadline=None)
batches = st.integers(min_value=1, max_value=2**16)
rules = st.one_of(st.sampled_from(["linear", "sqrt", "none"]), st.floats(-1.0, 2.0))
EXPONENT = {"linear": 1.0, "sqrt": 0.5, "none": 0.0}


@FAST
@given(lr=st.floats(1e-4, 10.0), b0=batches, b1=batches, rule=rules)
def test_scale_learning_rate_is_lr_times_k_to_the_rule_exponent(lr, b0, b1, rule):
    alpha = EXPONENT.get(rule, rule)
    assert scaling.scale_learning_rate(lr, b0, b1, rule) == pytest.approx(lr * (b1 / b0) ** alpha, rel=1e-12)


@FAST
@given(lr=st.floats(1e-4, 10.0), b0=batches, b1=batches, b2=batches, rule=rules)
def test_scaling_is_multiplicative(lr, b0, b1, b2, rule):
    via_b1 = scaling.scale_learning_rate(scaling.scale_learning_rate(lr, b0, b1, rule), b1, b2, rule)
    assert via_b1 == pytest.approx(scaling.scale_learning_rate(lr, b0, b2, rule), rel=1e-9)


def test_linear_rule_reproduces_goyal_imagenet_numbers():
    # Goyal et al. 2017: 0.1 per 256 images, so 3.2 at 8k.
    assert scaling.scale_learning_rate(0.1, 256, 8192) == pytest.approx(3.2)
    assert scaling.scale_learning_rate(0.1, 256, 8192, "sqrt") == pytest.approx(0.1 * math.sqrt(32))


SGD = scaling.Recipe(
    batch_size=64,
    learning_rate=0.05,
    num_epochs=12,
    warmup_epochs=2,
    weight_decay=5e-4,
    momentum=0.9,
    ema_momentum=0.999,
    bn_momentum=0.99,
)
ADAM = dataclasses.replace(SGD, adaptive=True, momentum=0.0, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.05)


def test_rescale_sgd_recipe_closed_form():
    k = 4096 / 64
    new = scaling.rescale(SGD, 4096)
    assert new.batch_size == 4096
    assert new.learning_rate == pytest.approx(0.05 * k)  # Goyal: linear
    assert new.momentum == SGD.momentum  # Goyal: momentum kept
    assert new.weight_decay == pytest.approx(SGD.weight_decay)  # linear: lr*wd*steps per epoch fixed
    assert new.bn_momentum == pytest.approx(0.99**64)  # Busbridge: rho**k
    assert new.ema_momentum == pytest.approx(0.999**64)
    assert (new.num_epochs, new.warmup_epochs) == (SGD.num_epochs, SGD.warmup_epochs)
    # Adam's fields are left alone for a non-adaptive recipe.
    assert (new.beta_1, new.beta_2, new.epsilon) == (SGD.beta_1, SGD.beta_2, SGD.epsilon)


def test_rescale_adam_recipe_follows_the_square_root_rule():
    k = 16.0
    new = scaling.rescale(ADAM, 64 * 16)
    assert new.learning_rate == pytest.approx(0.05 * math.sqrt(k))  # Malladi et al.
    assert new.epsilon == pytest.approx(1e-8 / math.sqrt(k))
    assert new.beta_1 == pytest.approx(0.9**k)
    assert new.beta_2 == pytest.approx(0.999**k)
    # beta**k agrees with Malladi's 1 - k (1 - beta) to first order where k (1 - beta) is small.
    assert 1 - new.beta_2 == pytest.approx(k * (1 - 0.999), rel=0.01)
    assert new.weight_decay == pytest.approx(0.05 * math.sqrt(k))  # lr * wd grows by k
    assert new.bn_momentum == pytest.approx(0.99**k)


def test_rescale_keeps_weight_decay_per_epoch_for_every_rule():
    # Shrink per epoch = steps per epoch * lr * wd, steps per epoch = N / B.
    n = 48000
    for rule in ("linear", "sqrt", "none", 0.75):
        new = scaling.rescale(SGD, 1024, rule=rule)
        assert n / new.batch_size * new.learning_rate * new.weight_decay == pytest.approx(
            n / SGD.batch_size * SGD.learning_rate * SGD.weight_decay
        )


def test_rescaled_ema_has_the_same_memory_in_examples():
    # A constant input fed to an EMA: after N examples at batch B the remaining weight of the
    # initial value is rho**(N/B); rescaling must keep it.
    n = 4096
    new = scaling.rescale(SGD, 512)
    old_weight = SGD.bn_momentum ** (n / SGD.batch_size)
    value = 1.0
    for _ in range(n // new.batch_size):
        value = new.bn_momentum * value + (1 - new.bn_momentum) * 0.0
    assert value == pytest.approx(old_weight, rel=1e-9)


@FAST
@given(momentum=st.floats(0.0, 1.0), b0=st.integers(1, 512), multiple=st.integers(1, 16))
def test_rescale_momentum_keeps_the_ema_memory_in_examples(momentum, b0, multiple):
    """Busbridge et al. 2023: an EMA stepped once per batch of B = multiple * B0 with the rescaled
    momentum leaves the initial value the weight the base EMA leaves it after as many examples."""
    b1 = multiple * b0
    rescaled = scaling.rescale_momentum(momentum, b0, b1)
    assert 0.0 <= rescaled <= 1.0
    base, large = 1.0, 1.0
    for _ in range(multiple):  # b1 examples at the base batch
        base *= momentum
    large *= rescaled  # the same b1 examples in one large batch
    assert large == pytest.approx(base, rel=1e-9, abs=1e-300)


@FAST
@given(momentum=st.floats(0.5, 1.0), b0=st.integers(1, 512), b1=st.integers(1, 512), b2=st.integers(1, 512))
def test_rescale_momentum_is_multiplicative_and_rescale_uses_it(momentum, b0, b1, b2):
    # Momenta of 0.5 and up, batch ratios up to 512: no step underflows to 0 (0.5**512 ~ 1e-154).
    via_b1 = scaling.rescale_momentum(scaling.rescale_momentum(momentum, b0, b1), b1, b2)
    assert via_b1 == pytest.approx(scaling.rescale_momentum(momentum, b0, b2), rel=1e-9)
    assert scaling.rescale_momentum(momentum, b0, b0) == momentum
    new = scaling.rescale(SGD, b1)
    assert new.bn_momentum == scaling.rescale_momentum(SGD.bn_momentum, SGD.batch_size, b1)
    assert new.ema_momentum == scaling.rescale_momentum(SGD.ema_momentum, SGD.batch_size, b1)


@FAST
@given(b1=batches, b2=batches, adaptive=st.booleans(), rule=st.sampled_from([None, "linear", "sqrt", 0.3]))
def test_rescale_is_multiplicative(b1, b2, adaptive, rule):
    recipe = dataclasses.replace(SGD, adaptive=adaptive)
    twice = scaling.rescale(scaling.rescale(recipe, b1, rule), b2, rule)
    once = scaling.rescale(recipe, b2, rule)
    for field in dataclasses.fields(scaling.Recipe):
        a, b = getattr(twice, field.name), getattr(once, field.name)
        assert a == pytest.approx(b, rel=1e-9, abs=1e-300), field.name


def test_warmup_epochs_anchored_on_goyal():
    # 0 epochs at 256, 5 epochs at 8k (five doublings), one more per further doubling.
    assert scaling.warmup_epochs(256, 256, 0.0) == 0.0
    assert scaling.warmup_epochs(8192, 256, 0.0) == pytest.approx(5.0)
    assert scaling.warmup_epochs(16384, 256, 0.0) == pytest.approx(6.0)
    assert scaling.warmup_epochs(8192, 256, 5.0, epochs_per_doubling=0) == 5.0  # Goyal's fixed 5


@FAST
@given(b0=batches, b1=batches, b2=batches, base=st.floats(0, 3), per=st.floats(0, 2))
def test_warmup_epochs_grows_with_log_batch_and_is_capped(b0, b1, b2, base, per):
    lo, hi = sorted((b1, b2))
    w_lo = scaling.warmup_epochs(lo, b0, base, epochs_per_doubling=per)
    w_hi = scaling.warmup_epochs(hi, b0, base, epochs_per_doubling=per)
    assert 0 <= w_lo <= w_hi
    assert w_hi == pytest.approx(max(0.0, base + per * math.log2(hi / b0)), abs=1e-12)
    capped = scaling.warmup_epochs(hi, b0, base, epochs_per_doubling=per, num_epochs=20, max_fraction=0.25)
    assert capped == pytest.approx(min(w_hi, max(5.0, base)), abs=1e-12)


def _quadratic_descent(lr, curvature, momentum, steps=400):
    """|x| after heavy-ball gradient descent (Keras's form) on f(x) = curvature * x**2 / 2."""
    x, v = 1.0, 0.0
    for _ in range(steps):
        v = momentum * v - lr * curvature * x
        x = x + v
    return abs(x)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("sharpness", [0.5, 3.0, 40.0])
def test_max_stable_learning_rate_is_the_divergence_threshold(sharpness, momentum):
    limit = scaling.max_stable_learning_rate(sharpness, momentum)
    assert _quadratic_descent(limit * 0.98, sharpness, momentum) < 1.0
    assert _quadratic_descent(limit * 1.02, sharpness, momentum) > 1.0


def test_min_batch_size_closed_form_and_chebyshev_guarantee():
    assert scaling.min_batch_size(1.0, 0.1, 0.95) == 2000  # 1 / (0.01 * 0.05)
    assert scaling.min_batch_size(2.5, 0.5, 0.9) == 100
    assert scaling.min_batch_size(0.0, 0.1) == 1
    # Simulated: per-example gradients in 3 dimensions with total variance 3; the batch the bound
    # gives misses by `tolerance` no more often than 1 - confidence.
    rng = np.random.default_rng(0)
    n = scaling.min_batch_size(3.0, 0.5, confidence=0.8)
    means = rng.standard_normal((4000, n, 3)).mean(axis=1)
    miss = np.mean(np.linalg.norm(means, axis=1) >= 0.5)
    assert miss <= 0.2


RULE = r"must be one of 'linear', 'sqrt', 'none', or a real exponent\."
RULE_HERE = r"must be one of 'linear', 'sqrt', 'none', or a real exponent, or 'staleness' with a staleness\."


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: scaling.scale_learning_rate(0.1, 0, 256), "base_batch_size=0: must be a finite number > 0"),
        (lambda: scaling.scale_learning_rate(0.1, 256, -8), "batch_size=-8: must be a finite number > 0"),
        (lambda: scaling.scale_learning_rate(0.1, 256, float("nan")), "batch_size=nan: must be a finite number > 0"),
        (lambda: scaling.scale_learning_rate(float("nan"), 256, 512), "base_lr=nan: must be a finite number >= 0"),
        (lambda: scaling.scale_learning_rate(-0.1, 256, 512), "base_lr=-0.1: must be a finite number >= 0"),
        (lambda: scaling.scale_learning_rate(0.1, 256, 512, "cubic"), "rule='cubic': " + RULE_HERE),
        (lambda: scaling.scale_learning_rate(0.1, 256, 512, float("inf")), "rule=inf: " + RULE_HERE),
        (lambda: scaling.scaling_exponent(True), "rule=True: " + RULE),
        (lambda: scaling.rescale(SGD, 0), "batch_size=0: must be a positive integer"),
        (lambda: scaling.rescale(SGD, 512, rule="quadratic"), "rule='quadratic': " + RULE_HERE),
        (
            lambda: scaling.rescale({"batch_size": 64}, 512),
            r"recipe=\{'batch_size': 64\}: must be a kbatch.scaling.Recipe",
        ),
        (
            lambda: dataclasses.replace(SGD, warmup_epochs=12),
            r"Recipe.warmup_epochs=12: must be shorter than Recipe.num_epochs=\S+ \(a warmup longer than training\)",
        ),
        (lambda: dataclasses.replace(SGD, batch_size=0), "Recipe.batch_size=0: must be a positive integer"),
        (
            lambda: dataclasses.replace(SGD, bn_momentum=1.5),
            r"Recipe.bn_momentum=1.5: must be a finite number in \[0, 1\)",
        ),
        (
            lambda: dataclasses.replace(SGD, beta_2=float("nan")),
            r"Recipe.beta_2=nan: must be a finite number in \[0, 1\)",
        ),
        (
            lambda: dataclasses.replace(SGD, ema_momentum=1.0),
            r"Recipe.ema_momentum=1.0: must be a finite number in \[0, 1\), or None",
        ),
        (lambda: dataclasses.replace(SGD, epsilon=0.0), "Recipe.epsilon=0.0: must be a finite number > 0"),
        (lambda: dataclasses.replace(SGD, adaptive=1), "Recipe.adaptive=1: must be True or False"),
        (lambda: scaling.warmup_epochs(0, 256, 1.0), "batch_size=0: must be a finite number > 0"),
        (
            lambda: scaling.warmup_epochs(512, 256, 10.0, num_epochs=8),
            r"base_warmup_epochs=10.0: must be shorter than num_epochs=8.0 \(a warmup longer than training\)",
        ),
        (
            lambda: scaling.warmup_epochs(512, 256, 1.0, epochs_per_doubling=-1),
            "epochs_per_doubling=-1: must be a finite number >= 0",
        ),
        (
            lambda: scaling.warmup_epochs(512, 256, 1.0, num_epochs=8, max_fraction=1.5),
            r"max_fraction=1.5: must be a finite number in \[0, 1\]",
        ),
        (lambda: scaling.max_stable_learning_rate(0.0), "sharpness=0.0: must be a finite number > 0"),
        (
            lambda: scaling.max_stable_learning_rate(1.0, momentum=1.0),
            r"momentum=1.0: must be a finite number in \[0, 1\)",
        ),
        (lambda: scaling.min_batch_size(1.0, 0.0), "tolerance=0.0: must be a finite number > 0"),
        (
            lambda: scaling.min_batch_size(1.0, 0.1, confidence=1.0),
            r"confidence=1.0: must be a finite number in \(0, 1\)",
        ),
        (lambda: scaling.rescale_momentum(1.5, 128, 256), r"momentum=1.5: must be a finite number in \[0, 1\]"),
        (lambda: scaling.rescale_momentum(0.9, 0, 256), "base_batch_size=0: must be a finite number > 0"),
        (lambda: scaling.rescale_momentum(0.9, 128, float("nan")), "batch_size=nan: must be a finite number > 0"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_argument_and_the_allowed_values(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# The staleness rule (issue 18): lr moved from (B0, tau0) to (B, tau) as
# lr * (B / B0) * F(tau, m) / F(tau0, m), F the delayed stability limit over the synchronous one.
# Without momentum F(tau) = sin(pi / (2 (2 tau + 1))); at tau = 1, F = (1 - m) / (2 (1 + m)).


def test_staleness_factor_closed_forms():
    assert scaling.staleness_factor(0) == 1.0
    assert scaling.staleness_factor(0, momentum=0.9) == 1.0
    assert scaling.staleness_factor(1) == pytest.approx(0.5, rel=1e-14)  # sin(pi/6)
    assert scaling.staleness_factor(2) == pytest.approx((math.sqrt(5) - 1) / 4, rel=1e-14)  # sin(pi/10)
    assert scaling.staleness_factor(3) == pytest.approx(0.2225209339563144, rel=1e-14)  # sin(pi/14)
    # One update late with heavy ball m: the characteristic polynomial z^2 - (1 + m) z + m + a
    # reaches the unit circle at a = 1 - m, against 2 + 2m synchronously.
    assert scaling.staleness_factor(1, momentum=0.5) == pytest.approx(0.5 / 3.0, rel=1e-12)
    assert scaling.staleness_factor(1, momentum=0.9) == pytest.approx(0.1 / 3.8, rel=1e-12)  # 1/38
    assert scaling.max_stable_learning_rate(4.0, 0.9, staleness=1) == pytest.approx(0.1 / 4.0, rel=1e-12)
    assert scaling.max_stable_learning_rate(4.0, staleness=2) == pytest.approx(2 * math.sin(math.pi / 10) / 4.0)


def test_staleness_rule_values_against_the_formula():
    lr, b0 = 0.1, 256
    batch = np.array([256, 512, 1024, 8192, 100])
    tau = np.array([0, 1, 2, 5, 7])
    expected = lr * (batch / b0) * np.sin(np.pi / (2 * (2 * tau + 1)))
    got = [scaling.scale_learning_rate(lr, b0, int(b), "staleness", staleness=int(t)) for b, t in zip(batch, tau)]
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    # By hand: 0.1 at 256 -> 1024 one update late: 0.1 * 4 * 1/2; with momentum 0.9: 0.1 * 4 / 38.
    assert scaling.scale_learning_rate(0.1, 256, 1024, "staleness", staleness=1) == pytest.approx(0.2)
    assert scaling.scale_learning_rate(0.1, 256, 1024, "staleness", staleness=1, momentum=0.9) == pytest.approx(
        0.4 / 38
    )
    # From a rate tuned at tau0 = 1 back to synchronous training: divided by F(1) = 1/2.
    assert scaling.scale_learning_rate(0.05, 64, 64, "staleness", staleness=0, base_staleness=1) == pytest.approx(0.1)


def _characteristic_radius(a, momentum, staleness):
    """The largest |root| of x_{t+1} = (1 + m) x_t - m x_{t-1} - a x_{t - tau}."""
    if staleness == 0:
        coefficients = [1.0, -(1.0 + momentum - a), momentum]
    else:
        coefficients = np.zeros(staleness + 2)
        coefficients[:3] = [1.0, -(1.0 + momentum), momentum]
        coefficients[-1] += a
    return np.abs(np.roots(coefficients)).max()


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("staleness", [0, 1, 2, 3, 5, 8, 20])
def test_delayed_limit_is_where_a_characteristic_root_leaves_the_unit_circle(staleness, momentum):
    limit = scaling.max_stable_learning_rate(1.0, momentum, staleness)  # lr * h at h = 1
    assert _characteristic_radius(limit * (1 - 1e-6), momentum, staleness) < 1.0
    assert _characteristic_radius(limit * (1 + 1e-6), momentum, staleness) > 1.0
    assert scaling.staleness_factor(staleness, momentum) == pytest.approx(limit / (2 + 2 * momentum), rel=1e-12)


def _delayed_descent(lr, curvature, momentum, staleness, steps=3000):
    """max |x| over the last steps of Keras's heavy ball on curvature * x**2 / 2, each gradient
    taken at the weights `staleness` updates before."""
    xs, v = [1.0] * (staleness + 1), 0.0
    for _ in range(steps):
        v = momentum * v - lr * curvature * xs[-1 - staleness]
        xs.append(xs[-1] + v)
        if abs(xs[-1]) > 1e6:
            return math.inf  # diverged
    return max(abs(x) for x in xs[-50:])


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("staleness", [1, 2, 4])
def test_delayed_limit_is_the_divergence_threshold_of_stale_gradient_descent(staleness, momentum):
    limit = scaling.max_stable_learning_rate(3.0, momentum, staleness)
    assert _delayed_descent(limit * 0.98, 3.0, momentum, staleness) < 1.0
    assert _delayed_descent(limit * 1.02, 3.0, momentum, staleness) > 1.0
    # The synchronous limit is far past it: a gradient one update late diverges there.
    assert _delayed_descent(scaling.max_stable_learning_rate(3.0, momentum) * 0.98, 3.0, momentum, staleness) > 1.0


def test_staleness_factor_falls_as_one_over_tau():
    factors = [scaling.staleness_factor(t) for t in range(0, 40)]
    assert all(a > b for a, b in zip(factors, factors[1:]))
    # The 1/tau of the issue, as tau grows: tau * F -> pi (1 - m) / (4 (1 + m)), error ~ 1/tau.
    for momentum in (0.0, 0.5, 0.9):
        tau = 100_000
        assert tau * scaling.staleness_factor(tau, momentum) == pytest.approx(
            math.pi * (1 - momentum) / (4 * (1 + momentum)), rel=1e-3
        )
        assert scaling.staleness_factor(2 * tau, momentum) / scaling.staleness_factor(tau, momentum) == (
            pytest.approx(0.5, rel=1e-3)
        )
    # More momentum, a larger cut at the same delay.
    assert scaling.staleness_factor(3, 0.9) < scaling.staleness_factor(3, 0.5) < scaling.staleness_factor(3)


@FAST
@given(
    lr=st.floats(1e-4, 10.0),
    b0=batches,
    b1=batches,
    b2=batches,
    tau=st.integers(0, 64),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
)
def test_staleness_rule_moves_with_the_batch_as_the_linear_rule(lr, b0, b1, b2, tau, momentum):
    """At a fixed staleness the rule is linear in B (it grows with the batch, where the issue's
    1/(tau sqrt(B)) would fall): B0 -> B1 -> B2 equals B0 -> B2, and lr(B2) / lr(B1) = B2 / B1."""

    def stale(rate, frm, to, base_tau):
        return scaling.scale_learning_rate(
            rate, frm, to, "staleness", staleness=tau, base_staleness=base_tau, momentum=momentum
        )

    direct = stale(lr, b0, b2, 0)
    assert stale(stale(lr, b0, b1, 0), b1, b2, tau) == pytest.approx(direct, rel=1e-9)
    assert stale(lr, b0, b1, 0) * b2 / b1 == pytest.approx(direct, rel=1e-9)
    assert scaling.scale_learning_rate(stale(lr, b0, b1, 0), b1, b2, "linear") == pytest.approx(direct, rel=1e-9)
    # tau = 0 is synchronous training: the linear rule.
    assert scaling.scale_learning_rate(lr, b0, b1, "staleness", staleness=0, momentum=momentum) == pytest.approx(
        scaling.scale_learning_rate(lr, b0, b1, "linear"), rel=1e-12
    )


@FAST
@given(
    lr=st.floats(1e-4, 10.0),
    b=st.lists(batches, min_size=3, max_size=3),
    tau=st.lists(st.integers(0, 50), min_size=3, max_size=3),
    momentum=st.floats(0.0, 0.95),
)
def test_staleness_moves_compose(lr, b, tau, momentum):
    """(B0, tau0) -> (B1, tau1) -> (B2, tau2) equals (B0, tau0) -> (B2, tau2)."""

    def move(rate, i, j):
        return scaling.scale_learning_rate(
            rate, b[i], b[j], "staleness", staleness=tau[j], base_staleness=tau[i], momentum=momentum
        )

    assert move(move(lr, 0, 1), 1, 2) == pytest.approx(move(lr, 0, 2), rel=1e-9)
    assert move(move(lr, 0, 1), 1, 0) == pytest.approx(lr, rel=1e-9)


@FAST
@given(lr=st.floats(1e-4, 10.0), b0=batches, b1=batches, rule=rules, tau=st.integers(0, 8))
def test_existing_rules_are_unchanged_and_keep_the_staleness(lr, b0, b1, rule, tau):
    alpha = EXPONENT.get(rule, rule)
    expected = lr * (b1 / b0) ** alpha
    assert scaling.scale_learning_rate(lr, b0, b1, rule) == expected
    assert scaling.scale_learning_rate(lr, b0, b1, rule, staleness=None) == expected
    assert scaling.scale_learning_rate(lr, b0, b1, rule, staleness=tau, base_staleness=tau) == expected
    assert scaling.scaling_exponent(rule) == alpha


def test_rescale_with_the_staleness_rule_closed_form():
    k = 4096 / 64
    new = scaling.rescale(SGD, 4096, rule="staleness", staleness=1)
    linear = scaling.rescale(SGD, 4096, rule="linear")
    assert new.staleness == 1
    assert new.learning_rate == pytest.approx(0.05 * k * 0.1 / 3.8)  # momentum 0.9, one update late
    assert new.weight_decay == SGD.weight_decay  # as the linear rule: lr * wd shortens too
    for field in ("momentum", "bn_momentum", "ema_momentum", "num_epochs", "warmup_epochs", "beta_1"):
        assert getattr(new, field) == getattr(linear, field), field
    # Synchronous (the recipe's staleness, 0) the rule is the linear rule.
    assert scaling.rescale(SGD, 4096, rule="staleness") == linear
    # Adam: beta_1 = 0.9 -> 0.9**4 at k = 4 is the momentum of the delay factor.
    new = scaling.rescale(ADAM, 256, rule="staleness", staleness=1)
    beta = 0.9**4
    assert new.beta_1 == pytest.approx(beta)
    assert new.learning_rate == pytest.approx(0.05 * 4 * (1 - beta) / (2 * (1 + beta)))
    assert new.epsilon == pytest.approx(1e-8 / 2)
    # A recipe tuned one update late moved back to synchronous training.
    late = dataclasses.replace(SGD, staleness=1)
    assert scaling.rescale(late, 64, rule="staleness", staleness=0).learning_rate == pytest.approx(0.05 * 38)
    # The other rules keep the recipe's staleness.
    assert scaling.rescale(late, 128).staleness == 1
    assert scaling.rescale(late, 128, staleness=1).learning_rate == pytest.approx(0.1)


@FAST
@given(
    b=st.lists(batches, min_size=2, max_size=2),
    tau=st.lists(st.integers(0, 16), min_size=3, max_size=3),
    adaptive=st.booleans(),
)
def test_rescale_with_the_staleness_rule_is_multiplicative(b, tau, adaptive):
    recipe = dataclasses.replace(SGD, adaptive=adaptive, staleness=tau[0])
    twice = scaling.rescale(scaling.rescale(recipe, b[0], "staleness", tau[1]), b[1], "staleness", tau[2])
    once = scaling.rescale(recipe, b[1], "staleness", tau[2])
    for field in dataclasses.fields(scaling.Recipe):
        a, c = getattr(twice, field.name), getattr(once, field.name)
        assert a == pytest.approx(c, rel=1e-9, abs=1e-300), field.name


@pytest.mark.parametrize("optimizer, momentum", [("momentum", 0.9), ("sgd", 0.0), ("adam", 0.9)])
def test_config_lr_scaling_staleness_is_the_rule_at_the_run_s_batch_and_delay(optimizer, momentum):
    # The trainer's peak rate is scale_learning_rate's staleness rule, with the run's momentum
    # (Adam's beta_1; none for plain SGD).
    from kbatch.training.config import recipe, schema

    settings = schema.resolve(
        {
            "lr_scaling": "staleness",
            "staleness": 4,
            "batch_size": 1024,
            "optimizer": optimizer,
            "base_batch_size": 128,
            "base_learning_rate": 0.05,
        }
    )
    expected = scaling.scale_learning_rate(0.05, 128, 1024, "staleness", staleness=4, momentum=momentum)
    assert recipe.RunRecipe.from_settings(settings).peak_learning_rate() == pytest.approx(expected, rel=1e-12)
    synchronous = schema.resolve({"lr_scaling": "staleness", "batch_size": 1024, "optimizer": optimizer})
    assert recipe.RunRecipe.from_settings(synchronous).peak_learning_rate() == pytest.approx(
        0.05 * 1024 / 128, rel=1e-12
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: scaling.scale_learning_rate(0.1, 256, 512, "staleness"),
            r"^staleness=None: must be an integer >= 0 with rule='staleness' \(the updates by "
            r"which each gradient is late; "
            r"0 is synchronous\)\.$",
        ),
        (
            lambda: scaling.scale_learning_rate(0.1, 256, 512, "staleness", staleness=-1),
            r"^staleness=-1: must be an integer >= 0\.$",
        ),
        (
            lambda: scaling.scale_learning_rate(0.1, 256, 512, "staleness", staleness=1.5),
            r"^staleness=1.5: must be an integer >= 0\.$",
        ),
        (
            lambda: scaling.scale_learning_rate(0.1, 256, 512, "staleness", staleness=True),
            r"^staleness=True: must be an integer >= 0\.$",
        ),
        (
            lambda: scaling.scale_learning_rate(0.1, 256, 512, "staleness", staleness=2, base_staleness=-2),
            r"^base_staleness=-2: must be an integer >= 0\.$",
        ),
        (
            lambda: scaling.scale_learning_rate(0.1, 256, 512, "staleness", staleness=2, momentum=1.0),
            r"^momentum=1.0: must be a finite number in \[0, 1\)\.$",
        ),
        (
            lambda: scaling.scale_learning_rate(0.1, 256, 512, "linear", staleness=3),
            r"^staleness=3: must be None or base_staleness=0 with rule='linear' \(only "
            r"rule='staleness' moves a learning "
            r"rate to another staleness\)\.$",
        ),
        (
            lambda: scaling.scale_learning_rate(0.1, 256, 512, "sqrt", staleness=-3),
            r"^staleness=-3: must be an integer >= 0\.$",
        ),
        (
            lambda: scaling.scale_learning_rate(0.1, 256, 512, "sqrt", base_staleness=0.5),
            r"^base_staleness=0.5: must be an integer >= 0\.$",
        ),
        (
            lambda: scaling.scale_learning_rate(0.1, 0, 512, "staleness", staleness=1),
            r"^base_batch_size=0: must be a finite number > 0\.$",
        ),
        (
            lambda: scaling.scaling_exponent("staleness"),
            r"^rule='staleness': must be one of 'linear', 'sqrt', 'none', or a real exponent "
            r"\(the staleness rule moves "
            r"the rate with the staleness too",
        ),
        (lambda: scaling.staleness_factor(-1), r"^staleness=-1: must be an integer >= 0\.$"),
        (lambda: scaling.staleness_factor(2, momentum=-0.1), r"^momentum=-0.1: must be a finite number in \[0, 1\)\.$"),
        (lambda: scaling.max_stable_learning_rate(1.0, staleness=0.5), r"^staleness=0.5: must be an integer >= 0\.$"),
        (
            lambda: scaling.rescale(SGD, 512, rule="linear", staleness=2),
            r"^staleness=2: must be None or the recipe's staleness 0 with rule='linear' "
            r"\(only rule='staleness' moves a "
            r"recipe to another staleness\)\.$",
        ),
        (lambda: scaling.rescale(SGD, 512, staleness=2), r"^staleness=2: must be None or the recipe's staleness 0 "),
        (
            lambda: scaling.rescale(SGD, 512, rule="staleness", staleness=-1),
            r"^staleness=-1: must be an integer >= 0\.$",
        ),
        (lambda: dataclasses.replace(SGD, staleness=-1), r"^Recipe.staleness=-1: must be an integer >= 0\.$"),
        (lambda: dataclasses.replace(SGD, staleness=2.0), r"^Recipe.staleness=2.0: must be an integer >= 0\.$"),
    ],
)
def test_staleness_bad_input_is_one_line_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
