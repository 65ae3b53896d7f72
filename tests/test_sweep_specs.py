"""The study specs of tools/sweeps/ (scaling.py, lars_vs_sgd.py, norms.py) make exactly the runs of
the committed studies (docs/results/scaling.md, lars.md, norms.md), which the older tools
(tools/scaling_study.py, lars_vs_sgd.py, compare_norms.py) made.

Each spec's points are built as tools/sweep.py builds them (the default config with the spec's
overrides, `grid.expand`, `Sweep`), resolved, and compared field by field with two independent
references: the old tool's own config of each run, built by its own functions from the command
its result page gives, and the committed CSV of the results, one row per run. Nothing trains.

The old tools are absl scripts with flags of their own (some of the same names), so their
configs are built in one subprocess, one tool's flags defined at a time; their flags never meet
other tools' flags in this pytest process.
"""

import csv
import json
import math
import os
import re
import runpy
import shlex
import subprocess
import sys

import pytest

from kbatch.configs import mnist1d_cnn
from kbatch.study import grid, sweep
from kbatch.training import lr_schedules, schema
from run_tool import REPO

SPECS = {  # spec (tools/sweeps/<spec>.py): the old tool (tools/<tool>.py) that made its runs
    "scaling": "scaling_study",
    "lars_vs_sgd": "lars_vs_sgd",
    "norms": "compare_norms",
}
RESULTS = {"scaling": "scaling", "lars_vs_sgd": "lars", "norms": "norms"}  # docs/results/<page>.md, .csv
# The fields a spec's run may hold differently from the old tool's run. Each is one of
# schema.MAY_CHANGE_ON_RESUME (checked below): how the run is run or watched, not what it trains.
IGNORED = {
    # Every tool names its run folders its own way; the engine's is SWEEP_DIR/runs/<point name>.
    "scaling": {"model_dir"},
    "lars_vs_sgd": {"model_dir"},
    # compare_norms ran one epoch per compiled call (steps_per_loop = ceil(4000 / batch)); the
    # spec's one value is at least that at every batch (checked in
    # test_norms_loop_calls_are_the_old_ones), and with one evaluation an epoch every call stops
    # at the epoch's evaluation, so both make the same calls of the same updates.
    "norms": {"model_dir", "steps_per_loop"},
}
TRAIN_EXAMPLES = {"mnist1d/large": 60000, "mnist1d/original": 4000}  # docs/results/*.md

# Builds every run's config with the old tools' own functions, as each tool's main() does, from
# the command its result page gives, {spec: [{"label", "model_dir", "config"}]}, and each spec's
# points as tools/sweep.py's build_sweep makes them, {"engine": {spec: {"names", "targets", "configs"}}}.
REFERENCE = r'''
import importlib, json, os, sys

sys.path.insert(0, os.path.join(sys.argv[1], "tools"))
from absl import flags
from kbatch.training import schema

FLAGS = flags.FLAGS
ARGS = json.loads(sys.argv[2])
TRAIN_EXAMPLES = json.loads(sys.argv[3])


def load(name):
    """tools/<name>.py imported, its flags parsed from ARGS[name]; the names of its flags."""
    before = set(FLAGS)
    module = importlib.import_module(name)
    FLAGS([name, *ARGS[name]])
    return module, set(FLAGS) - before


def forget(names):
    for flag in names:
        delattr(FLAGS, flag)


def run(label, config):
    return {"label": label, "model_dir": os.path.basename(config.model_dir),
            "config": schema.as_json(schema.resolve(config))}


out = {}
tool, names = load("scaling_study")
s = tool.parse_settings({n: FLAGS[n].value for n in names}, {}, False)
base = tool._CONFIG.value
jobs = [(f"{v}{m}x", tool.sweep_config(base, s, v, m)) for v in s["variants"] for m in s["multipliers"]]
if s["anneal_batch_size"]:
    jobs += [(name, tool.anneal_config(base, s, name == "anneal_batch")) for name in tool.ANNEAL]
out["scaling"] = [run(label, config) for label, config in jobs]
forget(names)

tool, names = load("lars_vs_sgd")
entries = [tool.parse(entry) for entry in tool.RUNS.value]
assert len(set(entries)) == len(entries), entries
out["lars_vs_sgd"] = [run(":".join(map(str, e)), tool.make_config(*e)) for e in entries]
forget(names)

c, names = load("compare_norms")
norms, batches = c.parse_settings(c._NORMS.value, c._BATCHES.value, c._EPOCHS.value, c._WARMUP.value,
                                  c._VIRTUAL.value, {}, False)
out["norms"] = [run(f"{n}-b{b}", c.run_config(c._CONFIG.value, n, b, c._DATASET.value, c._EPOCHS.value,
                                              c._WARMUP.value, c._VIRTUAL.value, c._RUNS_DIR.value,
                                              TRAIN_EXAMPLES[c._DATASET.value]))
                for n in norms for b in batches]
forget(names)

# and each spec as tools/sweep.py itself reads it (its own build_sweep), nothing trained
engine = importlib.import_module("sweep")
engine.define_config()
out["engine"] = {}
for spec, path in json.loads(sys.argv[4]).items():
    FLAGS(["sweep", f"--spec={path}", f"--sweep_dir={os.path.join(sys.argv[5], spec)}"])
    built, targets = engine.build_sweep()
    out["engine"][spec] = {"names": [p.name for p in built.points], "targets": targets,
                           "configs": [schema.as_json(schema.resolve(p.config)) for p in built.points]}
print("REFERENCE " + json.dumps(out))
'''


def page_command(spec):
    """The arguments of the old tool's command in docs/results/<page>.md's first sh block."""
    text = open(os.path.join(REPO, "docs", "results", RESULTS[spec] + ".md")).read()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    words = shlex.split(block.replace("\\\n", ""), comments=True)
    script = f"tools/{SPECS[spec]}.py"
    assert words.count(script) == 1, f"docs/results/{RESULTS[spec]}.md: no single {script} command"
    return words[words.index(script) + 1:]


def spec_path(spec):
    return os.path.join(REPO, "tools", "sweeps", f"{spec}.py")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    args = {SPECS[spec]: page_command(spec) for spec in SPECS}
    paths = {spec: spec_path(spec) for spec in SPECS}
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", REFERENCE, REPO, json.dumps(args), json.dumps(TRAIN_EXAMPLES),
                           json.dumps(paths), str(tmp_path_factory.mktemp("engine"))],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("REFERENCE "))
    return json.loads(line[len("REFERENCE "):])


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
    """{spec: (its Sweep, each point's resolved Settings)}."""
    found = {}
    for spec in SPECS:
        made = build(spec, tmp_path_factory.mktemp(spec) / "sweep")
        found[spec] = made, [schema.resolve(p.config) for p in made.points]
    return found


def _compared(config_json, spec):
    return {k: v for k, v in config_json.items() if k not in IGNORED[spec]}


def _typed(value):
    return type(value).__name__, value  # 1 and 1.0, or True and 1, are not the same field


def _differences(a, b):
    return sorted(k for k in set(a) | set(b) if _typed(a.get(k)) != _typed(b.get(k)))


def test_ignored_fields_do_not_change_the_training():
    for fields in IGNORED.values():
        assert fields <= set(schema.MAY_CHANGE_ON_RESUME)


@pytest.mark.parametrize("spec", SPECS)
def test_every_point_is_valid(sweeps, spec):
    made, _ = sweeps[spec]
    made.check(lambda dataset, data_dir: TRAIN_EXAMPLES[dataset])
    assert len({p.name for p in made.points}) == len(made.points)


@pytest.mark.parametrize("spec", SPECS)
def test_tools_sweep_reads_the_spec_as_this_test_does(sweeps, reference, spec):
    """`build` here is tools/sweep.py's build_sweep: the same points, names and configs, and targets."""
    made, settings = sweeps[spec]
    engine = reference["engine"][spec]
    assert engine["names"] == [p.name for p in made.points]
    assert engine["targets"] == read_spec(spec)[0]["targets"]
    for name, config, expected in zip(engine["names"], engine["configs"], settings):
        ours = schema.as_json(expected)
        assert os.path.basename(config.pop("model_dir")) == os.path.basename(ours.pop("model_dir")) == name
        assert _differences(config, ours) == [], name


@pytest.mark.parametrize("spec", SPECS)
def test_the_points_read_back_from_the_manifest_are_the_same_runs(sweeps, spec, tmp_path):
    """A worker process (--processes > 1) trains a point read back from sweep.json."""
    made, settings = sweeps[spec]
    written = sweep.Sweep(tmp_path / "sweep", made.base, [p.overrides for p in made.points])
    written.write_manifest()
    opened = sweep.Sweep.open(tmp_path / "sweep")
    read = {p.name: schema.resolve(p.config) for p in opened.points}  # sweep.json keeps them by name
    assert sorted(read) == sorted(p.name for p in made.points)
    for point, expected in zip(made.points, settings):
        assert _differences(_compared(schema.as_json(read[point.name]), spec),
                            _compared(schema.as_json(expected), spec)) == [], point.name


@pytest.mark.parametrize("spec", SPECS)
def test_the_runs_are_the_old_tools_runs_field_by_field(sweeps, reference, spec):
    """One spec point per distinct old run (the old tool's shared runs are one folder), and each
    the same resolved config, every field but IGNORED's, value and type."""
    made, settings = sweeps[spec]
    old = {r["model_dir"]: r for r in reference[spec]}  # a run the old tool shared is one folder
    ours = [_compared(schema.as_json(s), spec) for s in settings]
    assert len(ours) == len(old), f"{spec}: {len(ours)} points, the old tool made {len(old)} runs"
    unmatched = list(range(len(ours)))
    for run in old.values():
        theirs = _compared(run["config"], spec)
        gaps = sorted((len(_differences(theirs, ours[i])), i) for i in unmatched)
        count, index = gaps[0]
        assert count == 0, (f"{spec}: the old run {run['label']} ({run['model_dir']}) has no point; the closest, "
                            f"{made.points[index].name}, differs in " + ", ".join(
                                f"{k}: {theirs.get(k)!r} (old) vs {ours[index].get(k)!r}"
                                for k in _differences(theirs, ours[index])))
        unmatched.remove(index)
    assert not unmatched


def _rows(spec):
    with open(os.path.join(REPO, "docs", "results", RESULTS[spec] + ".csv")) as f:
        return list(csv.DictReader(f))


def _spec_and_csv(spec, sweeps, reference):
    """The spec's sweep and settings, and its CSV's runs (a run the old tool shared, one row),
    whose folders are the old tool's own."""
    made, settings = sweeps[spec]
    rows = list({r["model_dir"]: r for r in _rows(spec)}.values())
    assert {os.path.basename(r["model_dir"]) for r in rows} == {r["model_dir"] for r in reference[spec]}
    return made, settings, rows


def _point_of_each_row(spec, settings, rows, matches):
    """The index of the one point each row's run is (`matches(row, settings)`), in row order."""
    used = []
    for row in rows:
        found = [i for i, s in enumerate(settings) if matches(row, s)]
        shown = {k: row[k] for k in list(row)[:9]}
        assert len(found) == 1, f"{spec}: the CSV run {shown} is {len(found)} points"
        used += found
    return used


def _float(text):
    return None if text == "" else float(text)


def _peak(row, s):
    return float(row["peak_learning_rate"]) == pytest.approx(lr_schedules.peak_learning_rate(s), rel=1e-12)


def test_scaling_points_are_the_csv_runs(sweeps, reference):
    spec = "scaling"
    made, settings, rows = _spec_and_csv(spec, sweeps, reference)

    def matches(row, s):
        phases = [int(b) for b in row["batch_sizes"].split()]
        annealing = row["variant"] in ("step_decay", "anneal_batch")
        if annealing:
            grows = [min(s.batch_size * s.decay_factor**i, s.max_batch_size or math.inf)
                     for i in range(len(s.decay_boundaries) + 1)]
            shape = (s.decay == "step" and s.anneal_batch == (row["variant"] == "anneal_batch")
                     and phases == (grows if s.anneal_batch else [s.batch_size] * len(grows)))
        else:
            shape = s.decay == "cosine" and not s.anneal_batch and phases == [s.batch_size]
        return (shape and int(row["batch_size"]) == s.batch_size and row["lr_scaling"] == s.lr_scaling
                and _peak(row, s) and float(row["warmup_epochs"]) == s.warmup_epochs
                and row["rescale_recipe"] == str(s.rescale_recipe) and int(row["num_epochs"]) == s.num_epochs
                and float(row["target_accuracy"]) == s.target_accuracy and s.dataset == "mnist1d/large"
                and s.evals_per_epoch == 8)  # steps to a target resolved to 1/8 epoch, as measured

    used = _point_of_each_row(spec, settings, rows, matches)
    assert sorted(used) == list(range(len(made.points))), f"{spec}: points not in the CSV"


def test_lars_points_are_the_csv_runs(sweeps, reference):
    spec = "lars_vs_sgd"
    made, settings, rows = _spec_and_csv(spec, sweeps, reference)

    def matches(row, s):
        return (row["dataset"] == s.dataset and row["optimizer"] == s.optimizer
                and int(row["batch_size"]) == s.batch_size
                and float(row["base_learning_rate"]) == s.base_learning_rate
                and float(row["warmup_epochs"]) == s.warmup_epochs and int(row["num_epochs"]) == s.num_epochs
                and _peak(row, s) and float(row["bn_momentum"]) == s.bn_momentum and not s.rescale_recipe
                and _float(row["trust_coefficient"]) == (s.trust_coefficient if s.optimizer == "lars" else None)
                and s.evals_per_epoch == 1)  # "best" is the best of the 8 epoch-end evaluations

    used = _point_of_each_row(spec, settings, rows, matches)
    assert sorted(used) == list(range(len(made.points))), f"{spec}: points not in the CSV"


def test_norms_points_are_the_csv_runs(sweeps, reference):
    spec = "norms"
    made, settings, rows = _spec_and_csv(spec, sweeps, reference)

    def matches(row, s):
        return (row["norm"] == s.norm and int(row["batch_size"]) == s.batch_size and _peak(row, s)
                and int(row["num_epochs"]) == s.num_epochs and s.dataset == "mnist1d/original"
                and not s.rescale_recipe and s.bn_momentum == 0.9 and s.evals_per_epoch == 1)

    used = _point_of_each_row(spec, settings, rows, matches)
    assert sorted(used) == list(range(len(made.points))), f"{spec}: points not in the CSV"


def test_norms_loop_calls_are_the_old_ones(sweeps, reference):
    """Why steps_per_loop may differ: one evaluation an epoch stops every loop call at most an
    epoch (ceil(N / B) updates) in, in both; the old value was exactly that, the spec's is not less."""
    spec = "norms"
    _, settings = sweeps[spec]
    old = {(r["config"]["norm"], r["config"]["batch_size"]): r["config"] for r in reference[spec]}
    for s in settings:
        epoch = -(-TRAIN_EXAMPLES[s.dataset] // s.batch_size)
        assert s.evals_per_epoch == 1 and old[s.norm, s.batch_size]["steps_per_loop"] == epoch
        assert s.steps_per_loop >= epoch


@pytest.mark.parametrize("spec", SPECS)
def test_the_docstring_gives_the_command_and_the_result_page(sweeps, spec):
    _, settings = sweeps[spec]
    found, doc = read_spec(spec)
    assert f"python tools/sweep.py --spec=tools/sweeps/{spec}.py --sweep_dir=" in doc
    assert "--config." not in doc  # everything the runs need is in the spec's overrides
    assert f"docs/results/{RESULTS[spec]}.md" in doc
    expected = {"scaling": [0.97, 0.99], "lars_vs_sgd": [0.95, 0.97], "norms": [0.9, 0.95]}[spec]
    assert found["targets"] == expected
    if spec == "scaling":  # the old study's two targets, its runs' own target_accuracy the first
        assert {s.target_accuracy for s in settings} == {0.97}
