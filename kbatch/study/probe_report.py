"""The linear probe of every finished contrastive run of a sweep, read again on more examples than
the runs' own evaluations used (`probe_examples`, 5,000 by default): the probe is data-limited
(on MNIST-1D's 1,280 features the same encoder reads 0.85 with 5,000 examples and 0.90 with
20,000), so a study that compares runs reads them with the larger probe.

  python -m kbatch.study.probe_report SWEEP_DIR [--examples=20000] [--csv=PATH]

prints a markdown table, one row per run (its swept fields, the run's own final probe accuracy and
the larger probe's), and writes it as CSV to --csv.
"""

import argparse
import csv
import json
import os

import keras

from kbatch.data import sources
from kbatch.diagnostics import linear_probe
from kbatch.study import sweep as sweep_lib
from kbatch.training.actions.probe import probe_examples, represent


def probe_again(model_dir, examples):
    """The probe accuracy of the run in `model_dir` (its saved `model.keras`), fitted on its data
    set's first `examples` training examples (the stream of the run's seed) and read on its
    evaluation split, as `LinearProbe` reads it."""
    with open(os.path.join(model_dir, "config.json")) as file:
        config = json.load(file)
    source = sources.get(config["dataset"], config.get("data_dir"))
    x, y, x_eval, y_eval = probe_examples(source, examples, config["seed"])
    model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
    return linear_probe.probe_accuracy(
        represent(model, x), y, represent(model, x_eval), y_eval, source.describe().num_classes
    )


def rows(sweep_dir, examples):
    """One row per finished point of the sweep in `sweep_dir`: its name and axes' values, the run's final
    (probe) accuracy, and `probe_again`'s."""
    sweep = sweep_lib.Sweep.open(sweep_dir)
    out = []
    for point in sweep.points:
        state, record = sweep.state(point)
        if state != "finished":
            continue
        row = {"name": point.name, **{field: point.config[field] for field in sweep.axes}}
        row["final_eval_accuracy"] = record["final_eval_accuracy"]
        row[f"probe_{examples}"] = probe_again(point.config["model_dir"], examples)
        print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        out.append(row)
    return out


def markdown(table):
    """The rows as a markdown table, floats to 4 decimals."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()] for row in table]
    lines = [list(table[0]), ["---"] * len(table[0]), *cells]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--examples", type=int, default=20000, help="training examples the probe is fitted on")
    parser.add_argument("--csv", default=None, help="where to write the table as CSV")
    args = parser.parse_args(argv)
    table = rows(args.sweep_dir, args.examples)
    if not table:
        raise SystemExit(f"probe_report: no finished run in {args.sweep_dir}.")
    if args.csv:
        with open(args.csv, "w", newline="") as file:
            writer = csv.DictWriter(file, list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    print(markdown(table), end="")


if __name__ == "__main__":
    main()
