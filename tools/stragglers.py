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

import csv  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import study_output  # noqa: E402  (tools/ is the script's own folder, first on sys.path)
from absl import flags  # noqa: E402

DISTRIBUTIONS = flags.DEFINE_list(
    "distributions", ["lognormal:0.5", "lognormal:1.0", "pareto:3", "slowdowns:0.01:10", "slow_machine:4"],
    "Step-time distributions: constant, exponential, lognormal:SIGMA, pareto:ALPHA, slowdowns:P:K, slow_machine:S.")
WORKERS = flags.DEFINE_list("workers", [str(2 ** k) for k in range(1, 11)],
                            "Numbers of workers N (gradients per synchronous update), 2 to 1024 by default.")
BACKUPS = flags.DEFINE_list("backups", ["N/16", "4"], "Backup workers b: a count, or N/K for ceil(N / K).")
BATCH_PER_WORKER = flags.DEFINE_integer("batch_per_worker", 32, "Examples in each worker's batch b_w.")
MEAN_STEP = flags.DEFINE_float("mean_step", 0.1, "Mean seconds of a (normal) worker's step.")
UPDATES = flags.DEFINE_integer("updates", 4000, "Updates simulated per distribution, N and mode.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the simulation.")
OUTPUT_PREFIX = flags.DEFINE_string("output_prefix", None, "Writes PREFIX.csv, PREFIX.md and PREFIX.png.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing PREFIX.csv, .md and .png.")
SUFFIXES = {"csv": ".csv", "markdown": ".md", "plot": ".png"}
KINDS = {"constant": 0, "exponential": 0, "lognormal": 1, "pareto": 1, "slowdowns": 2, "slow_machine": 1}


def parse_distribution(spec, mean):
    """The `StepTime` of one --distributions entry with mean step `mean`; ValueError if malformed."""
    step_times = study_output.import_numpy_only("step_times")

    kind, *values = spec.strip().split(":")
    usage = (f"--distributions: {spec!r}: want constant, exponential, lognormal:SIGMA, pareto:ALPHA, "
             "slowdowns:P:K or slow_machine:S")
    if kind not in KINDS or len(values) != KINDS[kind]:
        raise ValueError(usage + ".")
    try:
        values = [float(v) for v in values]
    except ValueError:
        raise ValueError(usage + " (numbers).") from None
    if kind == "lognormal" and not values[0] > 0:
        raise ValueError(f"--distributions: {spec!r}: want SIGMA > 0.")
    try:
        return {"constant": lambda: step_times.Constant(mean),
                "exponential": lambda: step_times.Exponential(mean),
                "lognormal": lambda: step_times.LogNormal(mean, values[0]),
                "pareto": lambda: step_times.Pareto(mean, values[0]),
                "slowdowns": lambda: step_times.Slowdowns(mean, *values),
                "slow_machine": lambda: step_times.OneSlowMachine(step_times.Constant(mean), values[0])}[kind]()
    except ValueError as error:
        raise ValueError(f"--distributions: {spec!r}: {error}") from None


def parse_workers(values):
    """The sorted numbers of workers; ValueError unless distinct integers from 1 to 65536."""
    try:
        workers = sorted(int(v) for v in values)
    except ValueError:
        workers = []
    if not workers or len(set(workers)) != len(workers) or workers[0] < 1 or workers[-1] > 65536:
        raise ValueError(f"--workers={','.join(values)}: want distinct integers from 1 to 65536.")
    return workers


def check_flags():
    """ValueError naming the first bad flag."""
    stragglers = study_output.import_numpy_only("stragglers")

    if not DISTRIBUTIONS.value:
        raise ValueError("--distributions: give at least one.")
    if not MEAN_STEP.value > 0 or not math.isfinite(MEAN_STEP.value):
        raise ValueError(f"--mean_step={MEAN_STEP.value}: want a positive number of seconds.")
    for spec in DISTRIBUTIONS.value:
        parse_distribution(spec, MEAN_STEP.value)
    parse_workers(WORKERS.value)
    for spec in BACKUPS.value:
        try:
            stragglers.backups_for(spec, 2)
        except ValueError:
            raise ValueError(f"--backups={','.join(BACKUPS.value)}: {spec!r} is not a count >= 0 or N/K "
                             "(K a positive integer).") from None
    if len(set(BACKUPS.value)) != len(BACKUPS.value):
        raise ValueError(f"--backups={','.join(BACKUPS.value)}: a backup setting given twice.")
    for flag, least in ((BATCH_PER_WORKER, 1), (UPDATES, 2)):
        if flag.value < least:
            raise ValueError(f"--{flag.name}={flag.value}: want an integer >= {least}.")
    prefix = OUTPUT_PREFIX.value
    if not prefix:
        raise ValueError("--output_prefix is required.")
    if not os.path.isdir(os.path.dirname(prefix) or "."):
        raise ValueError(f"--output_prefix={prefix}: no folder {os.path.dirname(prefix)}.")
    for path in output_paths().values():
        if os.path.exists(path) and not OVERWRITE.value:
            raise ValueError(f"--output_prefix={prefix}: {path} exists: refusing to overwrite it (pass --overwrite).")


def output_paths():
    return {kind: OUTPUT_PREFIX.value + suffix for kind, suffix in SUFFIXES.items()}


def simulate_all(dists, workers):
    """{distribution name: {N: {mode: Throughput}}}, printing a line per distribution."""
    stragglers = study_output.import_numpy_only("stragglers")

    results = {}
    for spec, dist in dists.items():
        started = time.perf_counter()
        results[spec] = {n: stragglers.simulate(dist, n, BATCH_PER_WORKER.value, UPDATES.value, SEED.value,
                                                backups=BACKUPS.value) for n in workers}
        print(f"stragglers: {dist}: simulated N = {workers[0]}..{workers[-1]} in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    return results


def closed_forms(dists, results):
    """{(spec, N, mode): the closed-form seconds per update}."""
    stragglers = study_output.import_numpy_only("stragglers")

    return {(spec, n, mode): stragglers.closed_form_seconds(dists[spec], result)
            for spec, by_n in results.items() for n, by_mode in by_n.items() for mode, result in by_mode.items()}


def crossovers(by_n, closed, spec):
    """{label: (simulated N or None, closed-form N or None)} for each mode against plain sync: async,
    each backups setting at the same N, and each backups setting against sync on the same N + b machines."""
    stragglers = study_output.import_numpy_only("stragglers")

    workers = sorted(by_n)

    def closed_eps(n, mode):
        result = by_n[n][mode]
        return result.examples_per_update / closed[(spec, n, mode)]

    def both(mode, baseline):
        simulated = [stragglers.significantly_above(by_n[n][mode], by_n[n][baseline]) for n in workers]
        exact = [closed_eps(n, mode) > closed_eps(n, baseline) * (1 + 1e-9) for n in workers]
        return stragglers.overtakes(workers, simulated), stragglers.overtakes(workers, exact)

    found = {"async vs sync": both("async", "sync")}
    for b in BACKUPS.value:
        found[f"backups b={b} vs sync"] = both(f"backups b={b}", "sync")
        found[f"backups b={b} vs sync on N+b"] = both(f"backups b={b}", f"sync on N+b, b={b}")
    return found


def _n(value):
    return "never" if value is None else f"N = {value}"


def crossover_text(simulated, exact):
    text = "never in the range" if simulated is None else f"from N = {simulated}"
    return text + ("" if simulated == exact else f" (closed form: {_n(exact)})")


def modes():
    return ["sync", *(m for b in BACKUPS.value for m in (f"backups b={b}", f"sync on N+b, b={b}")), "async"]


def write_csv(path, dists, results, closed):
    stragglers = study_output.import_numpy_only("stragglers")

    fields = ["distribution", "workers", "mode", "backups", "machines", "batch_per_worker", "seconds_per_update",
              "seconds_per_update_se", "closed_form_seconds_per_update", "updates_per_second", "examples_per_second",
              "efficiency", "mean_staleness", "staleness_p99", "updates_simulated"]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(fields)
        for spec, by_n in results.items():
            for n, by_mode in by_n.items():
                for mode in modes():
                    r = by_mode[mode]
                    writer.writerow([str(dists[spec]), n, mode, r.backups, r.machines, r.batch_per_worker,
                                     f"{r.seconds_per_update:.6g}", f"{r.standard_error:.3g}",
                                     f"{closed[(spec, n, mode)]:.6g}", f"{r.updates_per_second:.6g}",
                                     f"{r.examples_per_second:.6g}", f"{stragglers.efficiency(dists[spec], r):.4f}",
                                     f"{r.staleness:.2f}", f"{r.staleness_p99:.0f}", r.updates])


ASSUMPTIONS = ("What the simulation assumes: no communication cost (an update is applied the instant its last "
               "gradient counted arrives); step times independent across workers and steps (a straggler is slow "
               "for one step, except the one slow machine, slow at every step); with backups, the late steps "
               "are cut off at each update and all N + b workers start the next step together, so a slow draw "
               "never carries over (which is why backups can beat the no-waiting rate: the slow steps are "
               "thrown away); asynchronous gradients all counted as useful, however stale. It measures "
               "examples/s only, not what staleness or a smaller effective batch does to the updates needed.")


def recovered(dist, by_n, n, b):
    """The share of the examples/s that plain sync at N = n loses against n normal workers that never
    wait (n x batch / a normal worker's mean step) which backups b win back (None when sync loses nothing)."""
    sync, ideal = by_n[n]["sync"].examples_per_second, n * BATCH_PER_WORKER.value / dist.mean
    if ideal - sync <= 1e-9 * ideal:
        return None
    return (by_n[n][f"backups b={b}"].examples_per_second - sync) / (ideal - sync)


def summary(dists, results, found):
    """A row per distribution: sync's efficiency at the largest N, the crossovers, what backups recover there."""
    stragglers = study_output.import_numpy_only("stragglers")

    top = max(next(iter(results.values())))
    header = ["distribution", f"sync efficiency at N = {top}", "async overtakes sync"]
    for b in BACKUPS.value:
        header += [f"b={b} overtakes sync", f"b={b} overtakes sync on N+b",
                   f"b={b} at N = {top}: efficiency, loss recovered"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for spec, by_n in results.items():
        dist, where = dists[spec], found[spec]
        row = [str(dist), f"{stragglers.efficiency(dist, by_n[top]['sync']):.2f}",
               crossover_text(*where["async vs sync"])]
        for b in BACKUPS.value:
            share = recovered(dist, by_n, top, b)
            row += [crossover_text(*where[f"backups b={b} vs sync"]),
                    crossover_text(*where[f"backups b={b} vs sync on N+b"]),
                    f"{stragglers.efficiency(dist, by_n[top][f'backups b={b}']):.2f}, "
                    + ("-" if share is None else f"{share:.0%}")]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown(dists, results, closed, found, command, seconds):
    stragglers = study_output.import_numpy_only("stragglers")

    workers = sorted(next(iter(results.values())))
    lines = ["# Stragglers: synchronous, backup-worker and asynchronous data parallelism, simulated", "",
             f"`{command}` ({seconds:.0f} s).", "",
             f"Each point: {UPDATES.value:,} simulated updates (asynchronous: at least as many, and at least "
             f"{stragglers.ASYNC_MIN_STEPS} steps of every worker after a burn-in of {stragglers.ASYNC_BURN_IN}); seed "
             f"{SEED.value}; each worker's batch {BATCH_PER_WORKER.value}, a normal worker's mean step "
             f"{MEAN_STEP.value:g} s. Backups: {', '.join(BACKUPS.value)} (N/K: b = ceil(N / K)); *sync on N+b* is "
             "plain synchronous training on as many machines as the backup run launched (equal machines).", "",
             "Efficiency: examples/s over what the machines used would give if none ever waited (machines x batch / "
             "mean step). *Overtakes from N*: ahead by more than 2 standard errors at that N and every larger one "
             "(the closed form's N in parentheses where it differs). Loss recovered: the share of the examples/s "
             "plain sync loses against N normal workers that never wait (N x batch / a normal worker's mean step) "
             "which the backups win back at the same N.", "",
             ASSUMPTIONS, "", *summary(dists, results, found), "",
             "In the tables a cell is examples/s (efficiency). Asynchronous staleness: the mean number of updates "
             "other workers applied while an applied gradient was computed (N - 1 whatever the distribution), and "
             "its 99th percentile.", ""]
    for spec, by_n in results.items():
        dist = dists[spec]
        lines += [f"## {dist}", "",
                  "| N | " + " | ".join(modes()) + " | async staleness: mean, p99 |",
                  "| ---: | " + " | ".join("---:" for _ in modes()) + " | ---: |"]
        for n in workers:
            cells = [f"{by_n[n][m].examples_per_second:,.0f} ({stragglers.efficiency(dist, by_n[n][m]):.2f})"
                     for m in modes()]
            stale = by_n[n]["async"]
            lines.append(f"| {n} | " + " | ".join(cells) + f" | {stale.staleness:.1f}, {stale.staleness_p99:.0f} |")
        deviations = []
        for m in modes():
            z = [(by_n[n][m].seconds_per_update - closed[(spec, n, m)]) / by_n[n][m].standard_error for n in workers
                 if by_n[n][m].standard_error > 1e-9 * by_n[n][m].seconds_per_update]  # not deterministic
            rel = max(abs(by_n[n][m].seconds_per_update / closed[(spec, n, m)] - 1) for n in workers)
            deviations.append(f"{m} {rel:.2%}" + (f" (|z| <= {max(map(abs, z)):.1f})" if z else ""))
        lines += ["", "Simulated seconds per update against the closed form, the largest deviation over N (and in "
                  f"standard errors where the time varies): {'; '.join(deviations)}.", ""]
    return "\n".join(lines)


def plot(path, dists, results):
    """Examples/s against N, log-log: a line per mode, a panel per distribution, the no-waiting line dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    count = len(results)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 4.2 * rows), squeeze=False)
    shown = [m for m in modes() if not m.startswith("sync on")]
    for ax, (spec, by_n) in zip(axes.ravel(), results.items()):
        workers = sorted(by_n)
        ideal = [n * BATCH_PER_WORKER.value / dists[spec].mean for n in workers]
        ax.plot(workers, ideal, ":", color="0.5", label="no waiting (N b_w / mean step)")
        for i, mode in enumerate(shown):
            ax.plot(workers, [by_n[n][mode].examples_per_second for n in workers], "o-", ms=3,
                    color=f"C{i}", label=mode)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(top=2 * max(ideal))
        study_output.batch_size_axis(ax, workers, "workers N")
        ax.set_ylabel("examples / s")
        ax.set_title(str(dists[spec]), fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[count:]:
        ax.set_visible(False)
    figure.suptitle(f"examples/s against workers: batch {BATCH_PER_WORKER.value} per worker, mean step "
                    f"{MEAN_STEP.value:g} s, {UPDATES.value:,} updates simulated per point", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}: settings go in flags")
    check_flags()
    dists = {spec: parse_distribution(spec, MEAN_STEP.value) for spec in DISTRIBUTIONS.value}
    workers = parse_workers(WORKERS.value)
    results = simulate_all(dists, workers)
    closed = closed_forms(dists, results)
    found = {spec: crossovers(results[spec], closed, spec) for spec in dists}
    paths = output_paths()
    command = "python tools/stragglers.py " + " ".join(sys.argv[1:])
    write_csv(paths["csv"], dists, results, closed)
    plot(paths["plot"], dists, results)
    with open(paths["markdown"], "w") as file:
        file.write(markdown(dists, results, closed, found, command, time.perf_counter() - STARTED))
    for spec, where in found.items():
        print(f"stragglers: {dists[spec]}: " + "; ".join(f"{label} {crossover_text(*at)}" for label, at in
                                                       where.items()), flush=True)
    print(f"stragglers: wrote {', '.join(paths.values())}", flush=True)
    return 0


if __name__ == "__main__":
    study_output.run_tool("stragglers", main, __doc__)
