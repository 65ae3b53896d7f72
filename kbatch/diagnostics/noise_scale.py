"""The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, "An Empirical
Model of Large-Batch Training"): the batch size at which the noise of a minibatch gradient is as
large as the gradient itself, and their prediction of the critical batch size.

G is the full-data gradient and Sigma the per-example gradient covariance. A batch-B gradient
has E|G_B|^2 = |G|^2 + tr(Sigma) / B, so squared norms at two batch sizes B_small < B_big give
unbiased estimates of both (their Appendix A). kbatch's steps measure them at no extra pass:
B_big is the global batch, B_small its parts (the replicas' batches, the micro-batches, or the two
halves of the batch); see docs/diagnostics.md.
"""

import numpy as np

from kbatch import checks

RECORD = "small_grad_sq"  # the step record's field: mean squared gradient norm of the parts


def unbiased_estimates(small_sq, big_sq, b_small, b_big):
    """(|G|^2, tr(Sigma)) from the mean squared gradient norm `small_sq` at batch `b_small` and
    `big_sq` at `b_big` (McCandlish et al. 2018, equations A.2 and A.3)."""
    if not 0 < b_small < b_big:
        raise ValueError(f"b_small={b_small!r}, b_big={b_big!r}: must be 0 < b_small < b_big.")
    gradient_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return gradient_sq, trace


class NoiseScale:
    """Exponential moving averages of the two estimates, each on its own, and B_simple as the
    ratio of the averages (each estimate alone is noisy, and |G|^2 can come out negative; the
    average of ratios would be biased). Averages are bias-corrected, as Adam's moments."""

    def __init__(self, decay=0.99, state=None):
        self.decay = checks.real("decay", decay, low=0, high=1, high_open=True)
        self._gradient_sq, self._trace, self._weight = state or (0.0, 0.0, 0.0)

    def update(self, small_sq, big_sq, b_small, b_big):
        """Take in one update's squared norms (NaN or infinite ones are skipped)."""
        gradient_sq, trace = unbiased_estimates(small_sq, big_sq, b_small, b_big)
        if not (np.isfinite(gradient_sq) and np.isfinite(trace)):
            return
        d = self.decay
        self._gradient_sq = d * self._gradient_sq + (1 - d) * float(gradient_sq)
        self._trace = d * self._trace + (1 - d) * float(trace)
        self._weight = d * self._weight + (1 - d)

    @property
    def gradient_sq(self):
        """The averaged |G|^2 (NaN before the first update)."""
        return self._gradient_sq / self._weight if self._weight else float("nan")

    @property
    def trace(self):
        """The averaged tr(Sigma) (NaN before the first update)."""
        return self._trace / self._weight if self._weight else float("nan")

    @property
    def simple(self):
        """B_simple = tr(Sigma) / |G|^2 of the averages (NaN until |G|^2 averages above 0)."""
        gradient_sq = self.gradient_sq
        return self.trace / gradient_sq if gradient_sq > 0 else float("nan")

    def state(self):
        """What a resumed run needs to go on exactly: `NoiseScale(decay, state=...)`."""
        return [self._gradient_sq, self._trace, self._weight]
