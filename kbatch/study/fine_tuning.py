"""Pretrain at a large batch, fine-tune at a small one: the MNIST-1D CNN pretrained on
`mnist1d/large` (60,000 examples) at batch 1,024, then trained on a small labelled subset of
`mnist1d/original` at batches from 8 to 1,024, from those weights (all but the head,
`config.init_exclude`) and from scratch, with the same recipe and epochs. Each run's final and
best test accuracy, its steps, and the steps to the target go in a table and a figure.

  python -m kbatch.study.fine_tuning OUT_DIR [--runs_dir=DIR] [--subset=2048] [--epochs=30] [--pretrain_epochs=8]

writes OUT_DIR/fine_tuning.csv and OUT_DIR/fine_tuning.png (the runs go in --runs_dir, OUT_DIR/runs
by default; a finished run is not trained again).
"""

import argparse
import csv
import os

import numpy as np
from matplotlib.figure import Figure

import kbatch
from kbatch.configs import mnist1d_cnn
from kbatch.data.numpy_source import cached_mnist1d
from kbatch.study import plots
from kbatch.training import train

BATCHES = (8, 32, 128, 512, 1024)
HEAD = "^logits/"  # the classifier, trained anew on the subset
COLUMNS = (
    "start",
    "batch_size",
    "learning_rate",
    "steps",
    "final_eval_accuracy",
    "best_eval_accuracy",
    "steps_to_target",
)


def subset(size, seed=0):
    """`size` examples of mnist1d/original's training split drawn without replacement, evaluated on
    its whole test split: a `kbatch.data.from_arrays` source."""
    data = cached_mnist1d("original")
    x, y = np.asarray(data["x"], np.float32)[..., None], np.asarray(data["y"], np.int32)
    chosen = np.random.default_rng(seed).choice(len(x), size, replace=False)
    eval_pair = (np.asarray(data["x_test"], np.float32)[..., None], np.asarray(data["y_test"], np.int32))
    return kbatch.data.from_arrays(x[chosen], y[chosen], eval=eval_pair, name=f"mnist1d_original_{size}")


def pretrain(model_dir, epochs, batch_size=1024):
    """The CNN trained on mnist1d/large at `batch_size` (the default recipe, scaled linearly)."""
    config = mnist1d_cnn.get_config()
    config.update(batch_size=batch_size, num_epochs=epochs, model_dir=model_dir, steps_per_loop=100)
    return train(config, verbose=False)


def fine_tune_config(model_dir, batch_size, epochs, init_from=None):
    """The subset's recipe at `batch_size`: the default CNN recipe (SGD with momentum, 0.05 at 128,
    linear scaling, a warmup epoch, cosine decay), from `init_from` less the head or from scratch."""
    config = mnist1d_cnn.get_config()
    config.update(
        batch_size=batch_size, num_epochs=epochs, model_dir=model_dir, target_accuracy=0.85, steps_per_loop=50
    )
    if init_from is not None:
        config.init_from, config.init_exclude = init_from, HEAD
    return config


def run_all(runs, subset_size=2048, epochs=30, pretrain_epochs=8, batches=BATCHES, log=print):
    """Pretrain once, then each (start, batch) run on the subset, in the folder `runs`; the table's rows."""
    pretrained = os.path.join(runs, "pretrain_b1024")
    result = pretrain(pretrained, pretrain_epochs)
    log(f"pretrained: {result['final_eval_accuracy']:.4f} on mnist1d/large's test split, {result['steps']} steps")
    data, rows = subset(subset_size), []
    for start, init_from in (("pretrained", pretrained), ("scratch", None)):
        for batch in batches:
            config = fine_tune_config(os.path.join(runs, f"{start}_b{batch}"), batch, epochs, init_from)
            result = train(config, data=data, verbose=False)
            rows.append(
                {
                    "start": start,
                    "batch_size": batch,
                    "learning_rate": config.base_learning_rate * batch / config.base_batch_size,
                    **{k: result[k] for k in COLUMNS[3:]},
                }
            )
            log(", ".join(f"{k}={v}" for k, v in rows[-1].items()))
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot(path, rows, title):
    """Best test accuracy and steps to the target against the batch, one line per start."""
    fig = Figure(figsize=(11, 4))
    accuracy, steps = fig.subplots(1, 2)
    batches = sorted({r["batch_size"] for r in rows})
    for i, start in enumerate(sorted({r["start"] for r in rows})):
        mine = sorted((r for r in rows if r["start"] == start), key=lambda r: r["batch_size"])
        accuracy.plot(
            [r["batch_size"] for r in mine], [r["best_eval_accuracy"] for r in mine], "o-", color=f"C{i}", label=start
        )
        reached = [(r["batch_size"], r["steps_to_target"]) for r in mine if r["steps_to_target"]]
        if reached:
            steps.plot(*zip(*reached), "o-", color=f"C{i}", label=start)
    for ax in (accuracy, steps):
        plots.batch_axis(ax, batches, "fine-tuning global batch size")
        ax.legend()
    accuracy.set_ylabel("best test accuracy")
    steps.set_yscale("log")
    steps.set_ylabel("steps to 85% test accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--runs_dir", default=None, help="where the runs go (default: OUT_DIR/runs)")
    parser.add_argument("--subset", type=int, default=2048, help="labelled examples of mnist1d/original")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each fine-tuning run")
    parser.add_argument("--pretrain_epochs", type=int, default=8, help="epochs of the pretraining on mnist1d/large")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    rows = run_all(args.runs_dir or os.path.join(args.out_dir, "runs"), args.subset, args.epochs, args.pretrain_epochs)
    write_csv(os.path.join(args.out_dir, "fine_tuning.csv"), rows)
    plot(
        os.path.join(args.out_dir, "fine_tuning.png"),
        rows,
        f"MNIST-1D CNN: {args.subset} labelled examples, pretrained on mnist1d/large at batch 1024 vs from scratch",
    )


if __name__ == "__main__":
    main()
