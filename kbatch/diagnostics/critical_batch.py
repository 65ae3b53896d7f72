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
    squares of S = S_min + E_min / B on relative errors (the steps span orders of magnitude: on
    absolute errors the smallest batches alone would set the fit), with S_min, E_min >= 0; at least
    two batch sizes. B_crit = E_min / S_min is infinite when the steps never stop falling as 1 / B."""
    batch_sizes, steps = np.asarray(batch_sizes, np.float64), np.asarray(steps, np.float64)
    if batch_sizes.shape != steps.shape or len(np.unique(batch_sizes)) < 2:
        raise ValueError(
            f"batch_sizes={batch_sizes.tolist()}, steps={steps.tolist()}: need steps at two or more "
            "batch sizes, one per batch size."
        )
    design = np.stack([np.ones_like(batch_sizes), 1.0 / batch_sizes], axis=1) / steps[:, None]
    s_min, e_min = np.linalg.lstsq(design, np.ones_like(steps), rcond=None)[0]
    if s_min < 0 or e_min < 0:  # the optimum is on an edge: one term alone
        column = 1 if s_min < 0 else 0
        value = design[:, column].sum() / (design[:, column] ** 2).sum()
        s_min, e_min = (0.0, value) if column == 1 else (value, 0.0)
    return CriticalBatch(float(s_min), float(e_min), float(e_min / s_min) if s_min > 0 else float("inf"))
