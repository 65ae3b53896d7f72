"""The study specs of tools/sweeps/ make exactly the runs of the committed studies:
docs/results/<stem>_sweep.json is the manifest of the sweep folder that made docs/results/<stem>.csv,
so a spec reproduces its result page when its points, built as tools/sweep.py builds them (the
default config with the spec's overrides, `grid.expand`, `Sweep`), are that manifest's base config
and points, field by field with types, and the CSV is one finished row per point, each row's
config columns those of its point. Nothing trains.
"""

import csv
import json
import os
import runpy
import subprocess
import sys

import pytest
from run_tool import REPO

from kbatch.configs import lm_bytes, mnist1d_cnn
from kbatch.study import grid, report, sweep
from kbatch.training.config import recipe, schema

RESULTS = {  # spec (tools/sweeps/<spec>.py): its results (docs/results/<stem>.csv, <stem>_sweep.json)
    "scaling": "scaling",
    "lars_vs_sgd": "lars",
    "ghost_batch_norm": "ghost_batch_norm",
    "norms": "norms",
    "contrastive_negatives": "contrastive_negatives",
    "self_training": "self_training",
    "batch_controllers": "batch_controllers_runs",
    "batch_controllers_lm": "batch_controllers_lm_runs",
}
PAGES = {
    **RESULTS,
    "ghost_batch_norm": "norms",
    "batch_controllers": "batch_controllers",
    "batch_controllers_lm": "batch_controllers_lm",
}  # the page that shows them, docs/results/<page>.md
TARGETS = {
    "scaling": [0.97, 0.99],
    "lars_vs_sgd": [0.95, 0.97],
    "norms": [0.9, 0.95],
    "ghost_batch_norm": [0.9, 0.95],
    "contrastive_negatives": [0.8, 0.85],
    "self_training": [0.75, 0.8],
    "batch_controllers": [0.985, 0.99],
    "batch_controllers_lm": [0.41, 0.45],  # eval token accuracy
}
TRAIN_EXAMPLES = {"mnist1d/large": 60000, "mnist1d/original": 4000, "pystdlib_bytes/seq128": 11263}  # docs/results/*.md
# Specs over another config's recipe, written as its fields over the default config: {spec: (config, the
# fields the study changes)}.
RECIPES = {"batch_controllers_lm": (lm_bytes, {"num_epochs", "evals_per_epoch", "backend"})}

# Each spec as tools/sweep.py itself reads it (its flags, kbatch.study.sweep_command.build_sweep), nothing trained:
# {spec: {"names", "targets", "configs"}}.
ENGINE = r"""
import importlib, json, os, sys

sys.path.insert(0, os.path.join(sys.argv[1], "tools"))
from absl import flags
from kbatch.study import sweep_command
from kbatch.training.config import schema

engine = importlib.import_module("sweep")
engine.define_config()
out = {}
for spec, path in json.loads(sys.argv[2]).items():
    flags.FLAGS(["sweep", f"--spec={path}", f"--sweep_dir={os.path.join(sys.argv[3], spec)}"])
    built, targets = sweep_command.build_sweep(flags.FLAGS.config, engine.OPTIONS())
    out[spec] = {"names": [p.name for p in built.points], "targets": targets,
                 "configs": [schema.as_json(schema.resolve(p.config)) for p in built.points]}
print("ENGINE " + json.dumps(out))
"""


def spec_path(spec):
    return os.path.join(REPO, "tools", "sweeps", f"{spec}.py")


def result_path(spec, suffix):
    return os.path.join(REPO, "docs", "results", RESULTS[spec] + suffix)


def read_spec(spec):
    found = runpy.run_path(spec_path(spec))
    assert set(found["SWEEP"]) <= {"overrides", "grid", "points", "targets"}
    return found["SWEEP"], found.get("__doc__") or ""


def build(spec, sweep_dir):
    """The spec's Sweep, built as tools/sweep.py builds it with the default --config."""
    found, _ = read_spec(spec)
    base = mnist1d_cnn.get_config().copy_and_resolve_references()
    for field, value in found.get("overrides", {}).items():
        grid.check_field(field, "spec overrides")
        base[field] = value
    return sweep.Sweep(sweep_dir, base, grid.expand(dict(found.get("grid", {})), list(found.get("points", []))))


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    return {spec: build(spec, tmp_path_factory.mktemp(spec) / "sweep") for spec in RESULTS}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    paths = {spec: spec_path(spec) for spec in RESULTS}
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", ENGINE, REPO, json.dumps(paths), str(tmp_path_factory.mktemp("e"))],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("ENGINE "))
    return json.loads(line[len("ENGINE ") :])


def _typed(value):
    return type(value).__name__, value  # 1 and 1.0, or True and 1, are not the same field


def _differences(a, b):
    return sorted(k for k in set(a) | set(b) if _typed(a.get(k)) != _typed(b.get(k)))


def _csv_rows(spec):
    with open(result_path(spec, ".csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("spec", RESULTS)
def test_every_point_is_valid(sweeps, spec):
    sweeps[spec].check(lambda dataset, data_dir: TRAIN_EXAMPLES[dataset])
    assert len({p.name for p in sweeps[spec].points}) == len(sweeps[spec].points)


@pytest.mark.parametrize("spec", RESULTS)
def test_tools_sweep_reads_the_spec_as_this_test_does(sweeps, engine, spec):
    """`build` here is tools/sweep.py's build_sweep: the same points, names, configs and targets."""
    made = sweeps[spec]
    assert engine[spec]["names"] == [p.name for p in made.points]
    assert engine[spec]["targets"] == read_spec(spec)[0]["targets"] == TARGETS[spec]
    for name, config, point in zip(engine[spec]["names"], engine[spec]["configs"], made.points):
        ours = schema.as_json(schema.resolve(point.config))
        assert os.path.basename(config.pop("model_dir")) == os.path.basename(ours.pop("model_dir")) == name
        assert _differences(config, ours) == [], name


@pytest.mark.parametrize("spec", RESULTS)
def test_the_spec_is_the_manifest_of_the_committed_sweep(sweeps, spec):
    """The base config and every point of the folder that made the result page, field by field."""
    with open(result_path(spec, "_sweep.json")) as f:
        committed = json.load(f)
    made = sweeps[spec]
    assert _differences(made.base, committed["base"]) == [], f"{spec}: the base config differs"
    assert sorted(committed["points"]) == sorted(p.name for p in made.points)
    for point in made.points:
        assert _differences(point.overrides, committed["points"][point.name]) == [], point.name


@pytest.mark.parametrize("spec", RESULTS)
def test_the_csv_is_one_finished_row_per_point_with_its_config(sweeps, spec):
    made, rows = sweeps[spec], _csv_rows(spec)
    assert sorted(r["name"] for r in rows) == sorted(p.name for p in made.points)
    by_name = {p.name: schema.resolve(p.config) for p in made.points}
    for row in rows:
        settings = by_name[row["name"]]
        assert row["state"] == "finished" and os.path.basename(row["model_dir"]) == row["name"]
        for field in report.DESCRIBED:
            value = getattr(settings, field)
            assert row[field] == ("" if value is None else str(value)), f"{row['name']}: {field}"
        peak = recipe.RunRecipe.from_settings(settings).peak_learning_rate()
        assert float(row["peak_learning_rate"]) == pytest.approx(peak, rel=1e-12), row["name"]
        for target in TARGETS[spec]:
            assert all(column in row for column in report.target_columns(target))


@pytest.mark.parametrize("spec", RECIPES)
def test_a_spec_over_another_recipe_is_that_config_but_the_fields_it_changes(sweeps, spec):
    """e.g. batch_controllers_lm: configs/lm_bytes.py at 3 epochs, 4 evaluations an epoch, on JAX."""
    config, changed = RECIPES[spec]
    base, recipe_fields = (json.loads(json.dumps(dict(c))) for c in (sweeps[spec].base, config.get_config().to_dict()))
    differs = sorted(field for field in _differences(base, recipe_fields) if field != "model_dir")  # lists as tuples
    assert differs == sorted(changed)


@pytest.mark.parametrize("spec", RESULTS)
def test_the_docstring_gives_the_command_and_the_result_page(spec):
    _, doc = read_spec(spec)
    assert f"python tools/sweep.py --spec=tools/sweeps/{spec}.py --sweep_dir=" in doc
    assert "--config." not in doc  # everything the runs need is in the spec's overrides
    assert f"docs/results/{PAGES[spec]}.md" in doc
