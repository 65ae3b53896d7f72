"""Stragglers: what waiting for the slowest worker costs data parallelism, simulated at scale.

Synchronous data parallelism applies an update when all N workers have sent their gradient, so
each update takes the *maximum* of N step times. Synchronous training with b backup workers
(Chen et al. 2016, "Revisiting Distributed Synchronous SGD") launches N + b and applies the update
when the first N gradients arrive, dropping the rest: an update takes the N-th smallest of N + b
step times. Asynchronous training never waits: each worker applies its gradient when it is done
and reads the parameters again, so its gradient is *stale* by the updates the others applied
meanwhile.

Step times are drawn from a `kbatch.study.step_times.StepTime` (constant, exponential,
log-normal, Pareto, rare slowdowns, one slow machine).

`simulate_sync` and `simulate_async` are the Monte Carlo simulators (vectorised: N = 1,024 with a
few thousand updates takes a fraction of a second), checked against `step_times`' closed forms
(the expected order statistics of N draws; the sum of the workers' rates).

`simulate` runs every mode at one N (with, for each backup setting, plain synchronous training
on the same N + b machines); `closed_form_seconds`, `efficiency` and `overtakes` read its results
(tools/stragglers.py draws them).

What the simulation assumes: no communication cost (an update is applied the instant its last
gradient arrives); step times independent across workers and across steps; with backups, the
late steps cut off at each update and all N + b workers starting the next one together; and in
asynchronous training every gradient counted as useful however stale it is. Pure NumPy: no
TensorFlow or Keras.
"""

import dataclasses
import math

import numpy as np

from kbatch.study.step_times import async_rate, expected_order_statistic

CHUNK = 1 << 21  # step times drawn at a time (16 MiB of float64)
ASYNC_BURN_IN = 16  # steps every asynchronous worker takes before the measured window opens
ASYNC_MIN_STEPS = 64  # steps of each worker's (at least) in the measured window
ASYNC_BATCHES = 16  # sub-windows of the measured window: the batch means of the standard error


@dataclasses.dataclass(frozen=True)
class Throughput:
    """One mode at one N. `workers`: gradients per update (N; asynchronous: the workers, one
    gradient an update); `machines`: workers launched (N + backups). `seconds_per_update` is the
    mean time between updates, `standard_error` its Monte Carlo standard error; `staleness` the
    mean number of updates other workers applied while an applied gradient was being computed
    (0 for the synchronous modes; N - 1 for N asynchronous workers, equal or not: a step of
    worker i sees sum over j != i of mean_i / mean_j updates, which average to N - 1 over the
    updates applied), `staleness_p99` its 99th percentile; `updates` how many were simulated."""

    mode: str
    workers: int
    machines: int
    backups: int
    batch_per_worker: int
    seconds_per_update: float
    standard_error: float
    staleness: float
    staleness_p99: float
    updates: int

    @property
    def updates_per_second(self):
        return 1.0 / self.seconds_per_update

    @property
    def examples_per_update(self):
        return self.batch_per_worker * (1 if self.mode == "async" else self.workers)

    @property
    def examples_per_second(self):
        return self.examples_per_update / self.seconds_per_update


def _check(workers, batch_per_worker, updates, backups=0):
    for name, value, least in (
        ("workers", workers, 1),
        ("batch_per_worker", batch_per_worker, 1),
        ("updates", updates, 2),
        ("backups", backups, 0),
    ):
        if int(value) != value or value < least:
            raise ValueError(f"{name}={value}: want an integer >= {least}.")


def simulate_sync(dist, workers, batch_per_worker, updates, rng, backups=0):
    """Synchronous data parallelism, `updates` updates: each launches workers + backups steps and
    is applied when the first `workers` gradients are in (backups 0: the slowest of them), so it
    takes the workers-th smallest of the workers + backups step times; the late gradients are
    dropped and every worker starts the next step from the new parameters."""
    _check(workers, batch_per_worker, updates, backups)
    machines = workers + backups
    rows = max(1, CHUNK // machines)
    per_update = []
    for start in range(0, updates, rows):
        times = dist.sample(rng, (min(rows, updates - start), machines))
        if backups == 0:
            per_update.append(times.max(axis=1))
        else:
            per_update.append(np.partition(times, workers - 1, axis=1)[:, workers - 1])
    per_update = np.concatenate(per_update)
    return Throughput(
        mode="sync" if backups == 0 else "backups",
        workers=workers,
        machines=machines,
        backups=backups,
        batch_per_worker=batch_per_worker,
        seconds_per_update=float(per_update.mean()),
        standard_error=float(per_update.std(ddof=1) / math.sqrt(updates)),
        staleness=0.0,
        staleness_p99=0.0,
        updates=updates,
    )


def simulate_async(dist, workers, batch_per_worker, updates, rng):
    """Asynchronous training: each worker loops on its own (read the parameters, compute a
    gradient, apply it) and never waits. Every worker first takes `ASYNC_BURN_IN` steps; the
    measured window runs from the moment the last of them has done so to the moment the first
    runs out of simulated steps, and holds at least `updates` updates and `ASYNC_MIN_STEPS` steps
    of each worker. The rate is the updates applied in the window over its length (its standard
    error from `ASYNC_BATCHES` sub-windows); an applied gradient's staleness is the number of
    updates applied between its worker's previous update (when it read the parameters) and its
    own, from the event order of all the workers (ties broken by worker index)."""
    _check(workers, batch_per_worker, updates)
    means = dist.worker_means(workers)
    in_window = max(math.ceil(updates / workers), ASYNC_MIN_STEPS)
    steps = math.ceil((ASYNC_BURN_IN + 1.1 * in_window) * means.max() / means.min()) + ASYNC_BURN_IN
    while True:
        done = np.cumsum(dist.sample(rng, (steps, workers)), axis=0)  # done[k, i]: worker i's (k+1)-th update
        opens, closes = done[ASYNC_BURN_IN - 1].max(), done[-1].min()
        counted = (done > opens) & (done <= closes)
        if counted.sum() >= updates and counted.sum(axis=0).min() >= ASYNC_MIN_STEPS:
            break
        if steps * workers > 1 << 27:
            raise RuntimeError(
                f"simulate_async: {workers} workers of {dist} did not fill a window of "
                f"{updates} updates in {steps} steps each."
            )
        steps *= 2
    times, worker = done.ravel(), np.tile(np.arange(workers), steps)
    order = np.lexsort((worker, times))
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    rank = rank.reshape(steps, workers)
    staleness = rank[1:] - rank[:-1] - 1  # updates by the others between a worker's read and its update
    length = closes - opens
    edges = opens + length * np.arange(ASYNC_BATCHES + 1) / ASYNC_BATCHES
    edges[-1] = closes
    per_batch = np.histogram(done[counted], bins=edges)[0] / (length / ASYNC_BATCHES)
    rate = counted.sum() / length
    rate_error = per_batch.std(ddof=1) / math.sqrt(ASYNC_BATCHES)
    applied = staleness[counted[1:]]
    return Throughput(
        mode="async",
        workers=workers,
        machines=workers,
        backups=0,
        batch_per_worker=batch_per_worker,
        seconds_per_update=float(1.0 / rate),
        standard_error=float(rate_error / rate**2),
        staleness=float(applied.mean()),
        staleness_p99=float(np.percentile(applied, 99)),
        updates=int(counted.sum()),
    )


def backups_for(spec, workers):
    """The backups of a spec at N workers: an integer b, or "N/K" for ceil(N / K)."""
    text = str(spec).strip()
    if text.upper().startswith("N/"):
        divisor = int(text[2:])
        if divisor < 1:
            raise ValueError(f"backups {spec}: want N/K with K a positive integer.")
        return math.ceil(workers / divisor)
    count = int(text)
    if count < 0:
        raise ValueError(f"backups {spec}: want a count >= 0 or N/K.")
    return count


def simulate(dist, workers, batch_per_worker, updates, seed, backups=("N/16",)):
    """{mode label: Throughput} at `workers` N: "sync", "async", "backups b=SPEC" for each of
    `backups` (see `backups_for`), and for each "sync on N+b" (plain synchronous training on as
    many machines as the backup run launched: Chen et al.'s comparison at equal machines). Each
    mode has its own random stream from (seed, N, mode), so a result does not depend on which
    other N or modes are simulated."""

    def rng(*key):
        return np.random.default_rng([seed, workers, *key])

    results = {
        "sync": simulate_sync(dist, workers, batch_per_worker, updates, rng(0)),
        "async": simulate_async(dist, workers, batch_per_worker, updates, rng(1)),
    }
    for spec in backups:
        b = backups_for(spec, workers)
        results[f"backups b={spec}"] = simulate_sync(dist, workers, batch_per_worker, updates, rng(2, b), backups=b)
        results[f"sync on N+b, b={spec}"] = simulate_sync(dist, workers + b, batch_per_worker, updates, rng(0, b))
    return results


def closed_form_seconds(dist, result):
    """The closed form of a `Throughput`'s seconds per update: E[X_(N:N+b)] (E[max] for plain
    synchronous training) or 1 / `async_rate`."""
    if result.mode == "async":
        return 1.0 / async_rate(dist, result.workers)
    return expected_order_statistic(dist, result.workers, result.machines)


def efficiency(dist, result):
    """Examples/s over what the machines used would give if none ever waited (each machine's
    batch / its mean step time, summed): the fraction of the compute that becomes applied
    gradients (asynchronous: 1, its gradients all counted however stale)."""
    return result.examples_per_second / (result.batch_per_worker * async_rate(dist, result.machines))


def significantly_above(a, b, z=2.0):
    """Whether `Throughput` a has more examples/s than b by more than z combined standard errors
    (deterministic step times: by more than a relative 1e-9)."""
    se = math.hypot(
        a.examples_per_second * a.standard_error / a.seconds_per_update,
        b.examples_per_second * b.standard_error / b.seconds_per_update,
    )
    return a.examples_per_second - b.examples_per_second > max(z * se, 1e-9 * b.examples_per_second)


def overtakes(workers, ahead):
    """The smallest N of `workers` (ascending) from which `ahead` (a bool per N) holds at that N
    and at every larger one; None if it does not hold at the last."""
    first = None
    for n, above in zip(workers, ahead):
        first = (n if first is None else first) if above else None
    return first
