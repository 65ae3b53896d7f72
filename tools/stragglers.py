"""Stragglers simulated at scale: examples/s of synchronous, backup-worker (Chen et al. 2016) and
asynchronous data parallelism against the number of workers N, for several step-time distributions.

For each of `--distributions` and each N of `--workers`, `kbatch.study.stragglers` simulates
`--updates` updates of plain synchronous training (an update waits for the slowest of N), of
synchronous training with b backup workers for each of `--backups` (N + b launched, the update
applied when the first N gradients are in; "N/16" means b = ceil(N / 16)) and, beside it, plain
synchronous training on those N + b machines (Chen et al.'s comparison at equal machines), and of
asynchronous training (each worker applies its gradient when done; the mean staleness of an
applied gradient from the simulated event order). Every simulated time per update is written
beside its closed form (the expected N-th order statistic of N + b step times; the sum of the
workers' rates).

Distributions, each with a normal worker's mean step time `--mean_step` seconds:
  constant                  every step the same (no stragglers)
  exponential               memoryless
  lognormal:SIGMA           log T normal with standard deviation SIGMA
  pareto:ALPHA              a heavy tail, P(T > t) ~ t^-ALPHA (ALPHA > 1)
  slowdowns:P:K             most steps at t0, a fraction P of them K times longer
  slow_machine:S            one worker always S times slower, the others constant

Writes PREFIX.csv (a row per distribution, N and mode), PREFIX.md (a table per distribution, the
crossovers, simulation against closed form) and PREFIX.png (examples/s against N, log-log, a line
per mode, a panel per distribution), refused if they exist unless `--overwrite`; prints for each
distribution the N from which asynchronous and backup-worker training overtake plain synchronous
training in examples/s ("never" in the range). A bad flag is one line `stragglers: ...` and exit
code 2, before anything is simulated or written.

  python tools/stragglers.py --output_prefix=/tmp/stragglers
"""

import time

STARTED = time.perf_counter()  # before absl and NumPy are imported: the time reported is the command's

import os  # noqa: E402
import sys  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

import kbatch_cli  # noqa: E402

DISTRIBUTIONS = flags.DEFINE_list(
    "distributions",
    ["lognormal:0.5", "lognormal:1.0", "pareto:3", "slowdowns:0.01:10", "slow_machine:4"],
    "Step-time distributions: constant, exponential, lognormal:SIGMA, pareto:ALPHA, slowdowns:P:K, slow_machine:S.",
)
WORKERS = flags.DEFINE_list(
    "workers",
    [str(2**k) for k in range(1, 11)],
    "Numbers of workers N (gradients per synchronous update), 2 to 1024 by default.",
)
BACKUPS = flags.DEFINE_list("backups", ["N/16", "4"], "Backup workers b: a count, or N/K for ceil(N / K).")
BATCH_PER_WORKER = flags.DEFINE_integer("batch_per_worker", 32, "Examples in each worker's batch b_w.")
MEAN_STEP = flags.DEFINE_float("mean_step", 0.1, "Mean seconds of a (normal) worker's step.")
UPDATES = flags.DEFINE_integer("updates", 4000, "Updates simulated per distribution, N and mode.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the simulation.")
OUTPUT_PREFIX = flags.DEFINE_string("output_prefix", None, "Writes PREFIX.csv, PREFIX.md and PREFIX.png.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing PREFIX.csv, .md and .png.")


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}: settings go in flags")
    report = kbatch_cli.import_light("kbatch.study.straggler_report")  # NumPy only: no Keras, no TensorFlow
    setting = report.Setting(tuple(BACKUPS.value), BATCH_PER_WORKER.value, MEAN_STEP.value, UPDATES.value, SEED.value)
    report.check(setting, DISTRIBUTIONS.value, WORKERS.value)
    paths = report.output_paths(OUTPUT_PREFIX.value, OVERWRITE.value)
    report.report(
        setting,
        DISTRIBUTIONS.value,
        WORKERS.value,
        paths,
        "python tools/stragglers.py " + " ".join(sys.argv[1:]),
        STARTED,
    )
    return 0


if __name__ == "__main__":
    kbatch_cli.run_tool("stragglers", main, __doc__)
