"""Which statistics switchable normalization learned to use (Luo et al. 2018, Figure 4): for each
finished run of a sweep whose norm is `switchable`, the importance weights (the softmax of the
learned logits) of the mean and of the variance, per mode, averaged over the model's
SwitchableNormalization layers, in a markdown table, one row per run, by batch size.

  python tools/switchable_weights.py --sweep_dir=/tmp/norms --markdown=/tmp/switchable_weights.md
"""

import os

from absl import flags

from study_output import refuse_existing, run_tool  # tools/ is the script's own folder, first on sys.path

SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "A sweep's folder (tools/sweep.py's --sweep_dir).")
MARKDOWN = flags.DEFINE_string("markdown", None, "The table (markdown) to write.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --markdown if it exists.")
STATISTICS = ("mean", "variance")


def mean_importance(model):
    """{(statistic, mode): weight} averaged over the model's SwitchableNormalization layers."""
    from kbatch.layers import SwitchableNormalization

    found = [layer.importance() for layer in model._flatten_layers() if isinstance(layer, SwitchableNormalization)]
    if not found:
        raise ValueError("the model has no SwitchableNormalization layer.")
    modes = found[0]["mean"]
    return {(stat, mode): sum(w[stat][mode] for w in found) / len(found) for stat in STATISTICS for mode in modes}


def switchable_runs(sweep):
    """(batch_size, point name, mean_importance) of every finished switchable point, by batch."""
    import importlib

    import keras

    importlib.import_module("kbatch.layers")  # registers the layers the saved models hold
    rows = []
    for point in sweep.points:
        if point.config["norm"] == "switchable" and sweep.state(point)[0] == "finished":
            model = keras.models.load_model(os.path.join(point.config["model_dir"], "model.keras"))
            rows.append((point.config["batch_size"], point.name, mean_importance(model)))
    return sorted(rows, key=lambda row: (row[0], row[1]))


def table(rows):
    columns = list(rows[0][2])
    lines = ["| batch | run | " + " | ".join(f"{stat} {mode}" for stat, mode in columns) + " |",
             "|---:|---|" + "---:|" * len(columns)]
    for batch, name, weights in rows:
        lines.append(f"| {batch} | {name} | " + " | ".join(f"{weights[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    from kbatch.study import sweep

    refuse_existing({"markdown": MARKDOWN.value}, OVERWRITE.value)
    if not SWEEP_DIR.value:
        raise ValueError("--sweep_dir is required.")
    opened = sweep.Sweep.open(SWEEP_DIR.value)
    rows = switchable_runs(opened)
    if not rows:
        raise ValueError(f"--sweep_dir={SWEEP_DIR.value}: no finished run with config.norm='switchable'.")
    text = table(rows)
    with open(MARKDOWN.value, "w") as file:
        file.write(text)
    print(text, end="")


if __name__ == "__main__":
    run_tool("switchable_weights", main, __doc__)
