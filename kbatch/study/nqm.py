"""The noisy quadratic model (NQM) of Zhang et al. 2019, "Which Algorithmic Choices Matter at Which
Batch Sizes? Insights From a Noisy Quadratic Model", in closed form.

The loss is L(theta) = 1/2 sum_i h_i theta_i^2 over d independent directions with curvatures
h_i > 0. A minibatch gradient of batch B is h_i theta_i + xi_i per direction, xi_i ~ N(0, c_i / B),
c_i the per-example gradient variance (Zhang et al. take c_i proportional to h_i). theta_0 has mean
0 and E[theta_i^2] = m0_i. Every optimizer here is linear in theta and the noise, so the second
moments E[theta_i^2]_t follow a linear recursion with a closed form, and the expected loss at step
t is 1/2 sum_i h_i E[theta_i^2]_t:

- "sgd": theta <- theta - lr g.
- "momentum": heavy ball, v <- beta v - lr g, theta <- theta + v, starting from v = 0 (Keras's
  SGD with `momentum=beta`).
- "preconditioned": theta <- theta - lr P g with P = H^(-p), the per-direction rate lr h_i^(-p);
  Zhang et al.'s model of Adam and K-FAC, whose preconditioners approximate a power of the
  curvature (p = 1 would be Newton's method).

`steps_to_target` is the first step at which the expected loss reaches a target (found exactly:
the loss need not fall monotonically, see `_first_crossing`), `best_steps` the same with the
learning rate tuned (as Shallue et al. 2019 re-tune it at every batch size), and `steps_curve`
the steps-to-target against batch size: perfect scaling at small batch, no gain at large batch,
and the critical batch between them. `fit` picks a power-law NQM (Zhang et al.'s
spectrum h_i = h_1 i^(-1)) whose top curvature, initial loss and simple noise scale B_simple
(McCandlish et al. 2018, "An Empirical Model of Large-Batch Training") equal measured ones, to draw
a theory curve next to a measured one. `simulate` is a direct Monte Carlo simulation of the same
model, the reference the closed forms are tested against. Pure NumPy.
"""

import dataclasses

import numpy as np

from kbatch import checks

OPTIMIZERS = ("sgd", "momentum", "preconditioned")
_LEAF = 32  # steps_to_target evaluates the loss at every step of intervals this short
_BLOCK = 1 << 20  # terms (steps x modes) evaluated at once
_CRITICAL = 1e-10  # see _off_critical_damping


def _array(name, value, allow_zero=False):
    array = np.array(value, dtype=float)
    if array.ndim != 1 or array.size == 0:
        checks.fail(f"{name}.shape", array.shape, "a non-empty one-dimensional shape")
    bad = ~np.isfinite(array) | (array < 0 if allow_zero else array <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        checks.fail(f"{name}[{i}]", float(array[i]), "a finite number " + (">= 0" if allow_zero else "> 0"))
    array.flags.writeable = False
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class NoisyQuadratic:
    """The NQM of Zhang et al. 2019: one entry per direction of the curvature h_i > 0,
    the per-example gradient noise variance c_i >= 0 and the initial second moment
    m0_i = E[theta_i^2] > 0. The arrays are copied and read-only."""

    curvatures: np.ndarray
    noise: np.ndarray
    initial_second_moments: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "curvatures", _array("curvatures", self.curvatures))
        object.__setattr__(self, "noise", _array("noise", self.noise, allow_zero=True))
        object.__setattr__(
            self, "initial_second_moments", _array("initial_second_moments", self.initial_second_moments)
        )
        for name in ("noise", "initial_second_moments"):
            shape = getattr(self, name).shape
            if shape != self.curvatures.shape:
                checks.fail(f"{name}.shape", shape, f"{self.curvatures.shape}, the shape of curvatures")

    @property
    def dims(self):
        """The number of directions d."""
        return self.curvatures.size

    @property
    def initial_loss(self):
        """The expected loss at step 0: 1/2 sum_i h_i m0_i."""
        return 0.5 * float(np.sum(self.curvatures * self.initial_second_moments))

    @property
    def b_simple(self):
        """The simple noise scale B_simple = tr(C) / |G|^2 of McCandlish et al. 2018 at
        initialization: sum_i c_i / sum_i h_i^2 m0_i. The true gradient G = H theta_0 has mean 0
        over the mean-zero initialization, so |G|^2 is its expected square E|H theta_0|^2."""
        return float(np.sum(self.noise) / np.sum(self.curvatures**2 * self.initial_second_moments))


def power_law(dims, top_curvature, exponent=1.0, noise_per_curvature=1.0, initial_second_moment=1.0):
    """Zhang et al. 2019's spectrum: h_i = top_curvature * i^(-exponent) for
    i = 1..dims, noise c_i = noise_per_curvature * h_i (the gradient covariance proportional to the
    Hessian, as near a minimum), and the same initial second moment in every direction."""
    dims = checks.positive_int("dims", dims)
    top = checks.real("top_curvature", top_curvature, low=0, low_open=True)
    exponent = checks.real("exponent", exponent, low=0)
    per_curvature = checks.real("noise_per_curvature", noise_per_curvature, low=0)
    moment = checks.real("initial_second_moment", initial_second_moment, low=0, low_open=True)
    curvatures = top * np.arange(1, dims + 1, dtype=float) ** -exponent
    return NoisyQuadratic(curvatures, per_curvature * curvatures, np.full(dims, moment))


def fit(top_curvature, b_simple, initial_loss, dims=1000, exponent=1.0):
    """A power-law NQM (`power_law`, Zhang et al. 2019's spectrum) whose top curvature, B_simple
    at initialization and initial loss equal measured ones: the initial loss fixes m0
    (L0 = m0/2 sum h_i), then B_simple fixes the noise per curvature k
    (B_simple = k sum h_i / (m0 sum h_i^2)). Measure the sharpness lambda_max and B_simple
    (McCandlish et al. 2018) early in training, and give the loss above its floor."""
    b_simple = checks.real("b_simple", b_simple, low=0, low_open=True)
    initial_loss = checks.real("initial_loss", initial_loss, low=0, low_open=True)
    shape = power_law(dims, top_curvature, exponent)
    moment = initial_loss / shape.initial_loss
    curvatures = shape.curvatures
    per_curvature = b_simple * moment * np.sum(curvatures**2) / np.sum(curvatures)
    return power_law(dims, top_curvature, exponent, per_curvature, moment)


def _run(nqm, optimizer, lr, batch, momentum, power):
    """The checked inputs as the per-direction step sizes a_i (lr, or lr h_i^-p when
    preconditioned) and the heavy-ball coefficient beta (0 unless `optimizer` is "momentum")."""
    if not isinstance(nqm, NoisyQuadratic):
        checks.fail("nqm", nqm, "a kbatch.study.nqm.NoisyQuadratic")
    checks.choice("optimizer", optimizer, OPTIMIZERS)
    lr = checks.real("lr", lr, low=0, low_open=True)
    checks.real("batch", batch, low=0, low_open=True)
    momentum = checks.real("momentum", momentum, low=0, high=1, high_open=True)
    power = checks.real("power", power)
    sizes = lr * nqm.curvatures**-power if optimizer == "preconditioned" else np.full(nqm.dims, lr)
    return sizes, momentum if optimizer == "momentum" else 0.0


def stability_limit(nqm, optimizer, momentum=0.9, power=0.5):
    """The learning rate at and above which the expected loss diverges: every direction needs
    a_i h_i < 2 (1 + beta), i.e. lr < 2 / h_max for SGD and 2 (1 + beta) / h_max for heavy-ball
    momentum (the spectral radius of Zhang et al. 2019's moment recursion reaches 1; the bound
    of `kbatch.scaling.max_stable_learning_rate` with lambda_max = h_max)."""
    sizes, beta = _run(nqm, optimizer, 1.0, 1.0, momentum, power)
    return 2.0 * (1.0 + beta) / float(np.max(sizes * nqm.curvatures))


def _stable(nqm, sizes, beta):
    return bool(np.all(sizes * nqm.curvatures < 2.0 * (1.0 + beta)))


def _steady_moments(nqm, sizes, beta, batch):
    """E[theta_i^2] as t -> infinity: a c (1 + beta) / (B h (1 - beta) (2 (1 + beta) - a h)),
    Zhang et al. 2019's M_inf = a c / (B h (2 - a h)) for SGD (beta = 0)."""
    h, c = nqm.curvatures, nqm.noise
    return sizes * c * (1 + beta) / (batch * h * (1 - beta) * (2 * (1 + beta) - sizes * h))


def steady_state_loss(nqm, optimizer, lr, batch, momentum=0.9, power=0.5):
    """The expected loss the run settles at: 1/2 sum_i h_i M_inf_i, which is
    sum_i lr c_i / (2 B (2 - lr h_i)) for SGD (Zhang et al. 2019); inf when unstable."""
    sizes, beta = _run(nqm, optimizer, lr, batch, momentum, power)
    if not _stable(nqm, sizes, beta):
        return float("inf")
    return 0.5 * float(np.sum(nqm.curvatures * _steady_moments(nqm, sizes, beta, batch)))


class _Modes:
    """The expected loss at step t as steady + Re sum_j weights_j rates_j^t: one term per direction
    for SGD, one per eigenvalue of each direction's 3x3 moment recursion for momentum. Terms with
    a real rate in [0, 1) (and so a real weight) are monotone in t; the others (complex rates, an
    under-damped heavy ball) oscillate inside |w| |r|^t and are kept in polar form."""

    def __init__(self, steady, weights, rates):
        weights, rates = weights.ravel(), rates.ravel()
        monotone = (rates.imag == 0) & (rates.real >= 0)
        self.steady = steady
        self.weights, self.rates = weights.real[monotone], rates.real[monotone]
        oscillating = rates[~monotone]
        self.log_magnitudes, self.angles = np.log(np.abs(oscillating)), np.angle(oscillating)
        self.cosine_weights, self.sine_weights = weights[~monotone].real, -weights[~monotone].imag
        self.envelope = np.abs(weights[~monotone])

    def loss(self, steps):
        """The loss at each step of the integer array `steps`, a block of steps at a time."""
        block = max(1, _BLOCK // (self.rates.size + 3 * self.angles.size))
        terms = np.empty(steps.size)
        for i in range(0, steps.size, block):
            terms[i : i + block] = self._terms(steps[i : i + block, None])
        return self.steady + terms

    def _terms(self, t):
        decay, turn = np.exp(t * self.log_magnitudes), t * self.angles
        oscillating = (decay * np.cos(turn)) @ self.cosine_weights + (decay * np.sin(turn)) @ self.sine_weights
        return self.rates**t @ self.weights + oscillating

    def lower_bound(self, first, last):
        """A lower bound on the loss at steps first..last: a monotone term is smallest at an end,
        an oscillating one is at least -|w| |r|^first. Less a margin for rounding."""
        ends = np.minimum(self.weights * self.rates**first, self.weights * self.rates**last)
        envelope = self.envelope * np.exp(first * self.log_magnitudes)
        margin = 1e-12 * (abs(self.steady) + np.abs(ends).sum() + envelope.sum())
        return self.steady + ends.sum() - envelope.sum() - margin


def _sgd_modes(nqm, sizes, batch):
    """E[theta^2]_t = r^t (m0 - s) + s per direction, r = (1 - a h)^2, s the steady state
    (Zhang et al. 2019: E[theta^2]_{t+1} = (1 - a h)^2 E[theta^2]_t + a^2 c / B)."""
    h = nqm.curvatures
    steady = _steady_moments(nqm, sizes, 0.0, batch)
    weights = 0.5 * h * (nqm.initial_second_moments - steady)
    return _Modes(0.5 * float(np.sum(h * steady)), weights, (1 - sizes * h) ** 2)


def _momentum_modes(nqm, sizes, beta, batch):
    """Heavy ball, theta_{t+1} = b theta_t - beta theta_{t-1} - a xi_t with b = 1 + beta - a h.
    The moments m_t = (E theta_t^2, E theta_t theta_{t-1}, E theta_{t-1}^2) follow
    m_{t+1} = M m_t + (a^2 c / B, 0, 0), M = [[b^2, -2 b beta, beta^2], [b, -beta, 0], [1, 0, 0]],
    so m_t = M^t (m_0 - m*) + m* with m* the steady state, and M^t = V diag(mu^t) V^-1. With
    lambda_1, lambda_2 the roots of z^2 = b z - beta (complex when under-damped), M's eigenvalues
    are mu = (lambda_1^2, lambda_2^2, lambda_1 lambda_2 = beta), with the eigenvectors
    (lambda_1^2, lambda_1, 1), (lambda_2^2, lambda_2, 1) and (beta, b / 2, 1). theta_0 = theta_{-1}
    (zero velocity): m_0 = m0 (1, 1, 1)."""
    h, m0 = nqm.curvatures, nqm.initial_second_moments
    sizes = _off_critical_damping(sizes * h, beta) / h
    b = 1 + beta - sizes * h
    larger = (b + np.where(b < 0, -1, 1) * np.sqrt(b**2 - 4 * beta + 0j)) / 2
    smaller = beta / larger  # the product of the roots, without the cancellation in b - sqrt(.)
    rates = np.stack([larger**2, smaller**2, np.full_like(larger, beta)], axis=1)
    vectors = np.stack([rates, np.stack([larger, smaller, b / 2 + 0j], axis=1), np.ones_like(rates)], axis=1)
    steady = _steady_moments(nqm, sizes, beta, batch)
    start = m0[:, None] - np.stack([steady, b * steady / (1 + beta), steady], axis=1)
    coefficients = np.linalg.solve(vectors, start[..., None])[..., 0]
    weights = 0.5 * h[:, None] * rates * coefficients
    return _Modes(0.5 * float(np.sum(h * steady)), weights, rates)


def _off_critical_damping(rates_times_curvature, beta):
    """a h, moved off critical damping where the heavy ball is within _CRITICAL of it
    ((1 + beta - a h)^2 = 4 beta): there the roots meet and M has no eigenbasis (a Jordan block),
    and near it the eigenbasis is ill-conditioned. a h moves by at most about
    _CRITICAL / (2 sqrt(beta)); the closed form is exact for the moved problem up to rounding.
    Measured against the step-by-step recursion, the loss is then off by up to about 1e-5
    (beta = 0.9) and 1e-4 (beta = 0.99) relative, elsewhere by about 1e-14."""
    b = 1 + beta - rates_times_curvature
    near = np.abs(b**2 - 4 * beta) < _CRITICAL
    moved = np.where(b < 0, -1, 1) * np.sqrt(4 * beta + _CRITICAL)
    return np.where(near, 1 + beta - moved, rates_times_curvature)


def _modes(nqm, optimizer, lr, batch, momentum, power):
    """The loss's modes, or None when the run diverges."""
    sizes, beta = _run(nqm, optimizer, lr, batch, momentum, power)
    if not _stable(nqm, sizes, beta):
        return None
    if beta > 0:  # heavy ball with beta = 0 is SGD
        return _momentum_modes(nqm, sizes, beta, batch)
    return _sgd_modes(nqm, sizes, batch)


def _steps(steps):
    array = np.asarray(steps)
    if array.ndim != 1:
        checks.fail("steps.shape", array.shape, "one-dimensional")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        checks.fail("steps.dtype", str(array.dtype), "an integer type")
    if (array < 0).any():
        i = int(np.flatnonzero(array < 0)[0])
        checks.fail(f"steps[{i}]", int(array[i]), "an integer >= 0")
    return array.astype(np.int64)


def expected_loss(nqm, optimizer, lr, batch, steps, momentum=0.9, power=0.5):
    """The exact expected loss E[L(theta_t)] at each step t of the integer array `steps`, in
    closed form (Zhang et al. 2019): SGD's and the preconditioned rate's
    E[theta^2]_t = r^t (m0 - M_inf) + M_inf, momentum's through the eigenvalues of its moment
    recursion (exact to rounding, except within about 1e-10 of momentum's critical damping,
    where it is off by up to about 1e-5 relative). A run that diverges (`stability_limit`) has
    loss inf at every step after 0, so that a learning-rate search skips it."""
    steps = _steps(steps)
    modes = _modes(nqm, optimizer, lr, batch, momentum, power)
    losses = np.full(steps.size, np.inf) if modes is None else modes.loss(steps)
    return np.where(steps == 0, nqm.initial_loss, losses)


def _first_crossing(modes, target, max_steps):
    """The first t in 1..max_steps with loss(t) <= target, or None. The loss need not be monotone
    (a noisy stiff direction can rise toward its steady state while the others fall), so no
    bisection: the intervals are searched left to right, an interval whose lower bound is above
    the target is skipped, a long one is halved, a short one is evaluated at every step. Every
    step skipped has loss > target, so the first hit is the first crossing."""
    intervals = [(1, max_steps)] if max_steps >= 1 else []
    while intervals:
        first, last = intervals.pop()
        if modes.lower_bound(first, last) > target:
            continue
        if last - first < _LEAF:
            below = np.flatnonzero(modes.loss(np.arange(first, last + 1)) <= target)
            if below.size:
                return first + int(below[0])
        else:
            middle = (first + last) // 2
            intervals += [(middle + 1, last), (first, middle)]
    return None


def steps_to_target(nqm, optimizer, lr, batch, target, max_steps=10**6, momentum=0.9, power=0.5):
    """The first step t >= 0 at which the expected loss (`expected_loss`) is <= `target`, or None
    if none is within `max_steps` (for instance when the steady state is above the target, or
    the run diverges). Zhang et al. 2019 and Shallue et al. 2019 measure training speed so."""
    target = checks.real("target", target, low=0, low_open=True)
    max_steps = checks.integer("max_steps", max_steps, low=0)
    modes = _modes(nqm, optimizer, lr, batch, momentum, power)
    if nqm.initial_loss <= target:
        return 0
    return None if modes is None else _first_crossing(modes, target, max_steps)


def learning_rate_grid(nqm, optimizer, momentum=0.9, power=0.5, per_doubling=4, doublings=30):
    """The default learning rates `best_steps` tries, in ascending order: `per_doubling` per
    factor of 2 below the stability limit (excluded), over `doublings` factors of 2. Doubling a
    rate on the grid stays on it, so the linear scaling rule's rates for doubled batches (Goyal
    et al. 2017) are among its points."""
    per_doubling = checks.positive_int("per_doubling", per_doubling)
    doublings = checks.positive_int("doublings", doublings)
    exponents = np.arange(per_doubling * doublings, 0, -1) / per_doubling
    return stability_limit(nqm, optimizer, momentum, power) * 2.0**-exponents


def best_steps(nqm, optimizer, batch, target, lrs=None, max_steps=10**6, momentum=0.9, power=0.5):
    """(steps, lr): the fewest steps to `target` over the learning rates `lrs` (default
    `learning_rate_grid`) and the learning rate that takes them, as Shallue et al. 2019 and Zhang
    et al. 2019 tune it at every batch size; (None, None) if no rate reaches the target. Of rates
    that tie, the largest."""
    rates = learning_rate_grid(nqm, optimizer, momentum, power) if lrs is None else lrs
    best, best_lr = None, None
    for lr in sorted(rates, reverse=True):
        # Only fewer steps than the best so far matter: search that far.
        limit = max_steps if best is None else best - 1
        if limit < 0:
            break
        steps = steps_to_target(nqm, optimizer, lr, batch, target, limit, momentum, power)
        if steps is not None:
            best, best_lr = steps, float(lr)
    return best, best_lr


def steps_curve(nqm, optimizer, batches, target, lrs=None, max_steps=10**6, momentum=0.9, power=0.5):
    """The steps-to-target curve against batch size with the learning rate tuned at each batch
    (`best_steps`): one dict {"batch", "steps", "lr"} per batch of `batches`, the curve Zhang et
    al. 2019 and Shallue et al. 2019 plot."""
    curve = []
    for batch in batches:
        steps, lr = best_steps(nqm, optimizer, batch, target, lrs, max_steps, momentum, power)
        curve.append({"batch": batch, "steps": steps, "lr": lr})
    return curve


def simulate(nqm, optimizer, lr, batch, steps, runs=1000, seed=0, momentum=0.9, power=0.5):
    """A Monte Carlo simulation of Zhang et al. 2019's NQM, the reference for the closed forms:
    `runs` runs, each drawing theta_0 ~ N(0, m0) and at every step the gradient
    h theta + N(0, c / B), and stepping the optimizer (heavy ball as v <- beta v - a g,
    theta <- theta + v). Returns (mean, standard error) of the loss over the runs at each step of
    `steps`."""
    steps = _steps(steps)
    sizes, beta = _run(nqm, optimizer, lr, batch, momentum, power)
    runs = checks.integer("runs", runs, low=2)
    rng = np.random.default_rng(seed)
    h, noise = nqm.curvatures, np.sqrt(nqm.noise / batch)
    theta = rng.standard_normal((runs, nqm.dims)) * np.sqrt(nqm.initial_second_moments)
    velocity = np.zeros_like(theta)
    wanted, recorded, last = set(steps.tolist()), {}, int(steps.max(initial=0))
    for t in range(last + 1):
        if t in wanted:
            recorded[t] = 0.5 * (theta**2) @ h
        if t == last:
            break
        gradient = h * theta + noise * rng.standard_normal(theta.shape)
        velocity = beta * velocity - sizes * gradient
        theta = theta + velocity
    losses = np.array([recorded[t] for t in steps.tolist()]).reshape(steps.size, runs)
    return losses.mean(axis=1), losses.std(axis=1, ddof=1) / np.sqrt(runs)
