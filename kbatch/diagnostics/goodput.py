"""Goodput: the examples per second a batch trains at, times the progress each example makes there
(Qiao et al., "Pollux", OSDI 2021).

With the gradient noise scale phi (B_simple, McCandlish et al. 2018), an update at batch B makes
the progress of (phi + B) / (phi + B0) updates at the batch B0 the run started from, so each
example does

    efficiency(B) = (phi + B0) / (phi + B)

of what it did at B0 (1 at B0, falling towards B0 / B once B is far past phi), and

    goodput(B) = B / T_update(B) x efficiency(B)

is progress per second. The batch that maximises it is large when the noise is (phi large: big
batches lose little) and an update's time grows slowly with its batch (T0 large, gamma small).
`best_batch` picks it among the doublings of the batch now, which keep the batch a multiple of
what the replicas and accumulation need, and those that fit in memory with some accumulation;
`time_model` fits T_update to the times measured so far (`kbatch.diagnostics.update_time`). NumPy only.
"""

import math

import numpy as np

from kbatch.diagnostics import update_time

LINEAR = 1.0  # gamma with only two batch sizes measured: time proportional to the batch beyond T0


def efficiency(batch, base, b_simple):
    """The progress of an example at `batch` relative to one at `base`, with noise scale `b_simple`."""
    return (b_simple + base) / (b_simple + batch)


def goodput(batch, base, b_simple, seconds_per_update):
    """Progress per second at `batch`, in examples at `base` per second."""
    return batch / seconds_per_update * efficiency(batch, base, b_simple)


def time_model(measured):
    """The `UpdateTimeFit` of {batch: seconds per update}: T0 + k B**gamma with gamma fitted from
    three or more batch sizes, gamma = 1 from two (the cautious guess: no better than linear
    beyond what was measured), None from fewer (nothing to extrapolate from)."""
    batches = sorted(measured)
    seconds = [measured[b] for b in batches]
    if len(batches) >= 3:
        return update_time.fit_update_time(batches, seconds)
    if len(batches) == 2:
        return update_time.fit_at_gamma(batches, seconds, LINEAR)
    return None


def best_batch(batch, base, b_simple, limit, model, accumulation=lambda b: 1):
    """The global batch after an epoch's end at `batch`: of `batch` x 2**n up to `limit`, the one
    with the most goodput under the time `model` (an `UpdateTimeFit` of one pass over a batch).
    `accumulation(B)` gives the accumulation steps k that batch B needs to fit in a device's memory
    (`kbatch.diagnostics.step_memory`; None: it does not fit); an update at B then takes k passes
    of B / k, k x T(B / k). Without a model (one batch size timed) it explores as the adaptive batch
    does: it doubles while `b_simple` is above the batch, since a doubling then costs at most a
    third more examples per unit of progress. Never smaller than `batch`; `batch` when `b_simple`
    is not a number yet."""
    if not math.isfinite(b_simple) or b_simple <= 0:
        return batch
    doublings = [batch * 2**n for n in range(int(math.log2(max(limit // batch, 1))) + 1)]
    candidates = [batch] + [b for b in doublings[1:] if accumulation(b) is not None]
    if model is None:
        return 2 * batch if b_simple > batch and 2 * batch in candidates else batch
    rates = [goodput(b, base, b_simple, update_seconds(model, b, accumulation(b) or 1)) for b in candidates]
    return candidates[int(np.argmax(rates))]


def update_seconds(model, batch, accumulation_steps):
    """The seconds of one update at global `batch` in `accumulation_steps` passes, under the time
    `model` of one pass: k x T(B / k)."""
    return accumulation_steps * float(model.seconds(batch / accumulation_steps))
