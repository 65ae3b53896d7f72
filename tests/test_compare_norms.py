"""tools/compare_norms.py on a tiny grid: its CSV, markdown table and plot say what the runs did.

The tool is an absl script with flags of its own, so it runs in a subprocess (its flags must not
meet other tools' flags in this pytest process)."""

import csv
import json
import os
import re

import keras
import matplotlib.image
import numpy as np
import pytest

from kbatch.layers import SwitchableNormalization
from run_tool import run_tool

NORMS, BATCHES = ("batch", "switchable"), (512, 1024)


def _run(*flags):
    return run_tool("compare_norms.py", flags)


def _outputs(directory):
    return {"csv": str(directory / "norms.csv"), "markdown": str(directory / "norms.md"),
            "plot": str(directory / "norms.png")}


def _flags(directory, **extra):
    flags = {"norms": ",".join(NORMS), "batch_sizes": ",".join(map(str, BATCHES)),
             "dataset": "mnist1d/original", "num_epochs": 1, "warmup_epochs": 0,
             "runs_dir": str(directory / "runs"), **_outputs(directory), **extra}
    return [f"--{key}={value}" for key, value in flags.items()]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    directory = tmp_path_factory.mktemp("compare_norms")
    result = _run(*_flags(directory))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(directory / "norms.csv") as f:
        rows = {(r["norm"], int(r["batch_size"])): r for r in csv.DictReader(f)}
    return directory, result.stdout, rows


def _result(directory, norm, batch):
    with open(directory / "runs" / f"{norm}-b{batch}" / "result.json") as f:
        return json.load(f)


def test_csv_rows_are_the_runs_results(sweep):
    directory, _, rows = sweep
    assert set(rows) == {(n, b) for n in NORMS for b in BATCHES}
    for (norm, batch), row in rows.items():
        result = _result(directory, norm, batch)
        assert float(row["final_eval_accuracy"]) == result["final_eval_accuracy"]
        assert float(row["best_eval_accuracy"]) == result["best_eval_accuracy"]
        assert int(row["steps"]) == result["steps"] == -(-4000 // batch)  # one epoch of mnist1d/original
        assert float(row["peak_learning_rate"]) == pytest.approx(0.05 * batch / 128)  # linear rule


def test_switchable_importance_is_the_mean_softmax_of_the_saved_model(sweep):
    directory, _, rows = sweep
    for batch in BATCHES:
        model = keras.models.load_model(directory / "runs" / f"switchable-b{batch}" / "model.keras")
        norms = [layer for layer in model.layers if isinstance(layer, SwitchableNormalization)]
        assert len(norms) == 3
        for stat, logits_name in (("mean", "mean_logits"), ("variance", "variance_logits")):
            logits = np.stack([getattr(layer, logits_name).numpy() for layer in norms])
            softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            expected = softmax.mean(axis=0)  # modes in order batch, layer, instance
            got = [float(rows["switchable", batch][f"{stat}_{mode}"]) for mode in ("batch", "layer", "instance")]
            np.testing.assert_allclose(got, expected, atol=1e-6)
    for batch in BATCHES:  # other norms have no importance weights
        assert rows["batch", batch]["mean_batch"] == ""


def test_markdown_table_shows_each_runs_final_accuracy(sweep):
    directory, _, rows = sweep
    text = (directory / "norms.md").read_text()
    for norm in NORMS:
        line = re.search(rf"^\| {norm} \|(.*)\|$", text, re.MULTILINE)
        cells = [float(c) for c in line.group(1).split("|")]
        expected = [100 * float(rows[norm, b]["final_eval_accuracy"]) for b in BATCHES]
        np.testing.assert_allclose(cells, expected, atol=0.05 + 1e-9)
    for batch in BATCHES:  # the importance table: one row per batch, mean weights first
        line = re.search(rf"^\| {batch} \|(.*)\|$", text, re.MULTILINE)
        cells = [float(c) for c in line.group(1).split("|")]
        assert cells[0] == pytest.approx(float(rows["switchable", batch]["mean_batch"]), abs=5e-4)


def test_plot_draws_one_line_per_norm(sweep):
    directory, _, _ = sweep
    image = matplotlib.image.imread(directory / "norms.png")[..., :3]
    for color in ("#1f77b4", "#ff7f0e"):  # matplotlib's first two line colors: one per norm
        rgb = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        assert (np.abs(image - rgb).max(axis=-1) < 0.02).sum() > 50, color


def test_progress_lines_count_the_runs(sweep):
    _, stdout, _ = sweep
    assert [line.split("]")[0] for line in stdout.splitlines() if line.startswith("[")] == [
        "[1/4", "[2/4", "[3/4", "[4/4"]


def test_refuses_to_overwrite_then_overwrites_from_the_finished_runs(sweep):
    directory, _, _ = sweep
    before = {k: open(p, "rb").read() for k, p in _outputs(directory).items()}
    refused = _run(*_flags(directory))
    assert refused.returncode == 2
    assert "--csv=" in refused.stderr and "refusing to overwrite" in refused.stderr
    assert before == {k: open(p, "rb").read() for k, p in _outputs(directory).items()}
    # --overwrite: the finished runs are read back, not trained again, so the CSV is the same.
    again = _run(*_flags(directory), "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    assert open(directory / "norms.csv", "rb").read() == before["csv"]


def test_a_run_folder_of_other_settings_is_refused_not_read(sweep):
    """`<norm>-b<batch>` does not name the epochs: a finished 1-epoch run must not stand in for
    a 2-epoch one. Refused before any run, the outputs untouched."""
    directory, _, _ = sweep
    before = {k: open(p, "rb").read() for k, p in _outputs(directory).items()}
    refused = _run(*_flags(directory, num_epochs=2), "--overwrite")
    assert refused.returncode == 2 and "holds a run with a different config" in refused.stderr
    assert "num_epochs: 1 -> 2" in refused.stderr
    assert before == {k: open(p, "rb").read() for k, p in _outputs(directory).items()}


@pytest.mark.parametrize("flag, message", [
    ("--norms=batch,weight", "--norms"),
    ("--batch_sizes=0,8", "--batch_sizes"),
    ("--batch_sizes=8,x", "--batch_sizes"),
    ("--norms=ghost_batch", "--virtual_batch_size"),
    ("--warmup_epochs=1", "--warmup_epochs"),
    ("--batch_sizes=8192", "--batch_sizes"),  # more than mnist1d/original's 4000 examples
])
def test_bad_flags_are_refused_before_any_run(tmp_path, flag, message):
    result = _run(*_flags(tmp_path), flag)
    assert result.returncode == 2 and message in result.stderr
    assert not os.path.exists(tmp_path / "runs") and not os.path.exists(tmp_path / "norms.csv")
