"""The batch's controllers compared (docs/schedules.md's table): for each finished run of a sweep, the
updates, examples and wall time to each target accuracy, the time both as measured on the machine
that ran it (training only: each evaluation interval's examples over its examples/s) and as
predicted on an accelerator-shaped time per update, T(B) = T0 + k B^gamma (`update_time`), summed
over the updates at each batch.

  python -m kbatch.study.controllers SWEEP_DIR --output=PREFIX [--targets=0.95,0.97] [--curve=T0,k,gamma]
      [--metric=accuracy|loss]

writes PREFIX.csv and PREFIX.png (test accuracy against updates, examples and predicted seconds, one
line per controller) and prints the table in markdown (for the result page, PREFIX.md). With
`--metric=loss` the targets are eval losses, each reached at the first evaluation at or below it (a
language model's monitor: docs/results/batch_controllers_lm.md), and the table and plot show the eval
loss, the final accuracy beside it.
"""

import argparse
import csv

from matplotlib.figure import Figure

from kbatch.diagnostics import update_time
from kbatch.study import sweep as sweep_lib

ACCELERATOR = (0.005, 2e-5, 0.7)  # tools/sweeps/batch_controllers.py's curve
COLUMNS = (("updates", "step"), ("examples", "examples"), ("cpu_s", "measured"), ("accel_s", "predicted"))
METRICS = ("accuracy", "loss")  # accuracy: reached at or above a target; loss: at or below it


def label(config):
    """The controller a run's config names, e.g. `goodput (given curve)`, `fixed 1024`, `fixed 64, step at
    1.5/2.25` (a step decay at one batch)."""
    if config.get("lr_gain") == "adascale":
        return f"AdaScale {config['batch_size']}"
    schedule = config.get("batch_schedule", "fixed")
    if schedule == "goodput":
        return "goodput (given curve)" if config.get("update_time_model") else "goodput (timed here)"
    if schedule != "fixed":
        return schedule
    if config.get("anneal_batch"):
        return "annealing"
    if config.get("decay") == "step":  # a planned controller's twin: its step decay at one batch
        return f"fixed {config['batch_size']}, step at " + "/".join(f"{b:g}" for b in config["decay_boundaries"])
    return f"fixed {config['batch_size']}"


def trajectory(history, curve):
    """Per evaluation: step, examples, accuracy, loss (None where not recorded), batch, and the
    training seconds so far, measured and on `curve` (an `UpdateTimeFit`)."""
    points, step, examples, measured, predicted = [], 0, 0, 0.0, 0.0
    for entry in history:
        batch = entry["global_batch_size"]
        measured += (entry["examples"] - examples) / entry["examples_per_second"]
        predicted += (entry["step"] - step) * float(curve.seconds(batch))
        step, examples = entry["step"], entry["examples"]
        points.append(
            {
                "step": step,
                "examples": examples,
                "accuracy": entry["eval_accuracy"],
                "loss": entry.get("eval_loss"),
                "batch": batch,
                "measured": measured,
                "predicted": predicted,
            }
        )
    return points


def row(name, points, targets, metric="accuracy"):
    """The table's row of one run: its final accuracy (and loss, for `metric="loss"`) and batches,
    and per target the first evaluation reaching it (blank where none did): an accuracy at or above
    it, or with `metric="loss"` an eval loss at or below it (columns `updates_to_loss_2`, ...)."""
    batches = list(dict.fromkeys(p["batch"] for p in points))
    out = {"controller": name}
    if metric == "loss":
        out["final_loss"] = points[-1]["loss"]
    out.update(
        {
            "final_accuracy": points[-1]["accuracy"],
            "updates": points[-1]["step"],
            "batches": " -> ".join(map(str, batches)),
        }
    )
    for target in targets:
        if metric == "loss":
            reached = next((p for p in points if p["loss"] is not None and p["loss"] <= target), None)
            suffix = f"loss_{target:g}"
        else:
            reached = next((p for p in points if p["accuracy"] >= target), None)
            suffix = f"{target:g}"
        for field, key in COLUMNS:
            out[f"{field}_to_{suffix}"] = reached[key] if reached else None
    return out


def runs(sweep_dir, curve):
    """{controller: trajectory} of every finished point of the sweep in `sweep_dir`, in its order."""
    sweep = sweep_lib.Sweep.open(sweep_dir)
    found = {}
    for point in sweep.points:
        state, record = sweep.state(point)
        if state == "finished":
            found[label(point.config)] = trajectory(record["history"], curve)
    return found


def markdown(table):
    """The rows as a markdown table: floats to 3 significant digits, blanks as `-`."""

    def cell(value):
        if value is None:
            return "-"
        return f"{value:.3g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)

    lines = [list(table[0]), ["---"] * len(table[0]), *[[cell(v) for v in r.values()] for r in table]]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)


def draw(found, path, curve, metric="accuracy"):
    """Accuracy (or, with `metric="loss"`, eval loss) against updates, examples and predicted
    accelerator seconds, one line per controller. Accuracies are drawn from 0.8 to 1; losses from just
    below the lowest to half the spread of the final losses above the highest final one (the early
    losses, far above, are cut)."""
    figure = Figure(figsize=(15, 4.8), layout="constrained")
    axes = figure.subplots(1, 3, sharey=True)
    for name, points in found.items():
        for axis, key in zip(axes, ("step", "examples", "predicted")):
            axis.plot([p[key] for p in points], [p[metric] for p in points], marker=".", label=name)
    titles = ("updates", "examples", f"seconds on T(B) = {curve.t0:g} + {curve.k:g} B^{curve.gamma:g}")
    for axis, title in zip(axes, titles):
        axis.set_xscale("log")
        axis.set_xlabel(title)
        axis.set_ylim(*_value_range(found, metric))
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy" if metric == "accuracy" else "eval loss")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=5)
    figure.savefig(path, dpi=110)


def _value_range(found, metric):
    if metric == "accuracy":
        return 0.8, 1.0
    finals = [points[-1]["loss"] for points in found.values()]
    low = min(p["loss"] for points in found.values() for p in points)
    spread = max(max(finals) - low, 0.1)
    return low - 0.1 * spread, max(finals) + 0.5 * spread


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--output", required=True, help="prefix of the .csv and .png written")
    parser.add_argument("--metric", default="accuracy", choices=METRICS, help="what the targets are")
    parser.add_argument(
        "--targets", default=None, help="comma-separated test accuracies (default 0.95,0.97) or, --metric=loss, losses"
    )
    parser.add_argument("--curve", default=",".join(map(str, ACCELERATOR)), help="T0,k,gamma of T(B) in seconds")
    args = parser.parse_args(argv)
    if args.targets is None and args.metric == "loss":
        parser.error("--metric=loss needs --targets, the eval losses to reach (e.g. 2.2,2.0).")
    targets = [float(t) for t in (args.targets or "0.95,0.97").split(",")]
    curve = update_time.UpdateTimeFit(*(float(v) for v in args.curve.split(",")), residual=0.0)
    found = runs(args.sweep_dir, curve)
    if not found:
        raise SystemExit(f"controllers: no finished run in {args.sweep_dir}.")
    table = [row(name, points, targets, args.metric) for name, points in found.items()]
    with open(args.output + ".csv", "w", newline="") as file:
        writer = csv.DictWriter(file, list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    draw(found, args.output + ".png", curve, args.metric)
    print(markdown(table), end="")
    print(f"controllers: wrote {args.output}.csv and {args.output}.png", flush=True)


if __name__ == "__main__":
    main()
