"""BN's gradient ratio against the batch size: the MNIST-1D CNN with batch norm, at initialization
and trained, its loss's gradient through the batch statistics against the gradient with them held
fixed (`kbatch.diagnostics.bn_coupling`), on several training batches of each size: the norm ratio
|g_batch| / |g_fixed| and the cosine, over all trainable weights and over the convolutions' kernels
alone (the weights before a BN; the classifier's gradient is the same in both).

  python -m kbatch.study.bn_coupling OUT_DIR [--run_dir=DIR] [--batches=2,8,32,128,512,2048] [--repeats=10]
      [--epochs=2]

trains the default CNN recipe (configs/mnist1d_cnn.py) for --epochs in --run_dir (OUT_DIR/run by
default; a finished run is not trained again), then writes OUT_DIR/bn_coupling.csv and
OUT_DIR/bn_coupling.png and prints the markdown table.
"""

import argparse
import csv
import os

import keras
import numpy as np
from matplotlib.figure import Figure

from kbatch.configs import mnist1d_cnn as cnn_config
from kbatch.data.numpy_source import cached_mnist1d
from kbatch.diagnostics import bn_coupling
from kbatch.models import mnist1d_cnn
from kbatch.study import plots
from kbatch.training import train

BATCHES = (2, 8, 32, 128, 512, 2048)
COLUMNS = ("model", "batch_size", "weights", "ratio_mean", "ratio_std", "cosine_mean", "cosine_std")


def trained_model(run_dir, epochs):
    """The default CNN recipe (mnist1d/large, batch 256, SGD with momentum) trained `epochs` in `run_dir`."""
    config = cnn_config.get_config()
    config.update(num_epochs=epochs, warmup_epochs=min(1.0, epochs / 2), model_dir=run_dir, steps_per_loop=100)
    result = train(config, verbose=False)
    print(f"trained: {result['steps']} steps, test accuracy {result['final_eval_accuracy']:.4f}", flush=True)
    return keras.models.load_model(os.path.join(run_dir, "model.keras"))


def measure(model, name, batches=BATCHES, repeats=10, seed=0):
    """The table's rows for `model`: per batch size, the mean and spread over `repeats` disjoint
    batches of mnist1d/large's training split, over all weights and the convolutions' kernels."""
    data = cached_mnist1d("large")
    order = np.random.default_rng(seed).permutation(len(data["x"]))
    x, y = np.asarray(data["x"], np.float32)[order, :, None], np.asarray(data["y"], np.int32)[order]
    pair = bn_coupling.gradient_pair(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kernels = [v.path.startswith("conv") and v.path.endswith("kernel") for v in model.trainable_variables]
    rows = []
    for batch in batches:
        values = {"all": [], "conv kernels": []}
        for start in range(0, batch * repeats, batch):
            _, g_batch, g_fixed = pair(x[start : start + batch], y[start : start + batch])
            values["all"].append(bn_coupling.compare(g_batch, g_fixed))
            chosen = [(a, b) for a, b, keep in zip(g_batch, g_fixed, kernels) if keep]
            values["conv kernels"].append(bn_coupling.compare(*zip(*chosen)))
        for weights, points in values.items():
            ratio, cosine = np.array(points).T
            rows.append(dict(zip(COLUMNS, (name, batch, weights, *_spread(ratio), *_spread(cosine)))))
    return rows


def _spread(values):
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def markdown(rows):
    lines = ["| model | batch | weights | ratio | cosine |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['weights']} | {r['ratio_mean']:.3f} ± {r['ratio_std']:.3f} "
            f"| {r['cosine_mean']:.3f} ± {r['cosine_std']:.3f} |"
        )
    return "\n".join(lines)


def plot(path, rows):
    """Ratio and cosine against the batch, one line per (model, weights), the spread as error bars."""
    fig = Figure(figsize=(11, 4))
    panels = fig.subplots(1, 2)
    series = sorted({(r["model"], r["weights"]) for r in rows})
    for i, (model, weights) in enumerate(series):
        mine = sorted(
            (r for r in rows if (r["model"], r["weights"]) == (model, weights)), key=lambda r: r["batch_size"]
        )
        style = "o-" if weights == "all" else "s--"
        for ax, key in zip(panels, ("ratio", "cosine")):
            ax.errorbar(
                [r["batch_size"] for r in mine],
                [r[f"{key}_mean"] for r in mine],
                yerr=[r[f"{key}_std"] for r in mine],
                fmt=style,
                color=f"C{i // 2}",
                label=f"{model}, {weights}",
                capsize=3,
            )
    for ax, label in zip(panels, ("|g_batch| / |g_fixed|", "cos(g_batch, g_fixed)")):
        plots.batch_axis(ax, sorted({r["batch_size"] for r in rows}), "batch size (BN's batch)")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("MNIST-1D CNN with BN: the gradient through batch statistics against fixed statistics")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--run_dir", default=None, help="the trained model's run (default: OUT_DIR/run)")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=10, help="disjoint batches per size")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the trained model's run")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    os.makedirs(args.out_dir, exist_ok=True)
    keras.utils.set_random_seed(0)
    rows = measure(mnist1d_cnn(norm="batch"), "initialization", batches, args.repeats)
    trained = trained_model(args.run_dir or os.path.join(args.out_dir, "run"), args.epochs)
    rows += measure(trained, f"trained {args.epochs} epochs", batches, args.repeats)
    with open(os.path.join(args.out_dir, "bn_coupling.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot(os.path.join(args.out_dir, "bn_coupling.png"), rows)
    print(markdown(rows))


if __name__ == "__main__":
    main()
