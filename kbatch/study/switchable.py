"""Which statistics switchable normalization learned to use (Luo et al. 2018, Figure 4): for each
finished run of a sweep whose norm is `switchable`, the importance weights (the softmax of the
learned logits) of the mean and of the variance, per mode, averaged over the model's
SwitchableNormalization layers, in a markdown table, one row per run, by batch size.
"""

import os

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
    """(batch_size, point name, mean_importance) of every finished switchable point of the Sweep
    `sweep`, by batch."""
    import keras

    import kbatch.layers  # noqa: F401 - registers the layers the saved models hold

    rows = []
    for point in sweep.points:
        if point.config["norm"] == "switchable" and sweep.state(point)[0] == "finished":
            model = keras.models.load_model(os.path.join(point.config["model_dir"], "model.keras"))
            rows.append((point.config["batch_size"], point.name, mean_importance(model)))
    return sorted(rows, key=lambda row: (row[0], row[1]))


def table(rows):
    """The markdown table of `switchable_runs`' rows."""
    columns = list(rows[0][2])
    lines = [
        "| batch | run | " + " | ".join(f"{stat} {mode}" for stat, mode in columns) + " |",
        "|---:|---|" + "---:|" * len(columns),
    ]
    for batch, name, weights in rows:
        lines.append(f"| {batch} | {name} | " + " | ".join(f"{weights[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def weights_table(sweep_dir):
    """The table of the sweep in `sweep_dir`; a ValueError if it has no finished switchable run."""
    from kbatch.study import sweep

    rows = switchable_runs(sweep.Sweep.open(sweep_dir))
    if not rows:
        raise ValueError(f"--sweep_dir={sweep_dir}: no finished run with config.norm='switchable'.")
    return table(rows)
