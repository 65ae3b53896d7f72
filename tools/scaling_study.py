"""Scaling rules, warmup and the rescaled recipe across batch sizes: issue 3's experiment.

Trains the config's model (by default the MNIST-1D CNN on mnist1d/large) at `--multipliers` times
`--base_batch_size`, for each variant:

  a  no LR scaling, no warmup                 lr_scaling="none"
  b  linear scaling, no warmup                lr_scaling="linear"         (Goyal et al. 2017)
  c  linear scaling with warmup               + warmup W(B)               (Goyal et al. 2017)
  d  square-root scaling with warmup          lr_scaling="sqrt", W(B)     (Krizhevsky 2014)
  e  (c) and the rescaled recipe              + rescale_recipe: BN momentum**(B/B0), ...

W(B) is `kbatch.scaling.warmup_epochs(B, B0, --warmup_epochs, epochs_per_doubling=
--epochs_per_doubling, num_epochs=--num_epochs)`. (a)-(d) keep the config's BN momentum and
weight decay at every batch (`rescale_recipe=False`); (e) lets the trainer rescale them. Every
run has the same epoch budget and evaluates `--evals_per_epoch` times an epoch, so steps to
`--target_accuracy` are resolved to 1/evals_per_epoch of an epoch at every batch. The scaling
efficiency of a run is steps(B0) B0 / (steps(B) B), steps(B0) the variant's own 1x run. It is
also given for `--late_target_accuracy`, read from each run's evaluation history: the batch beyond
which more examples per step stop saving steps grows as the loss falls (McCandlish et al. 2018),
so a target late in training scales further than an early one.
At 1x the variants are one run when their warmups agree (k = 1: no rule moves anything); it is
trained once, with lr_scaling="none" and rescale_recipe=False, and shared.

With `--anneal_batch_size`, two more runs (Smith et al. 2018): a step decay of the LR by
`--anneal_factor` at `--anneal_boundaries`, and its twin that multiplies the batch instead
(`anneal_batch=True`, up to `--anneal_max_batch_size`), both with (e)'s recipe.

Each run lives in `--runs_dir/<its settings>`; a finished run (result.json there, same config) is
read, not trained again, so a stopped sweep continues where it stopped. Writes --csv (one row per
run, the numbers of its result.json, plus the efficiency), --markdown (the tables) and --plot
(steps to each target vs batch on log-log axes with ideal scaling; final accuracy vs batch), and
refuses to overwrite them unless --overwrite.

  nice -n 10 python tools/scaling_study.py --csv=docs/results/scaling.csv \
      --markdown=/tmp/scaling_table.md --plot=docs/results/scaling.png --anneal_batch_size=256
"""

import csv
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import study_output  # noqa: E402  (tools/ is the script's own folder, first on sys.path)

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "kbatch", "configs", "mnist1d_cnn.py")
VARIANTS = {  # name: (lr_scaling, warmup, rescale_recipe, label)
    "a": ("none", False, False, "(a) no LR scaling"),
    "b": ("linear", False, False, "(b) linear, no warmup"),
    "c": ("linear", True, False, "(c) linear + warmup"),
    "d": ("sqrt", True, False, "(d) sqrt + warmup"),
    "e": ("linear", True, True, "(e) linear + warmup + rescaled recipe"),
}
ANNEAL = ("step_decay", "anneal_batch")  # the Smith et al. pair's variant names

_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Base config; runs override the "
                                          "batch, learning-rate, warmup, decay and output fields.")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), f"Variants, from {', '.join(VARIANTS)}.")
_MULTIPLIERS = flags.DEFINE_list("multipliers", ["1", "4", "16", "64"], "Batch sizes as multiples "
                                 "of --base_batch_size; must include 1.")
_BASE_BATCH = flags.DEFINE_integer("base_batch_size", 64, "B0: the batch the recipe is given at.")
_BASE_LR = flags.DEFINE_float("base_learning_rate", 0.05, "The learning rate at --base_batch_size.")
_DATASET = flags.DEFINE_string("dataset", "mnist1d/large", "TFDS name of the data.")
_EPOCHS = flags.DEFINE_integer("num_epochs", 8, "Epochs per run (the same budget for every run).")
_WARMUP = flags.DEFINE_float("warmup_epochs", 0.0, "W0, the warmup at the base batch (variants c-e).")
_PER_DOUBLING = flags.DEFINE_float("epochs_per_doubling", 1.0, "Warmup epochs added per doubling "
                                   "of the batch (variants c-e), capped at num_epochs / 4.")
_EVALS = flags.DEFINE_integer("evals_per_epoch", 8, "Evaluations per epoch.")
_TARGET = flags.DEFINE_float("target_accuracy", 0.97, "Test accuracy whose first step is counted.")
_LATE_TARGET = flags.DEFINE_float("late_target_accuracy", 0.99, "A second, later target, read from "
                                  "the runs' evaluation histories (changing it retrains nothing).")
_ANNEAL_BATCH = flags.DEFINE_integer("anneal_batch_size", 0, "First batch of the annealing pair "
                                     "(0: no pair).")
_ANNEAL_BOUNDARIES = flags.DEFINE_list("anneal_boundaries", [], "Epochs where the LR is divided "
                                       "(or the batch multiplied); default num_epochs/2, 3/4.")
_ANNEAL_FACTOR = flags.DEFINE_float("anneal_factor", 4.0, "Division of the LR / growth of the batch.")
_ANNEAL_MAX = flags.DEFINE_integer("anneal_max_batch_size", None, "Largest batch of the annealing run.")
_STRATEGY = flags.DEFINE_string("strategy", "one_device", "config.strategy.")
_CSV = flags.DEFINE_string("csv", None, "Output CSV path.", required=True)
_MARKDOWN = flags.DEFINE_string("markdown", None, "Output markdown tables path.", required=True)
_PLOT = flags.DEFINE_string("plot", None, "Output PNG path.", required=True)
_RUNS_DIR = flags.DEFINE_string("runs_dir", "/tmp/scaling_study", "Run directories go under this.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing --csv/--markdown/--plot files.")

FIELDS = ("variant", "multiplier", "batch_size", "batch_sizes", "lr_scaling", "peak_learning_rate",
          "warmup_epochs", "rescale_recipe", "num_epochs", "steps", "final_eval_accuracy",
          "best_eval_accuracy", "target_accuracy", "steps_to_target", "epochs_to_target", "efficiency",
          "late_target_accuracy", "steps_to_late_target", "late_efficiency", "wall_seconds", "model_dir")


def _positive_ints(flag, values):
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) <= 0 or len(set(numbers)) != len(numbers):
        raise ValueError(f"--{flag}={','.join(values)}: give distinct positive integers.")
    return sorted(numbers)


def parse_settings(settings, outputs, overwrite):
    """Checked sweep settings (a dict of the flags' values); ValueError naming the bad flag."""
    s = dict(settings)
    if not s["variants"] or any(v not in VARIANTS for v in s["variants"]) or len(set(s["variants"])) != len(s["variants"]):
        raise ValueError(f"--variants={','.join(s['variants'])}: give distinct names from {', '.join(VARIANTS)}.")
    s["variants"] = sorted(s["variants"])
    s["multipliers"] = _positive_ints("multipliers", s["multipliers"])
    if s["multipliers"][0] != 1:
        raise ValueError(f"--multipliers={','.join(map(str, s['multipliers']))}: include 1, the base "
                         "batch the efficiency is measured against.")
    if s["base_batch_size"] <= 0 or not s["base_learning_rate"] > 0:
        raise ValueError(f"--base_batch_size={s['base_batch_size']} and --base_learning_rate="
                         f"{s['base_learning_rate']} must be positive.")
    if s["num_epochs"] <= 0 or not 0 <= s["warmup_epochs"] < s["num_epochs"] or s["epochs_per_doubling"] < 0:
        raise ValueError(f"--num_epochs={s['num_epochs']} must be positive, --warmup_epochs="
                         f"{s['warmup_epochs']} in [0, num_epochs) and --epochs_per_doubling >= 0.")
    if s["evals_per_epoch"] <= 0 or not 0 < s["target_accuracy"] <= 1:
        raise ValueError(f"--evals_per_epoch={s['evals_per_epoch']} must be positive and "
                         f"--target_accuracy={s['target_accuracy']} in (0, 1].")
    if not 0 < s["late_target_accuracy"] <= 1:
        raise ValueError(f"--late_target_accuracy={s['late_target_accuracy']}: give a number in (0, 1].")
    if s["anneal_batch_size"] < 0:
        raise ValueError(f"--anneal_batch_size={s['anneal_batch_size']}: give 0 (no pair) or a batch.")
    if s["anneal_batch_size"]:
        try:
            bounds = [float(b) for b in s["anneal_boundaries"]] or [s["num_epochs"] / 2, 3 * s["num_epochs"] / 4]
        except ValueError:
            bounds = []
        if not bounds or bounds != sorted(set(bounds)) or not 0 < bounds[0] <= bounds[-1] < s["num_epochs"]:
            raise ValueError(f"--anneal_boundaries={','.join(s['anneal_boundaries'])}: give increasing "
                             f"epochs in (0, {s['num_epochs']}).")
        s["anneal_boundaries"] = tuple(bounds)
        if not s["anneal_factor"] > 1:
            raise ValueError(f"--anneal_factor={s['anneal_factor']} must be > 1.")
        if s["anneal_max_batch_size"] is not None and s["anneal_max_batch_size"] < s["anneal_batch_size"]:
            raise ValueError(f"--anneal_max_batch_size={s['anneal_max_batch_size']} is below "
                             f"--anneal_batch_size={s['anneal_batch_size']}.")
    study_output.refuse_existing(outputs, overwrite)
    return s


def warmup_for(s, batch):
    from kbatch import scaling

    return scaling.warmup_epochs(batch, s["base_batch_size"], s["warmup_epochs"],
                                 epochs_per_doubling=s["epochs_per_doubling"], num_epochs=s["num_epochs"])


def _base(base, s, batch, name):
    config = base.copy_and_resolve_references()
    config.update(dataset=s["dataset"], batch_size=batch, base_batch_size=s["base_batch_size"],
                  base_learning_rate=s["base_learning_rate"], num_epochs=s["num_epochs"],
                  evals_per_epoch=s["evals_per_epoch"], target_accuracy=s["target_accuracy"],
                  strategy=s["strategy"], checkpoint_every=0, steps_per_loop=1000,
                  model_dir=os.path.join(s["runs_dir"], f"{name}-e{s['num_epochs']}-ev{s['evals_per_epoch']}"))
    return config


def sweep_config(base, s, variant, multiplier):
    """The config of one (variant, multiplier) point; the same config (and run) for every variant
    at 1x whose warmup agrees."""
    rule, warm, rescale = VARIANTS[variant][:3]
    batch = multiplier * s["base_batch_size"]
    warmup = warmup_for(s, batch) if warm else 0.0
    if multiplier == 1:  # k = 1: no rule and no rescaling changes anything
        rule, rescale = "none", False
    from kbatch import scaling

    lr = scaling.scale_learning_rate(s["base_learning_rate"], s["base_batch_size"], batch, rule)
    name = f"b{batch}-lr{lr:.6g}-w{warmup:.4g}" + ("-rescaled" if rescale else "")
    config = _base(base, s, batch, name)
    config.update(lr_scaling=rule, warmup_epochs=warmup, rescale_recipe=rescale)
    return config


def anneal_config(base, s, anneal):
    """The step-decay run (anneal=False) or its batch-annealing twin (Smith et al. 2018)."""
    batch = s["anneal_batch_size"]
    bounds = "_".join(f"{b:g}" for b in s["anneal_boundaries"])
    name = (f"{'anneal' if anneal else 'step'}-b{batch}-at{bounds}-f{s['anneal_factor']:g}"
            + (f"-max{s['anneal_max_batch_size']}" if anneal and s["anneal_max_batch_size"] else ""))
    config = _base(base, s, batch, name)
    config.update(lr_scaling="linear", warmup_epochs=warmup_for(s, batch), rescale_recipe=True, decay="step",
                  decay_boundaries=s["anneal_boundaries"], decay_factor=s["anneal_factor"], anneal_batch=anneal,
                  max_batch_size=s["anneal_max_batch_size"] if anneal else None)
    return config


def run_one(config):
    """Train config (or read its finished run: same config, result.json there); its result."""
    import keras

    from kbatch.training import run_dir, train

    finished = run_dir.finished_result(config)
    if finished is not None:
        return finished
    keras.backend.clear_session()
    return train(config, verbose=False)


def first_step_at(history, accuracy):
    """The first evaluated step whose test accuracy is at least `accuracy`; None if none is."""
    return next((e["step"] for e in history if e["eval_accuracy"] >= accuracy), None)


def make_row(variant, multiplier, config, result, late_target):
    from kbatch.training import lr_schedules, resolve

    return {
        "variant": variant, "multiplier": multiplier, "batch_size": config.batch_size,
        "batch_sizes": " ".join(map(str, result["batch_sizes"])), "lr_scaling": config.lr_scaling,
        "peak_learning_rate": lr_schedules.peak_learning_rate(resolve(config)), "warmup_epochs": config.warmup_epochs,
        "rescale_recipe": config.rescale_recipe, "num_epochs": config.num_epochs, "steps": result["steps"],
        "final_eval_accuracy": result["final_eval_accuracy"], "best_eval_accuracy": result["best_eval_accuracy"],
        "target_accuracy": result["target_accuracy"], "steps_to_target": result["steps_to_target"],
        "epochs_to_target": result["epochs_to_target"], "efficiency": None, "late_target_accuracy": late_target,
        "steps_to_late_target": first_step_at(result["history"], late_target), "late_efficiency": None,
        "wall_seconds": round(result["wall_seconds"], 1), "model_dir": config.model_dir,
    }


def add_efficiency(rows):
    """efficiency = steps(B0) B0 / (steps(B) B), steps to target, B0 the variant's 1x row; None
    where either did not reach the target. The same for the late target."""
    base = {r["variant"]: r for r in rows if r["multiplier"] == 1}
    for r in rows:
        b0 = base.get(r["variant"])
        for steps, efficiency in (("steps_to_target", "efficiency"), ("steps_to_late_target", "late_efficiency")):
            if b0 and b0[steps] and r[steps]:
                r[efficiency] = b0[steps] * b0["batch_size"] / (r[steps] * r["batch_size"])
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)


def _cell(value, fmt):
    return "-" if value is None else format(value, fmt)


def markdown_tables(rows, variants, multipliers, target, late_target):
    by_key = {(r["variant"], r["multiplier"]): r for r in rows}
    batches = [by_key[variants[0], m]["batch_size"] for m in multipliers]
    head = " | ".join(f"{m}x ({b})" for m, b in zip(multipliers, batches))
    lines = []
    for title, field, fmt in (("Final test accuracy (%)", "final_eval_accuracy", ".1f"),
                              (f"Steps to {100 * target:g}% test accuracy (- : not reached)", "steps_to_target", "d"),
                              ("Scaling efficiency steps(B0) B0 / (steps(B) B)", "efficiency", ".2f"),
                              (f"Steps to {100 * late_target:g}% test accuracy", "steps_to_late_target", "d"),
                              (f"Scaling efficiency at {100 * late_target:g}%", "late_efficiency", ".2f")):
        lines += [f"{title}:", "", f"| variant | {head} |", "|---|" + "---:|" * len(multipliers)]
        for v in variants:
            values = [by_key[v, m][field] for m in multipliers]
            if field == "final_eval_accuracy":
                values = [100 * x for x in values]
            lines.append(f"| {VARIANTS[v][3]} | " + " | ".join(_cell(x, fmt) for x in values) + " |")
        lines.append("")
    pair = [r for r in rows if r["variant"] in ANNEAL]
    if pair:
        lines += ["Batch annealing vs LR decay (Smith et al. 2018):", "",
                  "| run | batch per phase | peak LR | updates | final (%) | best (%) | steps to target |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in pair:
            lines.append(f"| {r['variant']} | {r['batch_sizes']} | {r['peak_learning_rate']:.4g} | {r['steps']} | "
                         f"{100 * r['final_eval_accuracy']:.1f} | {100 * r['best_eval_accuracy']:.1f} | "
                         f"{_cell(r['steps_to_target'], 'd')} |")
    return "\n".join(lines).rstrip() + "\n"


def plot(path, rows, variants, multipliers, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {(r["variant"], r["multiplier"]): r for r in rows}
    batches = [by_key[variants[0], m]["batch_size"] for m in multipliers]
    fig, (early, late, right) = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, field, accuracy in ((early, "steps_to_target", rows[0]["target_accuracy"]),
                                (late, "steps_to_late_target", rows[0]["late_target_accuracy"])):
        base = by_key[variants[0], 1][field]
        if base:
            ax.plot(batches, [base * batches[0] / b for b in batches], "k--", lw=1, label="ideal: steps(B0) B0 / B")
        for i, v in enumerate(variants):
            points = [(b, by_key[v, m][field]) for m, b in zip(multipliers, batches)]
            points = [(b, steps) for b, steps in points if steps]
            ax.plot([b for b, _ in points], [steps for _, steps in points], "o-", color=f"C{i}", label=VARIANTS[v][3])
        ax.set_yscale("log")
        ax.set_ylabel(f"steps to {100 * accuracy:g}% test accuracy (missing: not reached)")
    for i, v in enumerate(variants):
        right.plot(batches, [100 * by_key[v, m]["final_eval_accuracy"] for m in multipliers], "o-",
                   color=f"C{i}", label=VARIANTS[v][3])
    right.set_ylabel("final test accuracy (%)")
    for ax in (early, late, right):
        study_output.batch_size_axis(ax, batches, "global batch size")
    early.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    outputs = {"csv": _CSV.value, "markdown": _MARKDOWN.value, "plot": _PLOT.value}
    names = ("variants", "multipliers", "base_batch_size", "base_learning_rate", "dataset", "num_epochs",
             "warmup_epochs", "epochs_per_doubling", "evals_per_epoch", "target_accuracy", "late_target_accuracy",
             "anneal_batch_size",
             "anneal_boundaries", "anneal_factor", "anneal_max_batch_size", "strategy", "runs_dir")
    base = _CONFIG.value
    try:
        s = parse_settings({n: flags.FLAGS[n].value for n in names}, outputs, _OVERWRITE.value)
        from kbatch import data
        from kbatch.training import run_dir, validate

        info = data.describe(s["dataset"], base.get("data_dir"))
        jobs = [(v, m, sweep_config(base, s, v, m)) for v in s["variants"] for m in s["multipliers"]]
        if s["anneal_batch_size"]:
            jobs += [(name, None, anneal_config(base, s, name == "anneal_batch")) for name in ANNEAL]
        for _, _, config in jobs:  # every run's config, and its folder, checked before any run
            validate(config)
            run_dir.check(config.model_dir, config)
            if config.batch_size > info.num_train_examples:
                raise ValueError(f"batch {config.batch_size} is larger than the {info.num_train_examples} "
                                 f"training examples of --dataset={s['dataset']}.")
    except ValueError as error:
        print(f"scaling_study: {error}", file=sys.stderr)
        return 2
    import warnings

    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    rows, started, done = [], time.time(), {}
    for index, (variant, multiplier, config) in enumerate(jobs, 1):
        shared = config.model_dir in done
        result = done[config.model_dir] if shared else run_one(config)
        done[config.model_dir] = result
        rows.append(make_row(variant, multiplier, config, result, s["late_target_accuracy"]))
        r = rows[-1]
        print(f"[{index}/{len(jobs)}] {variant} batch={r['batch_sizes']} lr={r['peak_learning_rate']:.4g} "
              f"warmup={r['warmup_epochs']:.3g}: final {r['final_eval_accuracy']:.4f}, "
              f"{r['steps_to_target'] or '-'} steps to target of {r['steps']}, {r['wall_seconds']:.0f} s"
              f"{' (shared run)' if shared else ''}; {(time.time() - started) / 60:.1f} min so far", flush=True)
    sweep = add_efficiency([r for r in rows if r["variant"] in VARIANTS])
    write_csv(outputs["csv"], rows)
    with open(outputs["markdown"], "w") as f:
        f.write(markdown_tables(rows, s["variants"], s["multipliers"], s["target_accuracy"],
                                s["late_target_accuracy"]))
    title = (f"{base.model} on {s['dataset']}, {s['num_epochs']} epochs, LR {s['base_learning_rate']:g} at "
             f"batch {s['base_batch_size']}, warmup W0={s['warmup_epochs']:g} + {s['epochs_per_doubling']:g}"
             f"/doubling (<= E/4), {s['evals_per_epoch']} evals/epoch")
    plot(outputs["plot"], sweep, s["variants"], s["multipliers"], title)
    print(f"scaling_study: wrote {outputs['csv']}, {outputs['markdown']}, {outputs['plot']}", flush=True)
    return 0


if __name__ == "__main__":
    from kbatch.training import stops

    app.run(stops.reporting("scaling_study", main))
