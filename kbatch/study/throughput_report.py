"""The hardware curve's report (`tools/throughput.py`): each batch size timed in real runs of one
config (`kbatch.study.throughput`), the fit T_update(B) = T0 + k * B**gamma, and with a sweep's
steps to target the wall time to target at each batch and the batch that minimises it; a CSV, a
markdown page and a figure."""

import csv
import os
import warnings

import numpy as np
from matplotlib.figure import Figure  # not pyplot: drawing a file leaves a notebook's plotting backend alone
from matplotlib.ticker import FuncFormatter

from kbatch.diagnostics import update_time
from kbatch.study import throughput
from kbatch.study.axes import batch_axis
from kbatch.training import validate

GAMMA_MEANING = "gamma 0 = a fixed cost per update (latency bound), 1 = time proportional to the batch (compute bound)"


def device_description():
    """The Keras backend and the devices it trains on, e.g. "jax on 1 x NVIDIA H200"."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        devices = jax.devices()
        if devices[0].platform != "cpu":
            return f"jax on {len(devices)} x {devices[0].device_kind}"
    else:
        import tensorflow as tf

        for kind in ("TPU", "GPU"):
            devices = tf.config.list_physical_devices(kind)
            if devices:
                name = tf.config.experimental.get_device_details(devices[0]).get("device_name", kind)
                return f"{backend} on {len(devices)} x {name}"
    return f"{backend} on the CPU ({os.cpu_count()} cores)"


def write_csv(path, timings, fit, wall, target_column):
    """A row per timed batch: the median and each repeat's seconds per update, examples/s, the
    fit there and, with a sweep, the steps and wall time to target."""
    repeats = len(next(iter(timings.values())))
    fields = [
        "batch",
        "seconds_per_update",
        "examples_per_second",
        "fit_seconds_per_update",
        *(f"repeat_{i}_seconds_per_update" for i in range(1, repeats + 1)),
    ]
    if wall is not None:
        fields += [target_column, "seconds_to_target"]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(fields)
        for batch, (median, *each) in _medians(timings):
            row = [
                batch,
                f"{median:.6g}",
                f"{batch / median:.6g}",
                f"{float(fit.seconds(batch)):.6g}",
                *(f"{s:.6g}" for s in each),
            ]
            if wall is not None:
                at = wall.get(batch, {})
                row += [_or_blank(at.get("steps")), _or_blank(at.get("seconds_to_target"), "{:.6g}")]
            writer.writerow(row)


def _medians(timings):
    """(batch, (median, *each repeat)) by batch."""
    return [(batch, (float(np.median(seconds)), *seconds)) for batch, seconds in sorted(timings.items())]


def _or_blank(value, form="{}"):
    return "" if value is None else form.format(value)


def markdown(timings, fit, rows, best, title, config, steps, repeats, target_column):
    """The timing table, the fit and what it means, and with a sweep the wall time to target."""
    lines = [
        f"# Time per update against the global batch: {title}",
        "",
        f"{steps} timed updates per repeat (steps_per_loop {min(config.steps_per_loop, steps)}), "
        f"median of {repeats}; strategy {config.strategy}, jit_compile {config.jit_compile}, "
        f"mixed_precision {config.mixed_precision}.",
        "",
        "| batch | ms per update (median) | examples/s | ms per update, each repeat | fit, ms |",
        "| ---: | ---: | ---: | --- | ---: |",
    ]
    for batch, (median, *each) in _medians(timings):
        lines.append(
            f"| {batch} | {1e3 * median:.3f} | {batch / median:,.0f} | "
            f"{', '.join(f'{1e3 * s:.3f}' for s in each)} | {1e3 * float(fit.seconds(batch)):.3f} |"
        )
    lines += [
        "",
        f"Fit T_update(B) = T0 + k B^gamma: **T0 = {1e3 * fit.t0:.3f} ms**, k = {1e3 * fit.k:.4g} ms, "
        f"**gamma = {fit.gamma:.2f}** (RMS relative error {fit.residual:.1%}); {GAMMA_MEANING}. "
        "T0 is the fixed cost of an update that a larger batch amortises.",
    ]
    if fit.gamma_at_search_edge:
        lines[-1] += " (gamma is at the edge of the range searched: the data want a value beyond it.)"
    if fit.t0 > 0 and fit.k > 0:
        even = (fit.t0 / fit.k) ** (1 / fit.gamma)
        lines[-1] += (
            f" The batch-dependent part equals T0 at B = {even:,.0f}: below it the fixed cost dominates "
            "and examples/s grows almost in proportion to the batch; above it examples/s goes as "
            "B^(1 - gamma)."
        )
    if rows is not None:
        lines += ["", *wall_table(rows, best, sorted(timings), target_column)]
    return "\n".join(lines) + "\n"


def wall_table(rows, best, timed, target_column):
    """The wall time to target at each batch of the sweep, and the batch that minimises it."""
    lines = [
        f"Wall time to target: the sweep's fewest `{target_column}` at each batch (its best "
        "learning rate) times the fitted time per update.",
        "",
        "| batch | steps to target | ms per update (fit) | wall time to target (s) |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        outside = "" if timed[0] <= row["batch"] <= timed[-1] else " (extrapolated)"
        wall = "not reached" if row["steps"] is None else f"{row['seconds_to_target']:,.2f}"
        lines.append(
            f"| {row['batch']} | {_or_blank(row['steps']) or '-'} | "
            f"{1e3 * row['seconds_per_update']:.3f}{outside} | {wall} |"
        )
    if best is None:
        lines += ["", "No batch of the sweep reached the target."]
    else:
        seconds = next(r["seconds_to_target"] for r in rows if r["batch"] == best)
        lines += ["", f"Fastest to target: **batch {best}**, {seconds:,.2f} s."]
    return lines


def plot(path, timings, fit, rows, best, title, target_column):
    """Time per update (log-log, with the fit), examples/s, and with a sweep wall time to target."""
    batches = sorted(timings)
    medians = np.array([np.median(timings[b]) for b in batches])
    grid = np.geomspace(batches[0], batches[-1], 200)
    figure = Figure(figsize=(5 * (2 if rows is None else 3), 4))
    axes = figure.subplots(1, 2 if rows is None else 3)
    per_update, rate = axes[0], axes[1]
    for batch in batches:
        per_update.plot(
            [batch] * len(timings[batch]),
            1e3 * np.array(timings[batch]),
            ".",
            color="0.6",
            label="each repeat" if batch == batches[0] else None,
        )
    per_update.plot(batches, 1e3 * medians, "o", color="C0", label="measured (median)")
    per_update.plot(
        grid,
        1e3 * fit.seconds(grid),
        "--",
        color="C1",
        label=f"T0 + k B^gamma: T0 {1e3 * fit.t0:.3g} ms, gamma {fit.gamma:.2f}",
    )
    per_update.set_ylabel("ms per update")
    per_update.set_title("time per update", fontsize=9)
    rate.plot(batches, np.array(batches) / medians, "o", color="C0", label="measured (median)")
    rate.plot(grid, fit.examples_per_second(grid), "--", color="C1", label="fit")
    rate.set_ylabel("examples / s")
    rate.set_title("throughput", fontsize=9)
    for ax in (per_update, rate):
        plain_log_y(ax)
        batch_axis(ax, batches, "global batch")
        ax.legend(fontsize=7)
    if rows is not None:
        wall_panel(axes[2], rows, best, target_column)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plain_log_y(ax):
    """A log y axis labelled 14, 20, 3000 rather than 1.4 x 10^1 (the ranges here are short)."""
    ax.set_yscale("log")
    for axis_format in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_format(FuncFormatter(lambda value, _: f"{value:g}"))


def wall_panel(ax, rows, best, target_column):
    """Wall time to target against batch, the fastest batch starred."""
    reached = [r for r in rows if r["seconds_to_target"] is not None]
    ax.plot([r["batch"] for r in reached], [r["seconds_to_target"] for r in reached], "o-", color="C2")
    if best is not None:
        ax.plot(
            [best],
            [next(r["seconds_to_target"] for r in reached if r["batch"] == best)],
            "*",
            color="C3",
            markersize=14,
            label=f"fastest: batch {best}",
        )
        ax.legend(fontsize=7)
    plain_log_y(ax)
    ax.set_ylabel("wall time to target (s)")
    ax.set_title(f"wall time to target: {target_column} x fitted T_update", fontsize=9)
    batch_axis(ax, [r["batch"] for r in rows], "global batch")


def report(config, batches, steps, repeats, paths, sweep_csv=None, target_column="steps_to_target"):
    """Time `steps` updates `repeats` times at each of `batches` (sorted), fit them,
    and write `paths` ({"csv", "markdown", "plot": path}); with `sweep_csv`, the wall time to target
    of its `target_column`. Every timing's config is checked before the first run. The fit."""
    steps_by_batch = None
    if sweep_csv is not None:
        steps_by_batch = throughput.read_steps(sweep_csv, target_column)
        if not steps_by_batch:
            raise ValueError(f"--sweep_csv={sweep_csv}: no finished run in it.")
    for batch in batches:
        validate(throughput.timing_config(config, batch, steps, repeats))
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    timings = {}
    for batch in batches:
        timings[batch] = throughput.time_updates(config, batch, steps, repeats)
        median = float(np.median(timings[batch]))
        print(f"throughput: batch {batch}: {1e3 * median:.3f} ms/update, {batch / median:,.0f} examples/s", flush=True)
    fit = update_time.fit_update_time(batches, [np.median(timings[b]) for b in batches])
    rows = None if steps_by_batch is None else throughput.wall_time_to_target(fit, steps_by_batch)
    best = None if rows is None else throughput.fastest(rows)
    title = f"{config.model} on {config.dataset}, Keras {device_description()}"
    write_csv(paths["csv"], timings, fit, None if rows is None else {r["batch"]: r for r in rows}, target_column)
    with open(paths["markdown"], "w") as file:
        file.write(markdown(timings, fit, rows, best, title, config, steps, repeats, target_column))
    plot(paths["plot"], timings, fit, rows, best, title, target_column)
    return fit
