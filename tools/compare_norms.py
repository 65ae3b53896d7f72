"""Normalization layers across per-replica batch sizes: the analogue of Wu & He 2018, Table 2.

Trains the same model (the config's, by default the MNIST-1D CNN) once per (norm, batch size)
with `kbatch.training.train`, the same number of epochs for every run and the learning rate moved
from the config's base batch by its `lr_scaling` rule (linear by default, Goyal et al. 2017).
One replica, so the batch size is the per-replica batch the norm's statistics see. Writes

  --csv       one row per run (accuracy, steps, learning rate, wall time, run directory), with
              the learned importance weights of switchable normalization (Luo et al. 2018),
              averaged over the model's SwitchableNormalization layers, for norm=switchable;
  --markdown  a table of final test accuracy (norm x batch size) and one of the importance weights;
  --plot      final test accuracy vs batch size, one line per norm.

Each run lives in `--runs_dir/<norm>-b<batch>`; a finished run of the same config there is read,
not trained again, so a stopped sweep continues where it stopped (a folder holding a run of other
settings is refused before any run). The output files are never
overwritten unless --overwrite is given.

  nice -n 10 python tools/compare_norms.py --csv=docs/results/norms.csv \
      --markdown=/tmp/norms_table.md --plot=docs/results/norms.png
"""

import csv
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import study_output  # noqa: E402  (tools/ is the script's own folder, first on sys.path)
from kbatch.layers import registry  # noqa: E402
from kbatch.layers.switchable_norm import MODES  # noqa: E402  (its modes, in its order)

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "kbatch", "configs", "mnist1d_cnn.py")
NORMS = registry.NAMES

_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Base config; every run overrides "
                                          "norm, batch_size, dataset, num_epochs, warmup_epochs.")
_NORMS = flags.DEFINE_list("norms", ["batch", "group", "layer", "instance", "switchable", "none"],
                           f"Norms to compare, from {', '.join(NORMS)}.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["2", "4", "8", "16", "32", "128", "512"],
                             "Per-replica (= global, one replica) batch sizes.")
_DATASET = flags.DEFINE_string("dataset", "mnist1d/original", "TFDS name of the data.")
_EPOCHS = flags.DEFINE_integer("num_epochs", 10, "Epochs per run (the same budget for every run).")
_WARMUP = flags.DEFINE_float("warmup_epochs", 1.0, "Linear warmup epochs (< num_epochs).")
_VIRTUAL = flags.DEFINE_integer("virtual_batch_size", None, "Ghost batch size, for norm=ghost_batch.")
_CSV = flags.DEFINE_string("csv", None, "Output CSV path.", required=True)
_MARKDOWN = flags.DEFINE_string("markdown", None, "Output markdown table path.", required=True)
_PLOT = flags.DEFINE_string("plot", None, "Output PNG path.", required=True)
_RUNS_DIR = flags.DEFINE_string("runs_dir", "/tmp/compare_norms", "Run directories go under this.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing --csv/--markdown/--plot files.")

FIELDS = ("norm", "batch_size", "peak_learning_rate", "num_epochs", "steps", "final_eval_accuracy",
          "best_eval_accuracy", "wall_seconds",
          *(f"{stat}_{mode}" for stat in ("mean", "variance") for mode in MODES), "model_dir")


def parse_settings(norms, batch_sizes, num_epochs, warmup_epochs, virtual_batch_size, outputs, overwrite):
    """Checked sweep settings: (norms, sorted batch sizes). ValueError naming the bad flag."""
    if not norms:
        raise ValueError("--norms is empty: give at least one norm.")
    unknown = [n for n in norms if n not in NORMS]
    if unknown or len(set(norms)) != len(norms):
        raise ValueError(f"--norms={','.join(norms)}: give distinct names from {', '.join(NORMS)}.")
    if "ghost_batch" in norms and (virtual_batch_size is None or virtual_batch_size <= 0):
        raise ValueError("--norms has ghost_batch: give --virtual_batch_size, a positive integer.")
    try:
        batches = sorted({int(b) for b in batch_sizes})
    except ValueError:
        batches = []
    if not batches or batches[0] <= 0:
        raise ValueError(f"--batch_sizes={','.join(batch_sizes)}: give positive integers.")
    if num_epochs <= 0 or not 0 <= warmup_epochs < num_epochs:
        raise ValueError(f"--num_epochs={num_epochs} must be positive and --warmup_epochs="
                         f"{warmup_epochs} in [0, num_epochs).")
    study_output.refuse_existing(outputs, overwrite)
    return list(norms), batches


def run_config(base, norm, batch, dataset, num_epochs, warmup_epochs, virtual_batch_size, runs_dir, train_examples):
    config = base.copy_and_resolve_references()
    steps_per_epoch = -(-train_examples // batch)  # an epoch: all examples, the last batch runs past
    # rescale_recipe=False: BN momentum 0.9 at every batch, as docs/results/norms.md was measured.
    config.update(norm=norm, batch_size=batch, dataset=dataset, num_epochs=num_epochs,
                  warmup_epochs=warmup_epochs, target_accuracy=None, checkpoint_every=0,
                  rescale_recipe=False, steps_per_loop=steps_per_epoch, model_dir=os.path.join(runs_dir, f"{norm}-b{batch}"))
    if norm == "ghost_batch":
        config.virtual_batch_size = virtual_batch_size
    return config


def switchable_importance(model):
    """Mean over the model's SwitchableNormalization layers of their importance weights:
    {"mean_batch": ..., "variance_instance": ...}; {} when the model has none."""
    from kbatch.layers import SwitchableNormalization

    found = [layer.importance() for layer in model.layers if isinstance(layer, SwitchableNormalization)]
    if not found:
        return {}
    return {f"{stat}_{mode}": sum(w[stat][mode] for w in found) / len(found)
            for stat in ("mean", "variance") for mode in found[0][stat]}


def run_one(config):
    """Train (or read the finished run in config.model_dir) and return its CSV row."""
    import keras

    from kbatch.training import lr_schedules, resolve, run_dir, train

    result = run_dir.finished_result(config)
    if result is None:
        keras.backend.clear_session()
        result = train(config, verbose=False)
    row = {
        "norm": config.norm, "batch_size": config.batch_size,
        "peak_learning_rate": lr_schedules.peak_learning_rate(resolve(config)), "num_epochs": config.num_epochs,
        "steps": result["steps"], "final_eval_accuracy": result["final_eval_accuracy"],
        "best_eval_accuracy": result["best_eval_accuracy"], "wall_seconds": round(result["wall_seconds"], 1),
        "model_dir": config.model_dir,
    }
    if config.norm == "switchable":
        model = keras.models.load_model(os.path.join(config.model_dir, "model.keras"))
        row.update(switchable_importance(model))
    return row


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def markdown_tables(rows, norms, batches):
    """Final test accuracy (%) per norm and batch; then switchable's importance weights per batch."""
    by_key = {(r["norm"], r["batch_size"]): r for r in rows}
    lines = ["| norm | " + " | ".join(f"B={b}" for b in batches) + " |",
             "|---|" + "---:|" * len(batches)]
    for norm in norms:
        cells = [f"{100 * by_key[norm, b]['final_eval_accuracy']:.1f}" for b in batches]
        lines.append(f"| {norm} | " + " | ".join(cells) + " |")
    if "switchable" in norms:
        lines += ["", "Switchable normalization: learned importance weights (softmax), mean over its layers.", "",
                  "| batch | " + " | ".join(f"{s} {m}" for s in ("mean", "var") for m in MODES) + " |",
                  "|---:|" + "---:|" * 2 * len(MODES)]
        for b in batches:
            r = by_key["switchable", b]
            lines.append(f"| {b} | " + " | ".join(
                f"{r[f'{s}_{m}']:.3f}" if r.get(f"{s}_{m}", "") != "" else "-"
                for s in ("mean", "variance") for m in MODES) + " |")
    return "\n".join(lines) + "\n"


def plot(path, rows, norms, batches, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {(r["norm"], r["batch_size"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(6, 4))
    for norm in norms:
        ax.plot(batches, [100 * by_key[norm, b]["final_eval_accuracy"] for b in batches], "o-", label=norm)
    study_output.batch_size_axis(ax, batches, "per-replica batch size (1 replica, LR by the linear rule)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # TFDS's per-dataset INFO lines would bury the progress
    outputs = {"csv": _CSV.value, "markdown": _MARKDOWN.value, "plot": _PLOT.value}
    try:
        norms, batches = parse_settings(_NORMS.value, _BATCHES.value, _EPOCHS.value, _WARMUP.value,
                                        _VIRTUAL.value, outputs, _OVERWRITE.value)
        from kbatch import data

        info = data.describe(_DATASET.value, _CONFIG.value.get("data_dir"))
        if batches[-1] > info.num_train_examples:
            raise ValueError(f"--batch_sizes: {batches[-1]} is larger than the {info.num_train_examples} "
                             f"training examples of --dataset={_DATASET.value}.")
        from kbatch.training import run_dir

        jobs = [(n, b, run_config(_CONFIG.value, n, b, _DATASET.value, _EPOCHS.value, _WARMUP.value,
                                  _VIRTUAL.value, _RUNS_DIR.value, info.num_train_examples))
                for n in norms for b in batches]
        for _, _, config in jobs:  # a run folder holding another config is refused before any run
            run_dir.check(config.model_dir, config)
    except ValueError as error:
        print(f"compare_norms: {error}", file=sys.stderr)
        return 2
    import warnings

    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    rows, started = [], time.time()
    for index, (norm, batch, config) in enumerate(jobs, 1):
        row = run_one(config)
        rows.append(row)
        elapsed = time.time() - started
        print(f"[{index}/{len(jobs)}] norm={norm} batch={batch} lr={row['peak_learning_rate']:.3g}: "
              f"final accuracy {row['final_eval_accuracy']:.4f} (best {row['best_eval_accuracy']:.4f}), "
              f"{row['steps']} steps, {row['wall_seconds']:.0f} s; {elapsed / 60:.1f} min so far", flush=True)
    write_csv(outputs["csv"], rows)
    with open(outputs["markdown"], "w") as f:
        f.write(markdown_tables(rows, norms, batches))
    title = (f"{_CONFIG.value.model} on {_DATASET.value}, {_EPOCHS.value} epochs, "
             f"LR {_CONFIG.value.base_learning_rate} at batch {_CONFIG.value.base_batch_size}, "
             f"{_CONFIG.value.lr_scaling} rule")
    plot(outputs["plot"], rows, norms, batches, title)
    print(f"compare_norms: wrote {outputs['csv']}, {outputs['markdown']}, {outputs['plot']}", flush=True)
    return 0


if __name__ == "__main__":
    from kbatch.training import stops

    app.run(stops.reporting("compare_norms", main))
