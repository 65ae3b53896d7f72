"""The critical batch from a steps-to-target curve (McCandlish et al. 2018, section 2.2): the
updates S and examples E = B S a run needs to reach a target trade off as

    (S / S_min - 1) (E / E_min - 1) = 1,   i.e.   S(B) = S_min + E_min / B,

with S_min the fewest updates (an infinite batch) and E_min the fewest examples (a tiny batch);
B_crit = E_min / S_min is where a run needs twice S_min and twice E_min. Their noise-scale
prediction of it is B_simple (`noise_scale`), measured while training.
"""

import collections

import numpy as np

CriticalBatch = collections.namedtuple("CriticalBatch", "s_min e_min b_crit")


def fit_critical_batch(batch_sizes, steps):
    """`CriticalBatch(s_min, e_min, b_crit)` from the steps to a target at each batch size: least
    squares of S = S_min + E_min / B (linear in 1 / B), at least two batch sizes."""
    batch_sizes, steps = np.asarray(batch_sizes, np.float64), np.asarray(steps, np.float64)
    if batch_sizes.shape != steps.shape or len(np.unique(batch_sizes)) < 2:
        raise ValueError(f"batch_sizes={batch_sizes.tolist()}, steps={steps.tolist()}: need steps at two or more "
                         "batch sizes, one per batch size.")
    e_min, s_min = np.polyfit(1.0 / batch_sizes, steps, 1)
    return CriticalBatch(float(s_min), float(e_min), float(e_min / s_min) if s_min > 0 else float("inf"))
