"""tools/scaling_study.py on a tiny grid: its CSV rows are the runs' own results, the efficiency is
steps(B0) B0 / (steps(B) B) of those rows, the 1x run is shared where the variants agree, the
annealing pair grows the batch, the plot is a PNG, and bad flags stop it before any run.

The tool is an absl script with flags of its own, so it runs in a subprocess."""

import csv
import json
import math
import os
import re

import pytest

from run_tool import run_tool

B0 = 100


def _run(directory, *extra):
    flags = ["--dataset=mnist1d/original", "--variants=c,e", "--multipliers=1,4", f"--base_batch_size={B0}",
             "--base_learning_rate=0.1", "--num_epochs=1", "--epochs_per_doubling=0.125", "--evals_per_epoch=4",
             "--target_accuracy=0.2", "--late_target_accuracy=0.4", f"--anneal_batch_size={B0}", "--anneal_boundaries=0.5",
             f"--runs_dir={directory / 'runs'}", f"--csv={directory / 's.csv'}",
             f"--markdown={directory / 's.md'}", f"--plot={directory / 's.png'}", *extra]
    return run_tool("scaling_study.py", flags)


def _rows(directory):
    with open(directory / "s.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    directory = tmp_path_factory.mktemp("scaling_study")
    result = _run(directory)
    assert result.returncode == 0, result.stderr[-3000:]
    return directory, result.stdout


def _optional(text, kind):
    return None if text == "" else kind(text)


def test_each_csv_row_is_its_runs_result_json(sweep):
    directory, _ = sweep
    rows = _rows(directory)
    assert [(r["variant"], r["multiplier"]) for r in rows] == [
        ("c", "1"), ("c", "4"), ("e", "1"), ("e", "4"), ("step_decay", ""), ("anneal_batch", "")]
    for row in rows:
        with open(os.path.join(row["model_dir"], "result.json")) as f:
            result = json.load(f)
        for field in ("final_eval_accuracy", "best_eval_accuracy", "target_accuracy"):
            assert float(row[field]) == result[field]
        assert int(row["steps"]) == result["steps"]
        assert _optional(row["steps_to_target"], int) == result["steps_to_target"]
        assert _optional(row["epochs_to_target"], float) == result["epochs_to_target"]
        assert row["batch_sizes"].split() == [str(b) for b in result["batch_sizes"]]
    for row in rows[:4]:  # one epoch of mnist1d/original's 4,000 examples at one batch
        assert int(row["steps"]) == math.ceil(4000 / int(row["batch_size"]))


def test_efficiency_is_steps_times_batch_against_the_variants_1x_row(sweep):
    directory, _ = sweep
    rows = {(r["variant"], r["multiplier"]): r for r in _rows(directory)}
    checked = 0
    for variant in ("c", "e"):
        base = rows[variant, "1"]
        for multiplier in ("1", "4"):
            row = rows[variant, multiplier]
            if row["steps_to_target"] and base["steps_to_target"]:
                expected = int(base["steps_to_target"]) * B0 / (int(row["steps_to_target"]) * int(row["batch_size"]))
                assert float(row["efficiency"]) == pytest.approx(expected)
                checked += 1
            else:
                assert row["efficiency"] == ""
        assert float(base["efficiency"]) == 1.0
    assert checked >= 2
    assert rows["step_decay", ""]["efficiency"] == rows["anneal_batch", ""]["efficiency"] == ""


def test_late_target_is_read_from_each_runs_evaluation_history(sweep):
    directory, _ = sweep
    rows = {(r["variant"], r["multiplier"]): r for r in _rows(directory)}
    reached = 0
    for (variant, multiplier), row in rows.items():
        with open(os.path.join(row["model_dir"], "result.json")) as f:
            history = json.load(f)["history"]
        expected = [e["step"] for e in history if e["eval_accuracy"] >= 0.4][:1]
        assert ([int(row["steps_to_late_target"])] if row["steps_to_late_target"] else []) == expected
        assert float(row["late_target_accuracy"]) == 0.4
        reached += bool(expected)
        base = rows.get((variant, "1"))
        if multiplier and expected and base["steps_to_late_target"]:
            assert float(row["late_efficiency"]) == pytest.approx(
                int(base["steps_to_late_target"]) * B0 / (expected[0] * int(row["batch_size"])))
    assert reached >= 2
    assert "Scaling efficiency at 40%" in (directory / "s.md").read_text()


def test_variants_set_the_rule_warmup_and_recipe(sweep):
    """At 1x (k = 1) c and e are one run; at 4x c keeps BN momentum 0.9, e rescales it to
    0.9**4 (Busbridge et al. 2023), both with the linear rule and a warmup of 2 doublings x 1/8."""
    directory, stdout = sweep
    rows = {(r["variant"], r["multiplier"]): r for r in _rows(directory)}
    assert rows["c", "1"]["model_dir"] == rows["e", "1"]["model_dir"] and "(shared run)" in stdout
    for variant, rescale in (("c", "False"), ("e", "True")):
        row = rows[variant, "4"]
        assert float(row["peak_learning_rate"]) == pytest.approx(0.1 * 4)
        assert float(row["warmup_epochs"]) == pytest.approx(0.25)
        assert row["rescale_recipe"] == rescale
        with open(os.path.join(row["model_dir"], "config.json")) as f:
            config = json.load(f)
        assert (config["lr_scaling"], config["rescale_recipe"], config["warmup_epochs"]) == ("linear", rescale == "True", 0.25)
    import keras

    for variant, momentum in (("c", 0.9), ("e", 0.9**4)):
        model = keras.models.load_model(os.path.join(rows[variant, "4"]["model_dir"], "model.keras"))
        momenta = [layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert momenta == pytest.approx([momentum] * 3)


def test_annealing_grows_the_batch_where_its_twin_divides_the_lr(sweep):
    """Smith et al. 2018: batch 100 -> 400 at epoch 0.5 instead of lr / 4 (the twin: two phases
    of batch 100); the same examples in fewer updates, 20 + ceil(2000 / 400) = 25 against 40."""
    directory, _ = sweep
    rows = {r["variant"]: r for r in _rows(directory)}
    assert rows["step_decay"]["batch_sizes"] == "100 100" and int(rows["step_decay"]["steps"]) == 40
    assert rows["anneal_batch"]["batch_sizes"] == "100 400" and int(rows["anneal_batch"]["steps"]) == 25
    with open(os.path.join(rows["step_decay"]["model_dir"], "result.json")) as f:
        lrs = {e["step"]: e["learning_rate"] for e in json.load(f)["history"]}
    assert lrs[40] == pytest.approx(lrs[20] / 4)


def test_markdown_shows_the_rows(sweep):
    directory, _ = sweep
    rows = {(r["variant"], r["multiplier"]): r for r in _rows(directory)}
    text = (directory / "s.md").read_text()
    line = re.search(r"^\| \(e\) linear \+ warmup \+ rescaled recipe \|(.*)\|$", text, re.MULTILINE)
    cells = [float(c) for c in line.group(1).split("|")]
    assert cells == pytest.approx([100 * float(rows["e", m]["final_eval_accuracy"]) for m in ("1", "4")], abs=0.051)
    assert re.search(r"^\| anneal_batch \| 100 400 \| 0.1 \| 25 \|", text, re.MULTILINE)


def test_plot_is_a_png(sweep):
    directory, _ = sweep
    with open(directory / "s.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_refuses_to_overwrite_then_rereads_the_finished_runs(sweep):
    directory, _ = sweep
    before = (directory / "s.csv").read_bytes()
    refused = _run(directory)
    assert refused.returncode == 2 and "--csv=" in refused.stderr and "refusing to overwrite" in refused.stderr
    again = _run(directory, "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (directory / "s.csv").read_bytes() == before  # read back from result.json, not retrained


def test_a_run_folder_of_other_settings_is_refused_before_any_run(sweep):
    directory, _ = sweep
    before = (directory / "s.csv").read_bytes()
    runs = directory / "runs"
    # Give the 1x run's folder the config of another sweep, as a reused --runs_dir would.
    folder = next(p for p in runs.iterdir() if p.name.startswith(f"b{B0}-"))
    saved = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**saved, "seed": 7}))
    try:
        refused = _run(directory, "--overwrite")
    finally:
        (folder / "config.json").write_text(json.dumps(saved))
    assert refused.returncode == 2 and "holds a run with a different config" in refused.stderr
    assert (directory / "s.csv").read_bytes() == before


@pytest.mark.parametrize("flag, message", [
    ("--variants=c,f", "--variants"),
    ("--multipliers=4,16", "--multipliers"),
    ("--multipliers=1,x", "--multipliers"),
    ("--warmup_epochs=1", "--warmup_epochs"),
    ("--late_target_accuracy=1.5", "--late_target_accuracy"),
    ("--target_accuracy=1.5", "--target_accuracy"),
    ("--anneal_boundaries=0.5,0.25", "--anneal_boundaries"),
    ("--anneal_factor=1", "--anneal_factor"),
    ("--multipliers=1,64", "larger than the 4000"),  # batch 6400 > mnist1d/original's examples
])
def test_bad_flags_are_refused_before_any_run(tmp_path, flag, message):
    result = _run(tmp_path, flag)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "s.csv").exists()
