"""The critical batch two ways (McCandlish et al. 2018): fitted from a scaling study's
steps-to-target curve, S(B) = S_min + E_min / B, B_crit = E_min / S_min; and predicted by the
gradient noise scale B_simple measured in a run (`--config.noise_scale_every`), read where that
run reached the same target. Writes a markdown table and a plot.

  python tools/critical_batch.py --scaling_csv=docs/results/scaling.csv --noise_run=/tmp/noise_default \
      --markdown=/tmp/critical_batch.md --plot=/tmp/critical_batch.png

The fit uses, at each batch size, the fewest steps any of `--variants` took (the best recipe
there, as McCandlish et al. tune the LR per batch); batch sizes where none reached a target are
left out of that target's fit.
"""

import csv
import json
import os

from absl import app, flags

from study_output import batch_size_axis, log_over_epochs, refuse_existing  # tools/ is the script's own folder, first on sys.path

SCALING_CSV = flags.DEFINE_string("scaling_csv", "docs/results/scaling.csv", "tools/scaling_study.py's CSV.")
VARIANTS = flags.DEFINE_list("variants", ["a", "b", "c", "d", "e"], "Variants of the study to take the best of.")
NOISE_RUN = flags.DEFINE_string("noise_run", None, "model_dir of a run trained with noise_scale_every > 0.")
MARKDOWN = flags.DEFINE_string("markdown", None, "The table (markdown) to write.")
PLOT = flags.DEFINE_string("plot", None, "The plot (PNG) to write.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --markdown and --plot if they exist.")
TARGETS = {"target_accuracy": "steps_to_target", "late_target_accuracy": "steps_to_late_target"}


def best_steps(rows, variants):
    """{target accuracy: {batch: fewest steps to it among `variants`}}."""
    curves = {}
    for row in rows:
        if row["variant"] not in variants:
            continue
        for target_field, steps_field in TARGETS.items():
            if row[steps_field]:
                curve = curves.setdefault(float(row[target_field]), {})
                batch = int(row["batch_size"])
                curve[batch] = min(curve.get(batch, float("inf")), int(row[steps_field]))
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


def table(fits, noise, run_batch):
    lines = ["| target | steps at each batch (best recipe) | S_min | E_min | B_crit fitted | "
             f"B_simple where the noise run (batch {run_batch}) reached it | B_simple / B_crit |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for target, (curve, fit) in sorted(fits.items()):
        steps = ", ".join(f"{b}: {s}" for b, s in sorted(curve.items()))
        at = noise.get(target)
        measured = f"{at[1]:,.0f} (epoch {at[0]:.2f})" if at else "not reached"
        ratio = f"{at[1] / fit.b_crit:.2f}" if at else "-"
        lines.append(f"| {target:.0%} | {steps} | {fit.s_min:,.0f} | {fit.e_min:,.0f} | **{fit.b_crit:,.0f}** | "
                     f"{measured} | {ratio} |")
    return "\n".join(lines) + "\n"


def plot(fits, result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    batches = sorted({b for curve, _ in fits.values() for b in curve})
    for target, (curve, fit) in sorted(fits.items()):
        line, = left.plot(list(curve), list(curve.values()), "o", label=f"to {target:.0%}")
        grid = np.geomspace(min(batches) / 2, max(batches) * 4, 100)
        left.plot(grid, fit.s_min + fit.e_min / grid, "--", color=line.get_color(),
                  label=f"S_min + E_min/B, B_crit {fit.b_crit:,.0f}")
        right.axhline(fit.b_crit, ls="--", color=line.get_color(), label=f"B_crit fitted, {target:.0%}")
    batch_size_axis(left, batches, "global batch")
    left.set_yscale("log")
    left.set_ylabel("updates to the target")
    left.legend(fontsize=8)
    points = result["noise_scale"]
    epochs = [p["step"] * p["global_batch_size"] / (result["examples_seen"] / result["epochs"]) for p in points]
    right.plot(epochs, [p["b_simple"] for p in points], color="black", label="B_simple (noise run)")
    log_over_epochs(right, "batch size")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv):
    del argv
    from kbatch.diagnostics import fit_critical_batch

    try:
        refuse_existing({"markdown": MARKDOWN.value, "plot": PLOT.value}, OVERWRITE.value)
        if not NOISE_RUN.value or not os.path.exists(os.path.join(NOISE_RUN.value, "result.json")):
            raise ValueError(f"--noise_run={NOISE_RUN.value}: must be the model_dir of a finished run (its "
                             "result.json), trained with --config.noise_scale_every > 0.")
    except ValueError as error:
        raise app.UsageError(str(error))
    with open(SCALING_CSV.value) as file:
        curves = best_steps(list(csv.DictReader(file)), VARIANTS.value)
    with open(os.path.join(NOISE_RUN.value, "result.json")) as file:
        result = json.load(file)
    fits = {t: (c, fit_critical_batch(list(c), list(c.values()))) for t, c in curves.items() if len(c) >= 2}
    noise = {t: b_simple_at(result, t) for t in fits}
    text = table(fits, noise, result["global_batch_size"])
    with open(MARKDOWN.value, "w") as file:
        file.write(text)
    plot(fits, result, PLOT.value)
    print(text, end="")


if __name__ == "__main__":
    app.run(main)
