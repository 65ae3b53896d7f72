"""The critical batch two ways (McCandlish et al. 2018), for `tools/critical_batch.py`: fitted from
a sweep's steps-to-target curve, S(B) = S_min + E_min / B, B_crit = E_min / S_min (at each batch
the fewest steps any kept row took: the best recipe there); and predicted by the gradient noise
scale B_simple measured in a run, read where that run reached the same target. A markdown table
and a figure."""

import csv
import json
import os

import numpy as np
from matplotlib.figure import Figure  # not pyplot: drawing a file leaves a notebook's plotting backend alone

from kbatch.diagnostics import fit_critical_batch
from kbatch.study.axes import batch_axis, log_over_epochs

STEPS_PREFIX = "steps_to_"
PERFECT_SCALING_FACTOR = 10  # a fitted B_crit beyond this many times the largest batch is not measured: S_min is noise


def same_cell(cell, value):
    """A CSV cell equals a --where value: as text, or as numbers (`1` is `1.0`)."""
    try:
        return cell == value or float(cell) == float(value)
    except ValueError:
        return False


def kept_rows(rows, where):
    """The rows matching every `FIELD=VALUE` of `where`; a ValueError naming a malformed one or a
    field the CSV does not have."""
    for condition in where:
        field, sep, value = condition.partition("=")
        if not sep or not field:
            raise ValueError(f"--where={condition}: write FIELD=VALUE, e.g. optimizer=lars.")
        if rows and field not in rows[0]:
            raise ValueError(f"--where={condition}: the CSV has no column {field!r} (it has {', '.join(rows[0])}).")
        rows = [row for row in rows if same_cell(row[field], value)]
    return rows


def best_steps(rows):
    """{target accuracy: {batch: fewest steps to it in `rows`}}, a target per steps_to_<T> column;
    a ValueError naming a cell that is not a number."""
    curves = {}
    for row in rows:
        for column, steps in row.items():
            if column.startswith(STEPS_PREFIX) and steps:
                curve = curves.setdefault(_number(column[len(STEPS_PREFIX) :], "column name", column), {})
                batch = int(_number(row["batch_size"], "batch_size", row["batch_size"]))
                curve[batch] = min(curve.get(batch, float("inf")), int(_number(steps, column, steps)))
    return curves


def _number(text, what, shown):
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"--sweep_csv: {what} {shown!r} is not a number.") from None


def check_columns(path, columns):
    """A ValueError unless the CSV's header has `batch_size` and a steps_to_<T> column: a sweep's
    report CSV, not another file."""
    if "batch_size" not in columns or not any(c.startswith(STEPS_PREFIX) for c in columns if c):
        raise ValueError(
            f"--sweep_csv={path}: not a sweep's report CSV (it needs a batch_size column and "
            f"{STEPS_PREFIX}<T> columns, as tools/sweep.py's report.csv has)."
        )


def read_curves(path, where):
    """best_steps of the CSV at `path`, rows kept by `where`; a ValueError when there is no file or
    no target reached at two batch sizes (nothing to fit)."""
    if not path:
        raise ValueError("--sweep_csv is required: a sweep's report CSV (tools/sweep.py's report.csv).")
    if not os.path.isfile(path):
        raise ValueError(f"--sweep_csv={path}: no such file (a sweep's report CSV).")
    with open(path, newline="") as file:
        try:
            reader = csv.DictReader(file)
            check_columns(path, reader.fieldnames or [])
            rows = list(reader)
        except (csv.Error, UnicodeDecodeError) as error:
            raise ValueError(f"--sweep_csv={path}: not a CSV file ({error}).") from None
    if any(None in row for row in rows):
        raise ValueError(f"--sweep_csv={path}: a row has more cells than the header: not a sweep's report CSV.")
    rows = kept_rows(rows, where)
    curves = best_steps(rows)
    if not any(len(curve) >= 2 for curve in curves.values()):
        raise ValueError(
            f"--sweep_csv={path}: no target reached at two batch sizes or more in the "
            f"{len(rows)} rows kept, so there is no curve to fit."
        )
    return curves


def b_simple_at(result, target):
    """(epoch, B_simple) at the first evaluation of the noise run at or past `target`, or None."""
    reached = [e for e in result["history"] if e["eval_accuracy"] >= target]
    points = result["noise_scale"]
    if not reached or not points:
        return None
    step = reached[0]["step"]
    nearest = min(points, key=lambda p: abs(p["step"] - step))
    return reached[0]["epoch"], nearest["b_simple"]


def perfect_scaling(curve, fit):
    """Whether the steps fell as 1 / B over the whole measured range: a fitted B_crit (infinite, or
    beyond PERFECT_SCALING_FACTOR times the largest batch) that the data do not measure."""
    return not fit.b_crit <= PERFECT_SCALING_FACTOR * max(curve)


def table(fits, noise, run_batch):
    """The markdown table: each target's steps, fit and B_crit beside the noise run's B_simple."""
    lines = [
        "| target | steps at each batch (best recipe) | S_min | E_min | B_crit fitted | "
        f"B_simple where the noise run (batch {run_batch}) reached it | B_simple / B_crit |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for target, (curve, fit) in sorted(fits.items()):
        steps = ", ".join(f"{b}: {s}" for b, s in sorted(curve.items()))
        at = noise.get(target)
        measured = f"{at[1]:,.0f} (epoch {at[0]:.2f})" if at else "not reached"
        if perfect_scaling(curve, fit):
            s_min, b_crit, ratio = (
                "~0",
                f"perfect scaling over the measured range: B_crit above the largest batch ({max(curve)})",
                "-",
            )
        else:
            s_min, b_crit = f"{fit.s_min:,.0f}", f"**{fit.b_crit:,.0f}**"
            ratio = f"{at[1] / fit.b_crit:.2f}" if at else "-"
        lines.append(f"| {100 * target:g}% | {steps} | {s_min} | {fit.e_min:,.0f} | {b_crit} | {measured} | {ratio} |")
    return "\n".join(lines) + "\n"


def plot(fits, result, path):
    """Steps to each target against the batch with the fitted curve; B_simple over the noise run."""
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2)
    batches = sorted({b for curve, _ in fits.values() for b in curve})
    for target, (curve, fit) in sorted(fits.items()):
        (line,) = left.plot(list(curve), list(curve.values()), "o", label=f"to {100 * target:g}%")
        grid = np.geomspace(min(batches) / 2, max(batches) * 4, 100)
        if perfect_scaling(curve, fit):
            left.plot(
                grid,
                fit.s_min + fit.e_min / grid,
                "--",
                color=line.get_color(),
                label=f"perfect scaling, B_crit above {max(curve)}",
            )
            continue
        left.plot(
            grid,
            fit.s_min + fit.e_min / grid,
            "--",
            color=line.get_color(),
            label=f"S_min + E_min/B, B_crit {fit.b_crit:,.0f}",
        )
        right.axhline(fit.b_crit, ls="--", color=line.get_color(), label=f"B_crit fitted, {100 * target:g}%")
    batch_axis(left, batches, "global batch")
    left.set_yscale("log")
    left.set_ylabel("updates to the target")
    left.legend(fontsize=8)
    points = result["noise_scale"]
    epochs = [p["step"] * p["global_batch_size"] / (result["examples_seen"] / result["epochs"]) for p in points]
    right.plot(epochs, [p["b_simple"] for p in points], color="black", label="B_simple (noise run)")
    log_over_epochs(right, "batch size")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def report(sweep_csv, where, noise_run, markdown_path, plot_path):
    """Fit the curves of `sweep_csv` (rows kept by `where`, FIELD=VALUE strings), read B_simple in
    the finished run `noise_run`, write the table to `markdown_path` and the figure to `plot_path`;
    the table. A ValueError names a bad input before anything is written."""
    if not noise_run or not os.path.exists(os.path.join(noise_run, "result.json")):
        raise ValueError(
            f"--noise_run={noise_run}: must be the model_dir of a finished run (its "
            "result.json), trained with --config.noise_scale_every > 0."
        )
    curves = read_curves(sweep_csv, where)
    with open(os.path.join(noise_run, "result.json")) as file:
        result = json.load(file)
    fits = {t: (c, fit_critical_batch(list(c), list(c.values()))) for t, c in curves.items() if len(c) >= 2}
    noise = {t: b_simple_at(result, t) for t in fits}
    text = table(fits, noise, result["global_batch_size"])
    with open(markdown_path, "w") as file:
        file.write(text)
    plot(fits, result, plot_path)
    return text
