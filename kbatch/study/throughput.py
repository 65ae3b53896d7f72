"""The hardware curve at work: wall time to a target against the batch, and measuring a real run.

A larger batch takes fewer updates to a target (the sweep's steps-to-target curve), but each
update costs more. Multiplied by the steps to target of a sweep, the time per update
(`kbatch.diagnostics.update_time`: T_update(B) = T0 + k * B**gamma) gives the wall time to
target at each batch, and the batch that minimises it.

`fit_update_time` fits the model; `read_steps` reads a sweep's CSV; `time_updates` measures a
real run (`kbatch.training.build_run`: its input stream, compiled loop and per-loop actions).
NumPy only at import: the Keras parts are imported when `time_updates` runs.
"""

import copy
import csv
import math
import tempfile
import time


def wall_time_to_target(fit, steps_by_batch):
    """Rows {batch, steps, seconds_per_update, seconds_to_target}, by batch: the fitted time per
    update times the steps to target ({batch: steps, None where the target was not reached},
    whose seconds_to_target is None)."""
    rows = []
    for batch, steps in sorted(steps_by_batch.items()):
        per_update = float(fit.seconds(batch))
        rows.append(
            {
                "batch": batch,
                "steps": steps,
                "seconds_per_update": per_update,
                "seconds_to_target": None if steps is None else steps * per_update,
            }
        )
    return rows


def fastest(rows):
    """The batch of `wall_time_to_target`'s rows with the least wall time to target (None if
    no batch reached it)."""
    reached = [row for row in rows if row["seconds_to_target"] is not None]
    return min(reached, key=lambda row: row["seconds_to_target"])["batch"] if reached else None


def read_steps(csv_path, column="steps_to_target"):
    """{batch: the fewest `column` steps of the sweep's finished runs at that batch} (the best
    learning rate there): rows whose `status` (or `state`, as `kbatch.study.report` names it) is
    not "finished" are skipped, and a batch whose finished runs all left `column` empty (the
    target not reached) maps to None."""
    with open(csv_path, newline="") as file:
        reader = csv.DictReader(file)
        present = reader.fieldnames or []
        status = "state" if "state" in present and "status" not in present else "status"
        for needed in ("batch_size", status, column):
            if needed not in present:
                raise ValueError(f"{csv_path}: no column {needed!r}; the columns are {', '.join(present) or 'none'}.")
        steps_by_batch = {}
        for row in reader:
            if row[status] != "finished":
                continue
            batch, steps = int(row["batch_size"]), row[column].strip()
            best = steps_by_batch.get(batch)
            if steps:
                steps = int(float(steps))
                steps_by_batch[batch] = steps if best is None else min(best, steps)
            else:
                steps_by_batch.setdefault(batch, None)
    return steps_by_batch


def _num_train_examples(dataset, data_dir, backend):
    if backend == "jax":
        from kbatch.data import numpy_source

        return numpy_source.describe(dataset, data_dir).num_train_examples
    from kbatch import data

    return data.describe(dataset, data_dir).num_train_examples


def timing_config(config, batch_size, steps, repeats, model_dir=None):
    """`config` (a full config, e.g. a config file's) at one fixed batch (batch_size =
    base_batch_size, so no scaling rule moves the recipe), a constant learning rate, on the
    current Keras backend, writing to `model_dir` (None: only to check it), with enough epochs
    for the warm-up loop and `repeats` timings of at least `steps` updates."""
    import keras

    timed = copy.deepcopy(config)
    timed.update(
        batch_size=batch_size,
        base_batch_size=batch_size,
        warmup_epochs=0.0,
        decay="constant",
        batch_boundaries=(),
        batch_sizes=(),
        anneal_batch=False,
        batch_schedule="fixed",
        steps_per_loop=min(config["steps_per_loop"], steps),
        backend=keras.backend.backend(),
        model_dir=None if model_dir is None else str(model_dir),
    )
    examples = _num_train_examples(timed["dataset"], timed.get("data_dir"), timed["backend"])
    if batch_size > examples:
        raise ValueError(f"batch {batch_size} is larger than the {examples} training examples of {timed['dataset']}.")
    updates = (2 * repeats + 1) * steps  # each timing stops at the first loop end past `steps`
    timed.update(num_epochs=math.ceil(updates * batch_size / examples))
    return timed


def time_updates(config, batch_size, steps, repeats):
    """Seconds per update of a real run of `config` at `batch_size` (see `timing_config`), once
    per repeat: one loop to trace, compile and warm up, then each repeat times whole loops (each
    followed by the actions every loop of training ends with) until `steps` updates are done.
    The median of the list is the figure; their spread is the noise of the machine."""
    from kbatch.training import build_run

    with tempfile.TemporaryDirectory(prefix="kbatch-throughput-") as model_dir:
        run = build_run(timing_config(config, batch_size, steps, repeats, model_dir))
        try:
            run.run_loop()
            return [seconds_per_update(run, steps) for _ in range(repeats)]
        finally:
            run.backend.close()
            run.close()  # the input streams go now, not when the garbage collector finds them


def seconds_per_update(run, steps):
    """Seconds per update of `run`'s loops over at least `steps` updates, each loop followed by
    the actions every loop of training ends with (the finiteness check, the per-update
    TensorBoard scalars)."""
    from kbatch.training import actions

    every_loop = [actions.CheckFinite(), actions.LogSteps()]
    started, done = time.perf_counter(), 0
    while done < steps:
        loop = run.run_loop()
        for action in every_loop:
            action.after_loop(run, loop)
        done += loop.num_steps
    return (time.perf_counter() - started) / done
