"""tools/lars_vs_sgd.py on a tiny grid: its CSV rows are the runs' own results, BN momentum is
rescaled once, the plot is a PNG, a second call resumes, and bad --runs entries stop it first.

The tool is an absl script with flags of its own, so it runs in a subprocess."""

import csv
import json
import math
import os

import keras
import matplotlib.image
import pytest

from run_tool import run_tool

RUNS = "momentum:1024:0.05:0,lars:1024:0.5:0.5"  # one epoch of mnist1d/original (4,000 examples)


def _run(directory, runs=RUNS, plot=True):
    flags = [f"--runs={runs}", "--dataset=mnist1d/original", "--num_epochs=1", "--strategy=one_device",
             f"--csv={directory / 'lars.csv'}", f"--model_root={directory / 'runs'}"]
    if plot:
        flags.append(f"--plot={directory / 'lars.png'}")
    return run_tool("lars_vs_sgd.py", flags)


def _rows(directory):
    with open(directory / "lars.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lars_vs_sgd")
    result = _run(directory)
    assert result.returncode == 0, result.stderr[-3000:]
    return directory, result.stdout


def test_each_csv_row_is_its_runs_result_json(sweep):
    directory, stdout = sweep
    rows = _rows(directory)
    assert [(r["optimizer"], r["base_learning_rate"], r["warmup_epochs"]) for r in rows] == [
        ("momentum", "0.05", "0.0"), ("lars", "0.5", "0.5")]
    for row in rows:
        with open(os.path.join(row["model_dir"], "result.json")) as f:
            result = json.load(f)
        for field in ("final_eval_accuracy", "best_eval_accuracy", "wall_seconds"):
            assert float(row[field]) == result[field]
        assert int(row["steps"]) == result["steps"] == math.ceil(4000 / 1024)
        assert float(row["peak_learning_rate"]) == pytest.approx(float(row["base_learning_rate"]) * 1024 / 128)
        assert f"{row['optimizer']} batch 1024" in stdout  # a progress line per run
    assert rows[1]["trust_coefficient"] == "0.001" and rows[0]["trust_coefficient"] == ""


def test_bn_momentum_is_rescaled_once_for_the_batch(sweep):
    """Busbridge et al. 2023: momentum 0.9 at batch 128 is 0.9**8 at batch 1024; the tool sets it
    and turns the trainer's own rescaling off, so the saved model holds 0.9**8, not 0.9**64."""
    directory, _ = sweep
    for row in _rows(directory):
        assert float(row["bn_momentum"]) == pytest.approx(0.9**8)
        with open(os.path.join(row["model_dir"], "config.json")) as f:
            assert json.load(f)["rescale_recipe"] is False
        model = keras.models.load_model(os.path.join(row["model_dir"], "model.keras"))
        momenta = [layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert len(momenta) == 3 and momenta == pytest.approx([0.9**8] * 3)


def test_plot_is_a_png(sweep):
    directory, _ = sweep
    with open(directory / "lars.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(directory / "lars.png").shape
    assert width > height > 100


def test_a_second_call_skips_the_runs_in_the_csv(sweep):
    directory, _ = sweep
    before = _rows(directory)
    result = _run(directory, plot=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("already in") == 2 and "training" not in result.stdout
    assert _rows(directory) == before


@pytest.mark.parametrize("bad", ["adam:1024:0.1", "lars:1024", "lars:0:0.1", "lars:many:0.1",
                                 "lars:1024:-0.5", "lars:1024:0.5:1"])
def test_a_bad_runs_entry_is_refused_before_any_run(tmp_path, bad):
    result = _run(tmp_path, runs=f"momentum:1024:0.05:0,{bad}")  # the good entry comes first
    assert result.returncode != 0
    assert f"--runs entry {bad!r}" in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lars.csv").exists()
