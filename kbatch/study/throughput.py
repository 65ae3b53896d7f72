"""The hardware curve: seconds per update against the global batch, and wall time to a target.

A larger batch takes fewer updates to a target (the sweep's steps-to-target curve), but each
update costs more. The time per update is modelled as

    T_update(B) = T0 + k * B**gamma

T0 is the fixed cost of an update that a larger batch amortises (launching the step, the
all-reduce latency, the host's work per loop), k * B**gamma the part that grows with the batch.
It is the simplest model of "examples/s saturates": B / T_update(B) grows almost linearly while
T0 dominates and levels off at B**(1 - gamma) / k once the accelerator is full (Shallue et al.
2019, on hardware: a batch larger than the one that saturates the device buys steps, not
throughput). gamma near 0 means a fixed cost per update (latency bound), gamma = 1 a time
proportional to the batch (compute bound). Multiplied by the steps to target of a sweep it gives
the wall time to target at each batch, and the batch that minimises it.

`fit_update_time` fits the model; `read_steps` reads a sweep's CSV; `time_updates` measures a
real run (`kbatch.training.build_run`: its input stream, compiled loop and per-loop actions).
NumPy only at import: the Keras parts are imported when `time_updates` runs.
"""

import copy
import csv
import dataclasses
import math
import tempfile
import time

import numpy as np

GAMMA_RANGE = (0.1, 2.0)
_GRID_POINTS = 191  # gamma every 0.01 over GAMMA_RANGE, then a golden-section refinement
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclasses.dataclass(frozen=True)
class UpdateTimeFit:
    """T_update(B) = t0 + k * B**gamma (seconds); `residual` is the RMS relative error of the
    fit at the measured points (0.02: the model is 2% off on average)."""

    t0: float
    k: float
    gamma: float
    residual: float

    def seconds(self, batch):
        """Seconds per update at `batch` (a number or an array)."""
        return self.t0 + self.k * np.asarray(batch, float) ** self.gamma

    def examples_per_second(self, batch):
        """Training throughput at `batch`: B / T_update(B)."""
        return np.asarray(batch, float) / self.seconds(batch)

    @property
    def gamma_at_search_edge(self):
        """Whether gamma is at an end of `GAMMA_RANGE` (the data want a value beyond it)."""
        return min(abs(self.gamma - edge) for edge in GAMMA_RANGE) < 1e-6


def _nonnegative_least_squares(design, target):
    """argmin ||design @ p - target|| over p >= 0, for two columns: the unconstrained solution,
    else the better of the two one-column solutions (the optimum then lies on an edge)."""
    p = np.linalg.lstsq(design, target, rcond=None)[0]
    if np.all(p >= 0):
        return p
    edges = []
    for column in range(2):
        edge = np.zeros(2)
        edge[column] = max(0.0, design[:, column] @ target / (design[:, column] @ design[:, column]))
        edges.append(edge)
    return min(edges, key=lambda e: np.sum((design @ e - target) ** 2))


def _fit_at(gamma, batches, seconds):
    """(t0, k, sum of squared relative residuals) of the best fit with this gamma. Relative:
    each point is divided by its measured time, so a 1 ms and a 100 ms update weigh alike."""
    design = np.stack([np.ones_like(batches), batches**gamma], axis=1) / seconds[:, None]
    t0, k = _nonnegative_least_squares(design, np.ones_like(seconds))
    return t0, k, float(np.sum((design @ np.array([t0, k]) - 1) ** 2))


def _golden_section(loss, low, high, tolerance=1e-10):
    """The minimum of a unimodal `loss` on [low, high]."""
    a, b = low, high
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    loss_c, loss_d = loss(c), loss(d)
    while b - a > tolerance:
        if loss_c < loss_d:
            b, d, loss_d = d, c, loss_c
            c = b - _GOLDEN * (b - a)
            loss_c = loss(c)
        else:
            a, c, loss_c = c, d, loss_d
            d = a + _GOLDEN * (b - a)
            loss_d = loss(d)
    return (a + b) / 2


def fit_update_time(batches, seconds):
    """The `UpdateTimeFit` of measured seconds per update at each batch (repeated batches
    allowed): least squares on relative errors, closed form in (t0, k) >= 0 at each gamma, gamma
    found on a grid over `GAMMA_RANGE` and refined by golden section around the grid's best."""
    batches, seconds = np.asarray(batches, float), np.asarray(seconds, float)
    if batches.shape != seconds.shape or batches.ndim != 1:
        raise ValueError(
            f"fit_update_time: {batches.shape} batches against {seconds.shape} times; want two "
            "lists of the same length."
        )
    if len(np.unique(batches)) < 3:
        raise ValueError(
            f"fit_update_time: {len(np.unique(batches))} distinct batch sizes; the fit has 3 parameters "
            "(T0, k, gamma), so it needs at least 3."
        )
    if not (np.all(batches > 0) and np.all(seconds > 0) and np.all(np.isfinite(seconds))):
        raise ValueError("fit_update_time: batch sizes and seconds per update must be positive and finite.")
    loss = lambda gamma: _fit_at(gamma, batches, seconds)[2]  # noqa: E731
    grid = np.linspace(*GAMMA_RANGE, _GRID_POINTS)
    best = int(np.argmin([loss(g) for g in grid]))
    gamma = _golden_section(loss, grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)])
    t0, k, squares = _fit_at(gamma, batches, seconds)
    return UpdateTimeFit(t0=float(t0), k=float(k), gamma=float(gamma), residual=math.sqrt(squares / len(batches)))


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
