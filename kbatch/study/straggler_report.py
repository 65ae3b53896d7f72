"""The stragglers study's report (`tools/stragglers.py`): each step-time distribution simulated
(`kbatch.study.stragglers`) at each number of workers N in every mode (plain synchronous, with b
backup workers after Chen et al. 2016, synchronous on the N + b machines, asynchronous), each
simulated time per update beside its closed form, the N from which a mode overtakes plain sync,
and the CSV, markdown and figure that show it. NumPy and matplotlib only (no Keras or TensorFlow):
`kbatch_cli.import_light("kbatch.study.straggler_report")`."""

import csv
import dataclasses
import math
import os
import time

from kbatch.study import step_times, stragglers
from kbatch.study.axes import batch_axis

SUFFIXES = {"csv": ".csv", "markdown": ".md", "plot": ".png"}


@dataclasses.dataclass(frozen=True)
class Setting:
    """What every simulated point shares: the backup settings ("4", "N/16"), each worker's batch, a
    normal worker's mean step (seconds), the updates simulated and the seed."""

    backups: tuple
    batch_per_worker: int = 32
    mean_step: float = 0.1
    updates: int = 4000
    seed: int = 0

    def modes(self):
        """The modes simulated at each N, in the report's order."""
        return ["sync", *(m for b in self.backups for m in (f"backups b={b}", f"sync on N+b, b={b}")), "async"]


KINDS = {"constant": 0, "exponential": 0, "lognormal": 1, "pareto": 1, "slowdowns": 2, "slow_machine": 1}


def parse_distribution(spec, mean):
    """The `StepTime` of one --distributions entry with mean step `mean`; ValueError if malformed."""
    kind, *values = spec.strip().split(":")
    usage = (
        f"--distributions: {spec!r}: want constant, exponential, lognormal:SIGMA, pareto:ALPHA, "
        "slowdowns:P:K or slow_machine:S"
    )
    if kind not in KINDS or len(values) != KINDS[kind]:
        raise ValueError(usage + ".")
    try:
        values = [float(v) for v in values]
    except ValueError:
        raise ValueError(usage + " (numbers).") from None
    if kind == "lognormal" and not values[0] > 0:
        raise ValueError(f"--distributions: {spec!r}: want SIGMA > 0.")
    try:
        return {
            "constant": lambda: step_times.Constant(mean),
            "exponential": lambda: step_times.Exponential(mean),
            "lognormal": lambda: step_times.LogNormal(mean, values[0]),
            "pareto": lambda: step_times.Pareto(mean, values[0]),
            "slowdowns": lambda: step_times.Slowdowns(mean, *values),
            "slow_machine": lambda: step_times.OneSlowMachine(step_times.Constant(mean), values[0]),
        }[kind]()
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


def check(setting, specs, workers):
    """ValueError naming the first bad flag: the distributions (`specs`), `workers` (strings), and
    the setting's mean step, backups, batch and updates."""
    if not specs:
        raise ValueError("--distributions: give at least one.")
    if not setting.mean_step > 0 or not math.isfinite(setting.mean_step):
        raise ValueError(f"--mean_step={setting.mean_step}: want a positive number of seconds.")
    for spec in specs:
        parse_distribution(spec, setting.mean_step)
    parse_workers(workers)
    for spec in setting.backups:
        try:
            stragglers.backups_for(spec, 2)
        except ValueError:
            raise ValueError(
                f"--backups={','.join(setting.backups)}: {spec!r} is not a count >= 0 or N/K (K a positive integer)."
            ) from None
    if len(set(setting.backups)) != len(setting.backups):
        raise ValueError(f"--backups={','.join(setting.backups)}: a backup setting given twice.")
    for name, value, least in (("batch_per_worker", setting.batch_per_worker, 1), ("updates", setting.updates, 2)):
        if value < least:
            raise ValueError(f"--{name}={value}: want an integer >= {least}.")


def output_paths(prefix, overwrite):
    """{"csv", "markdown", "plot": PREFIX.csv, .md, .png}; ValueError if the folder is missing or one
    exists and `overwrite` is False."""
    if not prefix:
        raise ValueError("--output_prefix is required.")
    if not os.path.isdir(os.path.dirname(prefix) or "."):
        raise ValueError(f"--output_prefix={prefix}: no folder {os.path.dirname(prefix)}.")
    paths = {kind: prefix + suffix for kind, suffix in SUFFIXES.items()}
    for path in paths.values():
        if os.path.exists(path) and not overwrite:
            raise ValueError(f"--output_prefix={prefix}: {path} exists: refusing to overwrite it (pass --overwrite).")
    return paths


def simulate_all(setting, dists, workers):
    """{distribution name: {N: {mode: Throughput}}}, printing a line per distribution."""
    results = {}
    for spec, dist in dists.items():
        started = time.perf_counter()
        results[spec] = {
            n: stragglers.simulate(
                dist, n, setting.batch_per_worker, setting.updates, setting.seed, backups=setting.backups
            )
            for n in workers
        }
        print(
            f"stragglers: {dist}: simulated N = {workers[0]}..{workers[-1]} in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    return results


def closed_forms(dists, results):
    """{(spec, N, mode): the closed-form seconds per update}."""
    return {
        (spec, n, mode): stragglers.closed_form_seconds(dists[spec], result)
        for spec, by_n in results.items()
        for n, by_mode in by_n.items()
        for mode, result in by_mode.items()
    }


def crossovers(setting, by_n, closed, spec):
    """{label: (simulated N or None, closed-form N or None)} for each mode against plain sync: async,
    each backups setting at the same N, and each backups setting against sync on the same N + b machines."""
    workers = sorted(by_n)

    def closed_eps(n, mode):
        result = by_n[n][mode]
        return result.examples_per_update / closed[(spec, n, mode)]

    def both(mode, baseline):
        simulated = [stragglers.significantly_above(by_n[n][mode], by_n[n][baseline]) for n in workers]
        exact = [closed_eps(n, mode) > closed_eps(n, baseline) * (1 + 1e-9) for n in workers]
        return stragglers.overtakes(workers, simulated), stragglers.overtakes(workers, exact)

    found = {"async vs sync": both("async", "sync")}
    for b in setting.backups:
        found[f"backups b={b} vs sync"] = both(f"backups b={b}", "sync")
        found[f"backups b={b} vs sync on N+b"] = both(f"backups b={b}", f"sync on N+b, b={b}")
    return found


def _n(value):
    return "never" if value is None else f"N = {value}"


def crossover_text(simulated, exact):
    text = "never in the range" if simulated is None else f"from N = {simulated}"
    return text + ("" if simulated == exact else f" (closed form: {_n(exact)})")


def write_csv(path, setting, dists, results, closed):
    fields = [
        "distribution",
        "workers",
        "mode",
        "backups",
        "machines",
        "batch_per_worker",
        "seconds_per_update",
        "seconds_per_update_se",
        "closed_form_seconds_per_update",
        "updates_per_second",
        "examples_per_second",
        "efficiency",
        "mean_staleness",
        "staleness_p99",
        "updates_simulated",
    ]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(fields)
        for spec, by_n in results.items():
            for n, by_mode in by_n.items():
                for mode in setting.modes():
                    r = by_mode[mode]
                    writer.writerow(
                        [
                            str(dists[spec]),
                            n,
                            mode,
                            r.backups,
                            r.machines,
                            r.batch_per_worker,
                            f"{r.seconds_per_update:.6g}",
                            f"{r.standard_error:.3g}",
                            f"{closed[(spec, n, mode)]:.6g}",
                            f"{r.updates_per_second:.6g}",
                            f"{r.examples_per_second:.6g}",
                            f"{stragglers.efficiency(dists[spec], r):.4f}",
                            f"{r.staleness:.2f}",
                            f"{r.staleness_p99:.0f}",
                            r.updates,
                        ]
                    )


ASSUMPTIONS = (
    "What the simulation assumes: no communication cost (an update is applied the instant its last "
    "gradient counted arrives); step times independent across workers and steps (a straggler is slow "
    "for one step, except the one slow machine, slow at every step); with backups, the late steps "
    "are cut off at each update and all N + b workers start the next step together, so a slow draw "
    "never carries over (which is why backups can beat the no-waiting rate: the slow steps are "
    "thrown away); asynchronous gradients all counted as useful, however stale. It measures "
    "examples/s only, not what staleness or a smaller effective batch does to the updates needed."
)


def recovered(setting, dist, by_n, n, b):
    """The share of the examples/s that plain sync at N = n loses against n normal workers that never
    wait (n x batch / a normal worker's mean step) which backups b win back (None when sync loses nothing)."""
    sync, ideal = by_n[n]["sync"].examples_per_second, n * setting.batch_per_worker / dist.mean
    if ideal - sync <= 1e-9 * ideal:
        return None
    return (by_n[n][f"backups b={b}"].examples_per_second - sync) / (ideal - sync)


def summary(setting, dists, results, found):
    """A row per distribution: sync's efficiency at the largest N, the crossovers, what backups recover there."""
    top = max(next(iter(results.values())))
    header = ["distribution", f"sync efficiency at N = {top}", "async overtakes sync"]
    for b in setting.backups:
        header += [
            f"b={b} overtakes sync",
            f"b={b} overtakes sync on N+b",
            f"b={b} at N = {top}: efficiency, loss recovered",
        ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for spec, by_n in results.items():
        dist, where = dists[spec], found[spec]
        row = [
            str(dist),
            f"{stragglers.efficiency(dist, by_n[top]['sync']):.2f}",
            crossover_text(*where["async vs sync"]),
        ]
        for b in setting.backups:
            share = recovered(setting, dist, by_n, top, b)
            row += [
                crossover_text(*where[f"backups b={b} vs sync"]),
                crossover_text(*where[f"backups b={b} vs sync on N+b"]),
                f"{stragglers.efficiency(dist, by_n[top][f'backups b={b}']):.2f}, "
                + ("-" if share is None else f"{share:.0%}"),
            ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown(setting, dists, results, closed, found, command, seconds):
    workers = sorted(next(iter(results.values())))
    lines = [
        "# Stragglers: synchronous, backup-worker and asynchronous data parallelism, simulated",
        "",
        f"`{command}` ({seconds:.0f} s).",
        "",
        f"Each point: {setting.updates:,} simulated updates (asynchronous: at least as many, and at least "
        f"{stragglers.ASYNC_MIN_STEPS} steps of every worker after a burn-in of {stragglers.ASYNC_BURN_IN}); seed "
        f"{setting.seed}; each worker's batch {setting.batch_per_worker}, a normal worker's mean step "
        f"{setting.mean_step:g} s. Backups: {', '.join(setting.backups)} (N/K: b = ceil(N / K)); *sync on N+b* is "
        "plain synchronous training on as many machines as the backup run launched (equal machines).",
        "",
        "Efficiency: examples/s over what the machines used would give if none ever waited (machines x batch / "
        "mean step). *Overtakes from N*: ahead by more than 2 standard errors at that N and every larger one "
        "(the closed form's N in parentheses where it differs). Loss recovered: the share of the examples/s "
        "plain sync loses against N normal workers that never wait (N x batch / a normal worker's mean step) "
        "which the backups win back at the same N.",
        "",
        ASSUMPTIONS,
        "",
        *summary(setting, dists, results, found),
        "",
        "In the tables a cell is examples/s (efficiency). Asynchronous staleness: the mean number of updates "
        "other workers applied while an applied gradient was computed (N - 1 whatever the distribution), and "
        "its 99th percentile.",
        "",
    ]
    for spec, by_n in results.items():
        lines += _distribution_table(
            setting, dists[spec], by_n, workers, {k[1:]: v for k, v in closed.items() if k[0] == spec}
        )
    return "\n".join(lines)


def _distribution_table(setting, dist, by_n, workers, closed):
    """The markdown section of one step-time distribution: examples/s (efficiency) of each mode at
    each N, the asynchronous staleness, and the simulation's largest deviation from `closed`
    ({(n, mode): seconds per update})."""
    lines = [
        f"## {dist}",
        "",
        "| N | " + " | ".join(setting.modes()) + " | async staleness: mean, p99 |",
        "| ---: | " + " | ".join("---:" for _ in setting.modes()) + " | ---: |",
    ]
    for n in workers:
        cells = [
            f"{by_n[n][m].examples_per_second:,.0f} ({stragglers.efficiency(dist, by_n[n][m]):.2f})"
            for m in setting.modes()
        ]
        stale = by_n[n]["async"]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {stale.staleness:.1f}, {stale.staleness_p99:.0f} |")
    deviations = []
    for m in setting.modes():
        z = [
            (by_n[n][m].seconds_per_update - closed[(n, m)]) / by_n[n][m].standard_error
            for n in workers
            if by_n[n][m].standard_error > 1e-9 * by_n[n][m].seconds_per_update
        ]  # not deterministic
        rel = max(abs(by_n[n][m].seconds_per_update / closed[(n, m)] - 1) for n in workers)
        deviations.append(f"{m} {rel:.2%}" + (f" (|z| <= {max(map(abs, z)):.1f})" if z else ""))
    return lines + [
        "",
        "Simulated seconds per update against the closed form, the largest deviation over N (and in "
        f"standard errors where the time varies): {'; '.join(deviations)}.",
        "",
    ]


def plot(path, setting, dists, results):
    """Examples/s against N, log-log: a line per mode, a panel per distribution, the no-waiting line dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    count = len(results)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 4.2 * rows), squeeze=False)
    shown = [m for m in setting.modes() if not m.startswith("sync on")]
    for ax, (spec, by_n) in zip(axes.ravel(), results.items()):
        workers = sorted(by_n)
        ideal = [n * setting.batch_per_worker / dists[spec].mean for n in workers]
        ax.plot(workers, ideal, ":", color="0.5", label="no waiting (N b_w / mean step)")
        for i, mode in enumerate(shown):
            ax.plot(
                workers, [by_n[n][mode].examples_per_second for n in workers], "o-", ms=3, color=f"C{i}", label=mode
            )
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(top=2 * max(ideal))
        batch_axis(ax, workers, "workers N")
        ax.set_ylabel("examples / s")
        ax.set_title(str(dists[spec]), fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[count:]:
        ax.set_visible(False)
    figure.suptitle(
        f"examples/s against workers: batch {setting.batch_per_worker} per worker, mean step "
        f"{setting.mean_step:g} s, {setting.updates:,} updates simulated per point",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(setting, specs, workers, paths, command, started):
    """Simulate every distribution of `specs` at each N of `workers` (strings, as the flags give
    them), write `paths` (`output_paths`) and print each distribution's crossovers; `started`, the
    `time.perf_counter()` the command started at, dates the markdown's running time."""
    dists = {spec: parse_distribution(spec, setting.mean_step) for spec in specs}
    results = simulate_all(setting, dists, parse_workers(workers))
    closed = closed_forms(dists, results)
    found = {spec: crossovers(setting, results[spec], closed, spec) for spec in dists}
    write_csv(paths["csv"], setting, dists, results, closed)
    plot(paths["plot"], setting, dists, results)
    with open(paths["markdown"], "w") as file:
        file.write(markdown(setting, dists, results, closed, found, command, time.perf_counter() - started))
    for spec, where in found.items():
        print(
            f"stragglers: {dists[spec]}: " + "; ".join(f"{label} {crossover_text(*at)}" for label, at in where.items()),
            flush=True,
        )
    print(f"stragglers: wrote {', '.join(paths.values())}", flush=True)
