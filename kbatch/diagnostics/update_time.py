"""The time of one update against the global batch, T_update(B) = T0 + k * B**gamma, fitted to
measured times.

T0 is the fixed cost of an update that a larger batch amortises (launching the step, the
all-reduce latency, the host's work per loop), k * B**gamma the part that grows with the batch.
It is the simplest model of "examples/s saturates": B / T_update(B) grows almost linearly while
T0 dominates and levels off at B**(1 - gamma) / k once the accelerator is full (Shallue et al.
2019, on hardware: a batch larger than the one that saturates the device buys steps, not
throughput). gamma near 0 means a fixed cost per update (latency bound), gamma = 1 a time
proportional to the batch (compute bound). The batch-size study uses it for the wall time to a
target (`kbatch.study.throughput`), the goodput controller for the throughput of a batch it has
not tried (`kbatch.diagnostics.goodput`). NumPy only.
"""

import dataclasses
import math

import numpy as np

GAMMA_RANGE = (0.1, 2.0)
_GRID_POINTS = 191  # gamma every 0.01 over GAMMA_RANGE, then a golden-section refinement
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclasses.dataclass(frozen=True)
class UpdateTimeFit:
    """T_update(B) = t0 + k * B**gamma (seconds); `residual` is the RMS relative error of the
    fit at the measured points (0.02: the model is 2% off on average)."""

    t0: float
    k: float
    gamma: float
    residual: float

    def seconds(self, batch):
        """Seconds per update at `batch` (a number or an array)."""
        return self.t0 + self.k * np.asarray(batch, float) ** self.gamma

    def examples_per_second(self, batch):
        """Training throughput at `batch`: B / T_update(B)."""
        return np.asarray(batch, float) / self.seconds(batch)

    @property
    def gamma_at_search_edge(self):
        """Whether gamma is at an end of `GAMMA_RANGE` (the data want a value beyond it)."""
        return min(abs(self.gamma - edge) for edge in GAMMA_RANGE) < 1e-6


def _nonnegative_least_squares(design, target):
    """argmin ||design @ p - target|| over p >= 0, for two columns: the unconstrained solution,
    else the better of the two one-column solutions (the optimum then lies on an edge)."""
    p = np.linalg.lstsq(design, target, rcond=None)[0]
    if np.all(p >= 0):
        return p
    edges = []
    for column in range(2):
        edge = np.zeros(2)
        edge[column] = max(0.0, design[:, column] @ target / (design[:, column] @ design[:, column]))
        edges.append(edge)
    return min(edges, key=lambda e: np.sum((design @ e - target) ** 2))


def _fit_at(gamma, batches, seconds):
    """(t0, k, sum of squared relative residuals) of the best fit with this gamma. Relative:
    each point is divided by its measured time, so a 1 ms and a 100 ms update weigh alike."""
    design = np.stack([np.ones_like(batches), batches**gamma], axis=1) / seconds[:, None]
    t0, k = _nonnegative_least_squares(design, np.ones_like(seconds))
    return t0, k, float(np.sum((design @ np.array([t0, k]) - 1) ** 2))


def _golden_section(loss, low, high, tolerance=1e-10):
    """The minimum of a unimodal `loss` on [low, high]."""
    a, b = low, high
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    loss_c, loss_d = loss(c), loss(d)
    while b - a > tolerance:
        if loss_c < loss_d:
            b, d, loss_d = d, c, loss_c
            c = b - _GOLDEN * (b - a)
            loss_c = loss(c)
        else:
            a, c, loss_c = c, d, loss_d
            d = a + _GOLDEN * (b - a)
            loss_d = loss(d)
    return (a + b) / 2


def fit_at_gamma(batches, seconds, gamma):
    """The `UpdateTimeFit` with `gamma` given: (T0, k) >= 0 in closed form, from as few as two
    distinct batch sizes."""
    batches, seconds = np.asarray(batches, float), np.asarray(seconds, float)
    t0, k, squares = _fit_at(gamma, batches, seconds)
    return UpdateTimeFit(t0=float(t0), k=float(k), gamma=float(gamma), residual=math.sqrt(squares / len(batches)))


def fit_update_time(batches, seconds):
    """The `UpdateTimeFit` of measured seconds per update at each batch (repeated batches
    allowed): least squares on relative errors, closed form in (t0, k) >= 0 at each gamma, gamma
    found on a grid over `GAMMA_RANGE` and refined by golden section around the grid's best."""
    batches, seconds = np.asarray(batches, float), np.asarray(seconds, float)
    if batches.shape != seconds.shape or batches.ndim != 1:
        raise ValueError(
            f"fit_update_time: {batches.shape} batches against {seconds.shape} times; want two "
            "lists of the same length."
        )
    if len(np.unique(batches)) < 3:
        raise ValueError(
            f"fit_update_time: {len(np.unique(batches))} distinct batch sizes; the fit has 3 parameters "
            "(T0, k, gamma), so it needs at least 3."
        )
    if not (np.all(batches > 0) and np.all(seconds > 0) and np.all(np.isfinite(seconds))):
        raise ValueError("fit_update_time: batch sizes and seconds per update must be positive and finite.")
    loss = lambda gamma: _fit_at(gamma, batches, seconds)[2]  # noqa: E731
    grid = np.linspace(*GAMMA_RANGE, _GRID_POINTS)
    best = int(np.argmin([loss(g) for g in grid]))
    gamma = _golden_section(loss, grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)])
    t0, k, squares = _fit_at(gamma, batches, seconds)
    return UpdateTimeFit(t0=float(t0), k=float(k), gamma=float(gamma), residual=math.sqrt(squares / len(batches)))
