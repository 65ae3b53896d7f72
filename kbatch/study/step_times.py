"""Step-time distributions for the straggler simulation (`kbatch.study.stragglers`), with the
closed forms it is checked against.

Step times are drawn from a `StepTime`: `Constant`, `Exponential`, `LogNormal`, `Pareto` (a heavy
tail), `Slowdowns` (most steps at t0, a fraction p take k times longer) and `OneSlowMachine` (one
worker always s times slower than the others). Each has `sample(rng, shape)` (the last axis is
the worker) and its exact `mean`.

`expected_order_statistic`, `expected_max` and `async_rate` are the closed forms: E[X_(k:n)] =
integral of P(X_(k:n) > t) dt, evaluated numerically from the distribution's survival function, or
by an exact formula where one exists (exponential: mean (H_n - H_(n-k)), so E[max] = H_N / lambda;
Pareto: a ratio of gamma functions; the mixture: a binomial tail); and the asynchronous rate, the
sum over workers of 1 / mean step time (renewal theory). Pure NumPy.
"""

import abc
import dataclasses
import math

import numpy as np

CHUNK = 1 << 21  # values evaluated at a time in the binomial sums (16 MiB of float64)
_GRID = 40_001  # points of the numerical integral (log-spaced in t)


class StepTime(abc.ABC):
    """Seconds one worker takes for one step (forward, backward, its gradient ready). Subclasses
    are frozen dataclasses with `sample(rng, shape)` (i.i.d. unless the class says otherwise; the
    last axis of `shape` is the worker), the exact `mean`, and the survival function
    `sf(t) = P(T > t)`."""

    @abc.abstractmethod
    def sample(self, rng, shape):
        """See the class docstring."""

    @property
    @abc.abstractmethod
    def mean(self):
        """The exact mean step time."""

    @abc.abstractmethod
    def sf(self, t):
        """See the class docstring."""

    @abc.abstractmethod
    def upper(self, tail):
        """A time t with P(T > t) <= tail (where the numerical integral stops)."""

    def worker_means(self, n):
        """The mean step time of each of `n` workers."""
        return np.full(n, self.mean, float)

    def order_sf(self, t, k, n):
        """P(X_(k:n) > t): fewer than k of the n workers are done at time t."""
        sf = np.asarray(self.sf(t), float)
        return _fewer_than(n, k, _log1m(sf), _log(sf))

    def exact_order_statistic(self, k, n):
        """E[X_(k:n)] by a formula, or None where there is none (then it is integrated)."""
        return None

    def __str__(self):
        return self.name


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(x)


def _log1m(x):
    """log(1 - x), -inf at x = 1."""
    with np.errstate(divide="ignore"):
        return np.log1p(-np.minimum(x, 1.0))


def _binomial_tail(n, k, log_p, log_q):
    """P(Binomial(n, p) >= k), elementwise over arrays log p, log(1 - p) (either may be -inf)."""
    log_p, log_q = np.broadcast_arrays(np.asarray(log_p, float), np.asarray(log_q, float))
    j = np.arange(k, n + 1, dtype=float)
    log_choose = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in j])
    with np.errstate(invalid="ignore"):  # 0 x -inf: p^0 = 1, so the product is 0
        terms = (
            log_choose
            + np.where(j > 0, np.multiply.outer(log_p, j), 0.0)
            + np.where(n - j > 0, np.multiply.outer(log_q, n - j), 0.0)
        )
    top = np.max(terms, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.minimum(np.exp(top[..., 0]) * np.sum(np.exp(terms - top), axis=-1), 1.0)


def _fewer_than(n, k, log_f, log_sf):
    """P(Binomial(n, F) < k): fewer than k of n done, with F = exp(log_f), 1 - F = exp(log_sf);
    summed over the shorter side."""
    if k <= 0:
        return np.zeros(np.shape(log_f))
    if k > n:
        return np.ones(np.shape(log_f))
    if k == n:  # 1 - F^n, without the cancellation
        return -np.expm1(n * np.asarray(log_f, float))
    if n - k + 1 <= k:
        return 1.0 - _binomial_tail(n, k, log_f, log_sf)
    return _binomial_tail(n, n - k + 1, log_sf, log_f)  # at least n - k + 1 not done


@dataclasses.dataclass(frozen=True)
class Constant(StepTime):
    """Every step takes `seconds`: no stragglers."""

    seconds: float = 1.0

    def sample(self, rng, shape):
        return np.full(shape, float(self.seconds))

    @property
    def mean(self):
        return float(self.seconds)

    def sf(self, t):
        return (np.asarray(t) < self.seconds).astype(float)

    def upper(self, tail):
        return float(self.seconds)

    def exact_order_statistic(self, k, n):
        return float(self.seconds)

    @property
    def name(self):
        return "constant"


@dataclasses.dataclass(frozen=True)
class Exponential(StepTime):
    """Exponential step times of mean `mean_seconds` (rate lambda = 1 / mean): memoryless, the
    textbook case with an exact maximum, E[max of N] = H_N / lambda."""

    mean_seconds: float = 1.0

    def sample(self, rng, shape):
        return rng.exponential(self.mean_seconds, shape)

    @property
    def mean(self):
        return float(self.mean_seconds)

    def sf(self, t):
        return np.exp(-np.maximum(np.asarray(t, float), 0.0) / self.mean_seconds)

    def upper(self, tail):
        return -self.mean_seconds * math.log(tail)

    def exact_order_statistic(self, k, n):
        """mean (H_n - H_(n-k)): the gaps between exponential order statistics are exponential."""
        return self.mean_seconds * (harmonic(n) - harmonic(n - k))

    @property
    def name(self):
        return "exponential"


@dataclasses.dataclass(frozen=True)
class LogNormal(StepTime):
    """Log-normal step times with mean `mean_seconds`; log T is normal with standard deviation
    `sigma` (and mean log(mean_seconds) - sigma^2 / 2). sigma 0.5: a step 1.6x the median or
    slower one time in six; sigma 1: 2.7x."""

    mean_seconds: float = 1.0
    sigma: float = 0.5

    @property
    def mu(self):
        return math.log(self.mean_seconds) - self.sigma**2 / 2

    def sample(self, rng, shape):
        return rng.lognormal(self.mu, self.sigma, shape)

    @property
    def mean(self):
        return float(self.mean_seconds)

    def sf(self, t):
        t = np.asarray(t, float)
        z = (_log(np.maximum(t, 0.0)) - self.mu) / (self.sigma * math.sqrt(2))
        return 0.5 * _erfc(z)

    def upper(self, tail):
        # P(Z > z) <= exp(-z^2 / 2) / 2 for z >= 0
        return math.exp(self.mu + self.sigma * math.sqrt(2 * math.log(1 / tail)))

    @property
    def name(self):
        return f"lognormal(sigma={self.sigma:g})"


_erfc = np.vectorize(math.erfc, otypes=[float])


@dataclasses.dataclass(frozen=True)
class Pareto(StepTime):
    """Pareto step times (a heavy tail): P(T > t) = (t_m / t)^alpha for t >= t_m, with the scale t_m
    set so that the mean is `mean_seconds` (t_m = mean (alpha - 1) / alpha; alpha > 1). The
    variance is finite only for alpha > 2; the maximum of N grows as N^(1/alpha)."""

    mean_seconds: float = 1.0
    alpha: float = 3.0

    def __post_init__(self):
        if not self.alpha > 1:
            raise ValueError(f"Pareto: alpha={self.alpha}: want alpha > 1 (a finite mean).")

    @property
    def scale(self):
        return self.mean_seconds * (self.alpha - 1) / self.alpha

    def sample(self, rng, shape):
        return self.scale * (1.0 + rng.pareto(self.alpha, shape))

    @property
    def mean(self):
        return float(self.mean_seconds)

    def sf(self, t):
        t = np.asarray(t, float)
        return np.where(t < self.scale, 1.0, (self.scale / np.maximum(t, self.scale)) ** self.alpha)

    def upper(self, tail):
        return self.scale * tail ** (-1 / self.alpha)

    def exact_order_statistic(self, k, n):
        """t_m Gamma(n + 1) Gamma(n - k + 1 - 1/alpha) / (Gamma(n - k + 1) Gamma(n + 1 - 1/alpha))."""
        a = 1 / self.alpha
        return self.scale * math.exp(
            math.lgamma(n + 1) - math.lgamma(n + 1 - a) + math.lgamma(n - k + 1 - a) - math.lgamma(n - k + 1)
        )

    @property
    def name(self):
        return f"pareto(alpha={self.alpha:g})"


@dataclasses.dataclass(frozen=True)
class Slowdowns(StepTime):
    """Most steps take t0; a fraction `fraction` of them (any worker, any step, independently)
    take `factor` times longer: a garbage collection, a preempted core, a slow read. t0 is set
    so that the mean is `mean_seconds`: mean = t0 (1 + fraction (factor - 1))."""

    mean_seconds: float = 1.0
    fraction: float = 0.01
    factor: float = 10.0

    def __post_init__(self):
        if not (0 <= self.fraction <= 1 and self.factor >= 1):
            raise ValueError(
                f"Slowdowns: fraction={self.fraction}, factor={self.factor}: want a fraction in [0, 1] "
                "and a factor >= 1."
            )

    @property
    def t0(self):
        return self.mean_seconds / (1 + self.fraction * (self.factor - 1))

    def sample(self, rng, shape):
        return self.t0 * np.where(rng.random(shape) < self.fraction, self.factor, 1.0)

    @property
    def mean(self):
        return float(self.mean_seconds)

    def sf(self, t):
        t = np.asarray(t, float)
        return np.where(t < self.t0, 1.0, np.where(t < self.t0 * self.factor, self.fraction, 0.0))

    def upper(self, tail):
        return self.t0 * self.factor

    def exact_order_statistic(self, k, n):
        """t0 (1 + (factor - 1) P(at least n - k + 1 of the n steps are slow))."""
        if self.fraction in (0, 1):
            slow = float(self.fraction)
        else:
            slow = float(_binomial_tail(n, n - k + 1, math.log(self.fraction), math.log1p(-self.fraction)))
        return self.t0 * (1 + (self.factor - 1) * slow)

    @property
    def name(self):
        return f"slowdowns(p={self.fraction:g}, x{self.factor:g})"


@dataclasses.dataclass(frozen=True)
class OneSlowMachine(StepTime):
    """Worker 0 (a machine with a bad disk, a thermally throttled chip, a noisy neighbour) always
    takes `slowdown` times as long as `base` says; the other workers draw from `base`. Not i.i.d.
    across workers: `mean` is a normal worker's, `worker_means(n)` each worker's."""

    base: StepTime = Constant(1.0)
    slowdown: float = 4.0

    def __post_init__(self):
        if not self.slowdown >= 1:
            raise ValueError(f"OneSlowMachine: slowdown={self.slowdown}: want a factor >= 1.")

    def sample(self, rng, shape):
        times = self.base.sample(rng, shape)
        times[..., 0] *= self.slowdown
        return times

    @property
    def mean(self):
        return self.base.mean

    def worker_means(self, n):
        means = np.full(n, self.base.mean, float)
        means[0] *= self.slowdown
        return means

    def sf(self, t):
        """A normal worker's P(T > t) (`order_sf` takes the slow one into account)."""
        return self.base.sf(t)

    def upper(self, tail):
        return self.slowdown * self.base.upper(tail)

    def order_sf(self, t, k, n):
        """P(fewer than k done at t), the slow machine done with P F(t / s), each other with F(t)."""
        slow_sf = np.asarray(self.base.sf(np.asarray(t, float) / self.slowdown), float)
        sf = np.asarray(self.base.sf(t), float)
        log_f, log_sf = _log1m(sf), _log(sf)
        if k == n:  # 1 - F(t / s) F(t)^(n - 1)
            return -np.expm1(_log1m(slow_sf) + (n - 1) * log_f)
        return (1 - slow_sf) * _fewer_than(n - 1, k - 1, log_f, log_sf) + slow_sf * _fewer_than(n - 1, k, log_f, log_sf)

    def exact_order_statistic(self, k, n):
        if isinstance(self.base, Constant):
            return float(np.sort(self.worker_means(n))[k - 1])
        return None

    @property
    def name(self):
        return f"one slow machine (x{self.slowdown:g}, others {self.base.name})"


def harmonic(n):
    """H_n = 1 + 1/2 + ... + 1/n (H_0 = 0)."""
    return float(np.sum(1.0 / np.arange(1, n + 1))) if n > 0 else 0.0


def integrate_order_statistic(dist, k, n):
    """E[X_(k:n)] = integral over t > 0 of P(X_(k:n) > t), numerically: t = exp(u) on a uniform
    grid in u from 1e-9 x the mean to where P(X_(k:n) > t) < 1e-13, trapezoids."""
    if not 1 <= k <= n:
        raise ValueError(f"order statistic {k} of {n}: want 1 <= k <= n.")
    low = 1e-9 * float(np.min(dist.worker_means(n)))
    high = dist.upper(1e-13 / n)
    u = np.linspace(math.log(low), math.log(high), _GRID)
    t = np.exp(u)
    step = max(1, CHUNK // min(k, n - k + 1))  # the binomial sums: (grid points) x (terms) at a time
    integrand = np.concatenate([dist.order_sf(t[i : i + step], k, n) for i in range(0, t.size, step)]) * t
    return float(
        low * dist.order_sf(np.array([low]), k, n)[0] + np.sum((integrand[1:] + integrand[:-1]) / 2) * (u[1] - u[0])
    )


def expected_order_statistic(dist, k, n, exact=True):
    """E[X_(k:n)], the k-th smallest of one step's n step times (k = n: the maximum, the
    synchronous update; k = N of n = N + b: with b backups). The distribution's exact formula
    where it has one (unless `exact` is False), else `integrate_order_statistic`."""
    value = dist.exact_order_statistic(k, n) if exact else None
    return integrate_order_statistic(dist, k, n) if value is None else float(value)


def expected_max(dist, n, exact=True):
    """E[max of n step times]: the mean seconds per synchronous update of n workers."""
    return expected_order_statistic(dist, n, n, exact)


def async_rate(dist, n):
    """Updates per second of n asynchronous workers: the sum over workers of 1 / mean step time
    (each worker is a renewal process; in the long run it completes 1 / mean steps a second)."""
    return float(np.sum(1.0 / dist.worker_means(n)))
