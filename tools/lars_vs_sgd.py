"""LARS vs SGD with momentum across global batch sizes, on the default MNIST-1D config.

Each `--runs` entry `optimizer:batch:base_lr[:warmup_epochs]` is one `kbatch.training.train` run
of `kbatch/configs/mnist1d_cnn.py` (the MNIST-1D CNN with BN, linear warmup then cosine decay,
weight decay 5e-4) with that optimizer ("momentum" or "lars"), global batch and learning rate at
the config's base batch 128, moved to the run's batch by the linear rule (Goyal et al. 2017 for
SGD; You et al. 2017 scale LARS's rate with the batch too). Warmup defaults to the config's
1 epoch.

BN momentum is set per run to bn_momentum**(batch / 128) (Busbridge et al. 2023, "How to Scale
Your EMA"): the moving statistics keep the same memory in examples, so at batch 8192 (7 updates an
epoch) they can follow the weights. It is set here explicitly, with `rescale_recipe = False` so
that a trainer that rescales the recipe itself does not do it a second time.

One row per run is appended to `--csv`, its numbers those of the run's `result.json`; runs
already in the CSV are skipped, so a stopped sweep started again resumes. `--plot` draws the best
and the final eval accuracy against batch size, a line per optimizer and base learning rate.

  nice -n 10 python tools/lars_vs_sgd.py --csv=docs/results/lars.csv \
      --runs=momentum:4096:0.05,lars:4096:0.2 --plot=docs/results/lars.png
"""

import csv
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

import study_output  # noqa: E402  (tools/ is the script's own folder, first on sys.path)

RUNS = flags.DEFINE_list("runs", [], "optimizer:batch:base_learning_rate[:warmup_epochs] entries; "
                         "optimizer is momentum or lars, the learning rate is at batch 128.")
CSV = flags.DEFINE_string("csv", None, "One row per run is appended here (required: no tool writes into the "
                          "repository unless told to).", required=True)
PLOT = flags.DEFINE_string("plot", None, "Draw accuracy vs batch size from --csv into this PNG.")
MODEL_ROOT = flags.DEFINE_string("model_root", "/tmp/lars_vs_sgd", "Run directories go under this.")
DATASET = flags.DEFINE_string("dataset", "mnist1d/large", "config.dataset.")
EPOCHS = flags.DEFINE_integer("num_epochs", 8, "Epochs per run.")
TRUST = flags.DEFINE_float("trust_coefficient", 0.001, "LARS's trust coefficient.")
STRATEGY = flags.DEFINE_string("strategy", "one_device", "config.strategy.")

OPTIMIZERS = {"momentum": "SGD momentum", "lars": "LARS"}
KEY = ("dataset", "optimizer", "batch_size", "base_learning_rate", "warmup_epochs", "num_epochs")
FIELDS = (*KEY, "peak_learning_rate", "bn_momentum", "trust_coefficient", "steps",
          "final_eval_accuracy", "best_eval_accuracy", "wall_seconds", "model_dir")


def parse(entry):
    """(optimizer, batch, base_lr, warmup_epochs) of one --runs entry; UsageError if malformed."""
    parts = entry.split(":")
    usage = (f"--runs entry {entry!r}: want optimizer:batch:base_lr[:warmup_epochs], optimizer one "
             f"of {', '.join(OPTIMIZERS)}, batch a positive integer, base_lr > 0, "
             f"0 <= warmup_epochs < --num_epochs")
    if len(parts) not in (3, 4) or parts[0] not in OPTIMIZERS:
        raise app.UsageError(usage + ".")
    try:
        batch, base_lr = int(parts[1]), float(parts[2])
        warmup = float(parts[3]) if len(parts) == 4 else 1.0
    except ValueError:
        raise app.UsageError(usage + ".") from None
    if batch <= 0 or not base_lr > 0 or not 0 <= warmup < EPOCHS.value:
        raise app.UsageError(usage + f" (got batch {batch}, base_lr {base_lr}, warmup {warmup}).")
    return parts[0], batch, base_lr, warmup


def row_key(row):
    return (row["dataset"], row["optimizer"], int(row["batch_size"]), float(row["base_learning_rate"]),
            float(row["warmup_epochs"]), int(row["num_epochs"]))


def read_rows(path):
    """The CSV's rows ([] if it does not exist); UsageError if it is not this tool's CSV."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise app.UsageError(f"--csv={path} exists with columns {reader.fieldnames}, not this "
                                 f"tool's {list(FIELDS)}: choose another file.")
        return list(reader)


def make_config(optimizer, batch, base_lr, warmup):
    from kbatch import scaling
    from kbatch.configs import mnist1d_cnn

    config = mnist1d_cnn.get_config()
    config.update(dataset=DATASET.value, optimizer=optimizer, batch_size=batch, base_learning_rate=base_lr,
                  warmup_epochs=warmup, num_epochs=EPOCHS.value, strategy=STRATEGY.value, target_accuracy=None,
                  model_dir=os.path.join(MODEL_ROOT.value, DATASET.value.replace("/", "_"),
                                         f"{optimizer}-b{batch}-lr{base_lr:g}-w{warmup:g}-e{EPOCHS.value}"))
    # BN's moving averages keep their memory in examples (Busbridge et al. 2023); set here, so
    # the trainer must not rescale it again.
    config.bn_momentum = scaling.rescale_momentum(config.bn_momentum, config.base_batch_size, batch)
    config.rescale_recipe = False
    if optimizer == "lars":
        config.trust_coefficient = TRUST.value
    return config


def run_one(config):
    """Train one config; the CSV row, its numbers read back from the run's result.json."""
    import keras

    from kbatch.training import lr_schedules, resolve, train

    keras.backend.clear_session()
    train(config, verbose=False)
    with open(os.path.join(config.model_dir, "result.json")) as f:
        result = json.load(f)
    return {
        "dataset": config.dataset, "optimizer": config.optimizer, "batch_size": config.batch_size,
        "base_learning_rate": config.base_learning_rate, "warmup_epochs": config.warmup_epochs,
        "num_epochs": config.num_epochs, "peak_learning_rate": lr_schedules.peak_learning_rate(resolve(config)),
        "bn_momentum": config.bn_momentum,
        "trust_coefficient": config.trust_coefficient if config.optimizer == "lars" else "",
        "steps": result["steps"], "final_eval_accuracy": result["final_eval_accuracy"],
        "best_eval_accuracy": result["best_eval_accuracy"], "wall_seconds": result["wall_seconds"],
        "model_dir": config.model_dir,
    }


def plot(rows, png_path):
    """Best and final eval accuracy vs batch size: a line per optimizer and base learning rate
    (the best warmup of each batch), coloured by optimizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    markers = "os^vDP"
    all_batches = sorted({int(r["batch_size"]) for r in rows})
    for ax, metric in zip(axes, ("best_eval_accuracy", "final_eval_accuracy")):
        for color, (optimizer, label) in zip(("C0", "C1"), OPTIMIZERS.items()):
            rates = sorted({float(r["base_learning_rate"]) for r in rows if r["optimizer"] == optimizer}, reverse=True)
            for marker, rate in zip(markers, rates):
                top = {}  # batch -> highest `metric` over the warmups tried
                for r in rows:
                    if r["optimizer"] == optimizer and float(r["base_learning_rate"]) == rate:
                        b = int(r["batch_size"])
                        top[b] = max(top.get(b, 0.0), float(r[metric]))
                batches = sorted(top)
                ax.plot(batches, [top[b] for b in batches], marker=marker, color=color,
                        alpha=1.0 if len(batches) > 1 else 0.6, label=f"{label}, lr {rate:g} at batch 128")
        study_output.batch_size_axis(ax, all_batches, "global batch size")
        ax.set_title(metric.replace("_", " "), fontsize=9)
    epochs = sorted({str(r["num_epochs"]) for r in rows})
    datasets = sorted({r["dataset"] for r in rows})
    axes[0].set_ylabel(f"eval accuracy, {'/'.join(epochs)} epochs")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7)
    fig.suptitle(f"{', '.join(datasets)}: MNIST-1D CNN, LARS vs SGD momentum, warmup, rates moved "
                 "by the linear rule", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(png_path, dpi=110)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if EPOCHS.value <= 0:
        raise app.UsageError(f"--num_epochs must be a positive integer, got {EPOCHS.value}.")
    if not RUNS.value and not PLOT.value:
        raise app.UsageError("Give --runs to train, --plot to draw, or both.")
    entries = [parse(entry) for entry in RUNS.value]  # every entry checked before any run
    if len(set(entries)) != len(entries):
        raise app.UsageError(f"--runs has the same run twice: {RUNS.value}.")
    rows = read_rows(CSV.value)
    finished = {row_key(r) for r in rows}
    for i, entry in enumerate(entries, 1):
        name = f"[{i}/{len(entries)}] {entry[0]} batch {entry[1]} base_lr {entry[2]:g} warmup {entry[3]:g}"
        if (DATASET.value, *entry, EPOCHS.value) in finished:
            print(f"{name}: already in {CSV.value}, skipped", flush=True)
            continue
        config = make_config(*entry)
        print(f"{name}: training ({config.model_dir})", flush=True)
        row = run_one(config)
        new = not os.path.exists(CSV.value)
        with open(CSV.value, "a", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        rows.append({k: str(v) for k, v in row.items()})
        print(f"{name}: final {row['final_eval_accuracy']:.4f}, best {row['best_eval_accuracy']:.4f}, "
              f"{row['steps']} steps, {row['wall_seconds']:.0f} s", flush=True)
    if PLOT.value:
        if not rows:
            raise app.UsageError(f"--plot: no runs in --csv={CSV.value} to draw.")
        plot(rows, PLOT.value)
        print(f"plot: {PLOT.value}", flush=True)


if __name__ == "__main__":
    from kbatch.training import stops

    app.run(stops.reporting("lars_vs_sgd", main))
