"""Sharpness and the generalization gap against the batch size (`tools/sharpness_report.py`), from
finished runs trained with `sharpness_every`: per run the final sharpness lambda_max, lr x
lambda_max at its peak beside heavy-ball SGD's stability bound 2 + 2m (Cohen et al. 2021), and
train minus test accuracy (the train accuracy measured here, on the whole training split in
inference mode, from the run's `model.keras`). A markdown table and a figure."""

import json
import os

import keras
import numpy as np
from matplotlib.figure import Figure  # not pyplot: drawing a file leaves a notebook's plotting backend alone

from kbatch.data import numpy_source
from kbatch.study.axes import batch_axis, log_over_epochs
from kbatch.training.config import recipe, schema


def train_accuracy(model_dir, dataset):
    """The saved model's accuracy on the whole training split, in inference mode."""
    x, y = numpy_source.training_split(dataset)
    model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
    logits = model.predict(x, batch_size=2048, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def schedule_peak(config):
    """The peak of the run's learning-rate schedule (its base rate moved to its batch by
    `lr_scaling`: `kbatch.training.config.recipe.RunRecipe.peak_learning_rate`), not the largest rate seen at
    an evaluation, which misses a peak between evaluations."""
    return recipe.RunRecipe.from_settings(schema.resolve(config)).peak_learning_rate()


def summarize(model_dir):
    """One row of the table for the run in `model_dir`."""
    with open(os.path.join(model_dir, "config.json")) as file:
        config = json.load(file)
    with open(os.path.join(model_dir, "result.json")) as file:
        result = json.load(file)
    points = result["sharpness"]
    if not points:
        raise ValueError(f"--runs: {model_dir} has no sharpness points: train it with --config.sharpness_every.")
    finite = [p for p in points if p["sharpness"] == p["sharpness"]]
    peak = max(finite, key=lambda p: p["lr_times_sharpness"]) if finite else None
    test = result["final_eval_accuracy"]
    train = train_accuracy(model_dir, config["dataset"])
    return {
        "run": os.path.basename(os.path.normpath(model_dir)),
        "batch": config["batch_size"],
        "lr_scaling": config["lr_scaling"],
        "warmup_epochs": config["warmup_epochs"],
        "peak_lr": schedule_peak(config),
        "test": test,
        "train": train,
        "final_sharpness": finite[-1]["sharpness"] if finite else float("nan"),
        "peak_lr_sharpness": peak["lr_times_sharpness"] if peak else float("nan"),
        "peak_step": peak["step"] if peak else None,
        "bound": points[-1]["stability_bound"],
        "points": points,
        "steps_per_epoch": result["steps"] / result["epochs"],
    }


def table(rows):
    """The markdown table: a row per run."""
    lines = [
        "| run | batch | LR rule, warmup | peak LR | test (%) | train (%) | gap (points) | final lambda_max | "
        "peak lr x lambda_max (epoch) | bound |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        epoch = f" ({r['peak_step'] / r['steps_per_epoch']:.1f})" if r["peak_step"] is not None else ""
        bound = "-" if r["bound"] is None else f"{r['bound']:.2f}"
        lines.append(
            f"| {r['run']} | {r['batch']} | {r['lr_scaling']}, {r['warmup_epochs']:g} | {r['peak_lr']:.3g} | "
            f"{100 * r['test']:.2f} | {100 * r['train']:.2f} | {100 * (r['train'] - r['test']):+.2f} | "
            f"{r['final_sharpness']:.3g} | {r['peak_lr_sharpness']:.3g}{epoch} | {bound} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows, path):
    """The final lambda_max against the batch, a line per LR rule; lr x lambda_max over each run."""
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2)
    groups = {}
    for r in rows:
        warm = r["warmup_epochs"] > 0 or r["lr_scaling"] == "none"
        groups.setdefault(r["lr_scaling"] + ("" if warm else ", no warmup"), []).append(r)
    base = min(rows, key=lambda r: r["batch"])  # the base batch: the same run under every rule
    for name, group in sorted(groups.items()):
        group = sorted({id(r): r for r in [base, *group]}.values(), key=lambda r: r["batch"])
        left.plot([r["batch"] for r in group], [r["final_sharpness"] for r in group], "o-", label=f"{name} rule")
    batch_axis(left, sorted({r["batch"] for r in rows}), "global batch")
    left.set_yscale("log")
    left.set_ylabel("final lambda_max")
    left.legend(fontsize=8)
    for r in rows:
        epochs = [p["step"] / r["steps_per_epoch"] for p in r["points"]]
        right.plot(epochs, [p["lr_times_sharpness"] for p in r["points"]], label=r["run"])
    bounds = {r["bound"] for r in rows if r["bound"] is not None}
    for bound in bounds:
        right.axhline(bound, ls="--", color="gray", label=f"bound 2 + 2m = {bound:.2f}")
    log_over_epochs(right, "lr x lambda_max")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def report(runs, markdown_path, plot_path):
    """Summarize the finished runs (model_dirs) `runs`, write the table to `markdown_path` and the
    figure to `plot_path`; the table. A ValueError names a run that is not finished."""
    missing = [d for d in runs or [] if not os.path.exists(os.path.join(d, "result.json"))]
    if not runs or missing:
        raise ValueError(f"--runs: must name finished runs (a model_dir with result.json); not: {missing or None}")
    rows = [summarize(d) for d in runs]
    text = table(rows)
    with open(markdown_path, "w") as file:
        file.write(text)
    plot(rows, plot_path)
    return text
