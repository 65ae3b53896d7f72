"""One sweep: a base config, its points (overrides of it), and one folder that holds them all.

    sweep_dir/
      sweep.json              the base config and every point {name: overrides}: whose folder this is
      runs/<name>/            each point's model_dir, an ordinary kbatch run (config.json, result.json, ...)
      failures/<name>.json    a point that failed or diverged, with its error (the sweep went on)
      tensorboard/            HParams summaries, written by `kbatch.study.report`

The base config is what makes a folder one sweep's: a sweep of another base config is refused, and
a sweep of the same base with more points grows the folder (finished runs are read back, not
trained again). Every point's config is checked before the first run starts.
Nothing here trains.
"""

import dataclasses
import json
import os

from kbatch.study import grid
from kbatch.training.config import schema
from kbatch.training.run_files import run_dir

MANIFEST = "sweep.json"
RUNS, FAILURES = "runs", "failures"
STATES = ("finished", "diverged", "failed", "partial", "pending")


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of the sweep: its folder name, what it overrides, and its whole config (a dict)."""

    name: str
    overrides: dict
    config: dict


class Sweep:
    """The points of `base` (a ConfigDict, a dict or Settings) under `overrides` (a list of dicts,
    see `grid.expand`) in `sweep_dir`."""

    def __init__(self, sweep_dir, base, overrides):
        self.sweep_dir = os.path.abspath(sweep_dir)
        self.base = _base_json(base)
        self.points = self._distinct([self._point(o) for o in overrides])

    @classmethod
    def open(cls, sweep_dir):
        """The sweep whose manifest is in `sweep_dir`, every point it ever held."""
        manifest = read_manifest(sweep_dir)
        if manifest is None:
            raise ValueError(f"--sweep_dir={sweep_dir}: no {MANIFEST} there: it is not a kbatch sweep.")
        return cls(sweep_dir, manifest["base"], list(manifest["points"].values()))

    def _distinct(self, points):
        """`points` with each run once: a point whose whole config is that of an earlier one, or of
        a point the folder already holds under another name (`{"batch_size": 64}` and `{"batch_size":
        64, "optimizer": <the base's>}`), is that point, not a second run."""
        held = read_manifest(self.sweep_dir) if os.path.isdir(self.sweep_dir) else None
        known = [self._point(o) for o in held["points"].values()] if held else []
        seen, distinct = {_run_key(p): p for p in known}, []
        for point in points:
            same = seen.setdefault(_run_key(point), point)
            if all(same.name != p.name for p in distinct):
                distinct.append(same)
        return distinct

    def _point(self, overrides):
        name = grid.run_name(overrides)
        config = {**self.base, **overrides, "model_dir": os.path.join(self.sweep_dir, RUNS, name)}
        return Point(name, dict(overrides), config)

    @property
    def axes(self):
        """The fields the points vary, in the order first seen."""
        fields = []
        for p in self.points:
            fields += [k for k in p.overrides if k not in fields]
        return [f for f in fields if len({repr(p.config[f]) for p in self.points}) > 1]

    def check(self, train_examples=None):
        """A ValueError naming the first problem: a foreign sweep folder, a bad field of any point,
        a point's folder holding another run, or a batch larger than the training set
        (`train_examples(dataset, data_dir)`, when given, is the size of a data set)."""
        self._check_folder()
        for point in self.points:
            try:
                settings = schema.resolve(point.config)
                run_dir.check(settings.model_dir, settings)
            except ValueError as error:
                raise ValueError(f"point {point.name}: {error}") from None
            size = train_examples(settings.dataset, settings.data_dir) if train_examples else None
            if size and settings.batch_size > size:
                raise ValueError(
                    f"point {point.name}: config.batch_size={settings.batch_size} is larger than "
                    f"the {size} training examples of {settings.dataset}."
                )

    def _check_folder(self):
        if not os.path.exists(self.sweep_dir):
            return
        if not os.path.isdir(self.sweep_dir):
            raise ValueError(f"--sweep_dir={self.sweep_dir} exists and is not a folder.")
        manifest = read_manifest(self.sweep_dir)
        if manifest is None:
            if os.listdir(self.sweep_dir):
                raise ValueError(
                    f"--sweep_dir={self.sweep_dir} holds files that are not a kbatch sweep: "
                    "choose a new or empty folder."
                )
            return
        saved = {k: v for k, v in schema.completed(manifest["base"]).items() if k != "model_dir"}
        differ = sorted(k for k in set(saved) | set(self.base) if saved.get(k) != self.base.get(k))
        if differ:
            shown = ", ".join(f"{k}: {saved.get(k)!r} -> {self.base.get(k)!r}" for k in differ[:4])
            raise ValueError(
                f"--sweep_dir={self.sweep_dir} belongs to another sweep (its base config differs: "
                f"{shown}): choose another folder."
            )

    def write_manifest(self):
        """Record the base and the points (with any the folder held before) in `sweep.json`."""
        earlier = read_manifest(self.sweep_dir) or {"points": {}}
        points = {**earlier["points"], **{p.name: p.overrides for p in self.points}}
        os.makedirs(os.path.join(self.sweep_dir, RUNS), exist_ok=True)
        run_dir.write_json(os.path.join(self.sweep_dir, MANIFEST), {"base": self.base, "points": points})

    def state(self, point):
        """(one of STATES, the result dict or the failure record or None)."""
        result = os.path.join(point.config["model_dir"], run_dir.RESULT_FILE)
        if os.path.exists(result):
            return "finished", run_dir.read_json(result)
        failure = self.failure_path(point)
        if os.path.exists(failure):
            record = run_dir.read_json(failure)
            return record["state"], record
        started = os.path.exists(os.path.join(point.config["model_dir"], run_dir.CONFIG_FILE))
        return ("partial" if started else "pending"), None

    def failure_path(self, point):
        return os.path.join(self.sweep_dir, FAILURES, f"{point.name}.json")

    def record_failure(self, point, state, error):
        """Write a point's failure ("failed" or "diverged") and its one-line error."""
        os.makedirs(os.path.join(self.sweep_dir, FAILURES), exist_ok=True)
        run_dir.write_json(self.failure_path(point), {"state": state, "error": error})

    def to_run(self, retry_failed=False):
        """The points still to train: pending or partial, and failed ones when `retry_failed`."""
        todo = []
        for point in self.points:
            state, _ = self.state(point)
            if state in ("pending", "partial") or (retry_failed and state in ("failed", "diverged")):
                todo.append(point)
        return todo


def read_manifest(sweep_dir):
    """`sweep.json` of `sweep_dir` as a dict, or None if there is none."""
    path = os.path.join(sweep_dir, MANIFEST)
    return run_dir.read_json(path) if os.path.exists(path) else None


def _run_key(point):
    """What makes two points one run: their whole config but the folder (JSON: a tuple is a list)."""
    return json.dumps({k: v for k, v in point.config.items() if k != "model_dir"}, sort_keys=True, default=repr)


def _base_json(base):
    """The base config, checked, as JSON data (tuples as lists), without a model_dir."""
    return {k: v for k, v in schema.as_json(schema.resolve(base)).items() if k != "model_dir"}
