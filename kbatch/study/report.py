"""A sweep, finished or partial, as one row per point: its config fields, its state and its
`result.json`, with the steps and examples it took to each target accuracy (read from its
evaluation history, so a new target needs no new training).

`write_csv`, `markdown_table` and `write_hparams` (TensorBoard's HParams dashboard) take the rows;
`kbatch.study.plots` draws them.
"""

import csv
import os
import time

from kbatch.training.config import recipe, schema

DESCRIBED = (
    "dataset",
    "model",
    "norm",
    "optimizer",
    "batch_size",
    "base_batch_size",
    "base_learning_rate",
    "lr_scaling",
    "warmup_epochs",
    "num_epochs",
    "seed",
)
RESULTS = ("steps", "examples_seen", "final_eval_accuracy", "best_eval_accuracy", "final_eval_loss", "wall_seconds")


def target_columns(target):
    """The two columns of one target accuracy: steps and examples to it."""
    return f"steps_to_{target:g}", f"examples_to_{target:g}"


def first_reaching(history, target):
    """The first evaluation whose accuracy is at least `target`, or None."""
    return next((e for e in history if e.get("eval_accuracy") is not None and e["eval_accuracy"] >= target), None)


def point_row(sweep, point, targets):
    """The row of one point (see the module docstring)."""
    state, record = sweep.state(point)
    settings = schema.resolve(point.config)
    error = record.get("error") if state in ("failed", "diverged") else None
    row = {"name": point.name, "state": state, "error": error}
    row.update({field: point.config[field] for field in sweep.axes})
    row.update({field: getattr(settings, field) for field in DESCRIBED if field not in row})
    row["peak_learning_rate"] = recipe.RunRecipe.from_settings(settings).peak_learning_rate()
    result = record if state == "finished" else {}
    row.update({field: result.get(field) for field in RESULTS})
    for target in targets:
        reached = first_reaching(result.get("history", []), target)
        steps, examples = target_columns(target)
        row[steps], row[examples] = (reached["step"], reached["examples"]) if reached else (None, None)
    row["model_dir"] = point.config["model_dir"]
    return row


def rows(sweep, targets):
    """One row per point of `sweep`, in its order."""
    return [point_row(sweep, point, targets) for point in sweep.points]


def write_csv(path, table):
    """The rows as CSV (an empty cell for None)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(table[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in table)


def cell_text(value):
    """A value as a table cell: - for None, 4 significant digits for a float."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, ".4g")
    return str(value)


def markdown_table(table, axes, targets):
    """A markdown table: the varied fields, the state, accuracy, and steps/examples to each target."""
    columns = list(axes) + ["state", "steps", "final_eval_accuracy"]
    for target in targets:
        columns += list(target_columns(target))
    columns.append("wall_seconds")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        lines.append("| " + " | ".join(cell_text(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _hparam_value(value):
    """HParams take bool, int, float or str; anything else (None, tuples) is shown as text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def write_hparams(folder, table, axes, targets):
    """TensorBoard HParams summaries in `folder`: the experiment (the varied fields and the
    metrics) at its top, and one subfolder per finished point with its values and metrics."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    fields = list(dict.fromkeys(list(axes) + ["batch_size", "optimizer", "peak_learning_rate"]))
    metrics = ["final_eval_accuracy", "best_eval_accuracy", "steps"] + [target_columns(t)[0] for t in targets]

    def write(subfolder, summaries):
        writer = EventFileWriter(os.path.join(folder, subfolder))
        for step, summary in summaries:
            writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        writer.close()

    write("", [(0, hp.hparams_config_pb([hp.HParam(f) for f in fields], [hp.Metric(m) for m in metrics]))])
    for row in table:
        if row["state"] != "finished":
            continue
        values = [summary_pb2.Summary.Value(tag=m, simple_value=float(row[m])) for m in metrics if row[m] is not None]
        write(
            row["name"],
            [
                (0, hp.hparams_pb({f: _hparam_value(row[f]) for f in fields}, trial_id=row["name"])),
                (int(row["steps"]), summary_pb2.Summary(value=values)),
            ],
        )
