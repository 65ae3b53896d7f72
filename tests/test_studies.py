"""kbatch.study.studies, the sweep and the LR search as a notebook calls them (no tools/): a
two-point sweep trained in this process writes the report the tool writes (CSV, markdown, PNG,
HParams) and is read back, not trained again, when called a second time; the LR search's
analysis of it writes lr_search.md and .png; lr_search.summary_markdown and theory.group_curves
on rows made by hand."""

import csv
import json
import os

import pytest

from kbatch.configs import mnist1d_cnn
from kbatch.study import lr_search, probe_report, studies, sweep, theory

pytestmark = pytest.mark.fast


def _base():
    config = mnist1d_cnn.get_config()
    config.dataset, config.num_epochs, config.evals_per_epoch, config.warmup_epochs = "mnist1d/original", 1, 1, 0.0
    return config


def test_a_sweep_from_python_trains_reports_and_is_read_back(tmp_path):
    lines = []
    table = studies.sweep(tmp_path / "s", _base(), {"batch_size": [512, 1024]}, targets=[0.2], log=lines.append)
    assert [row["state"] for row in table] == ["finished", "finished"]
    for name in ("report.csv", "report.md", "report.png", "tensorboard"):
        assert os.path.exists(tmp_path / "s" / name), name
    with open(tmp_path / "s" / "report.csv") as file:
        assert sorted(int(row["batch_size"]) for row in csv.DictReader(file)) == [512, 1024]
    assert lines[-1].startswith("sweep: 2 finished; report in ")
    again = []
    studies.sweep(tmp_path / "s", _base(), {"batch_size": [512, 1024]}, targets=[0.2], log=again.append)
    assert "2 points, 2 already done, 0 to run" in again[0] and len(again) == 2  # read back, nothing trained

    built = sweep.Sweep.open(tmp_path / "s")
    fits = studies.analyse_lr_search(built, [0.2], table, log=lines.append)
    assert list(fits) == [("momentum",)] and fits["momentum",][0] is not None
    assert (tmp_path / "s" / "lr_search.png").exists()
    assert (tmp_path / "s" / "lr_search.md").read_text().startswith("Best peak learning rate per batch")


def test_an_lr_search_of_a_contrastive_config_reads_the_linear_probes_accuracy(tmp_path):
    """A sweep of SimCLR on MNIST-1D: its runs' accuracy is the linear probe's (the task's
    monitor), so the steps to a target probe accuracy and the best rate per batch come out."""
    config = _base()
    config.task, config.probe_examples, config.projection_dims, config.optimizer = "contrastive", 500, (16,), "lars"
    config.base_batch_size, config.base_learning_rate, config.evals_per_epoch = 256, 0.3, 2
    fits = studies.lr_search(tmp_path / "s", config, {"lars": [0.3]}, [256, 512], [0.3], log=lambda line: None)
    with open(tmp_path / "s" / "report.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["state"] for row in rows] == ["finished", "finished"]
    for row, result in zip(rows, (_result(row) for row in rows)):
        assert (
            float(row["final_eval_accuracy"]) == result["final_eval_accuracy"] == result["history"][-1]["eval_accuracy"]
        )
        assert 0.3 < result["final_eval_accuracy"] and row["steps_to_0.3"]  # above chance (0.1) within an epoch
    assert fits["lars",][0] is not None and (tmp_path / "s" / "lr_search.md").exists()
    again = probe_report.rows(tmp_path / "s", examples=500)  # the saved models, probed as the runs did
    own = {row["name"]: float(row["final_eval_accuracy"]) for row in rows}
    assert {row["name"]: row["probe_500"] for row in again} == pytest.approx(own)


def _result(row):
    with open(os.path.join(row["model_dir"], "result.json")) as file:
        return json.load(file)


def test_a_bad_sweep_or_search_is_a_value_error_before_training(tmp_path):
    config = _base()
    with pytest.raises(ValueError, match="--processes=0"):
        studies.sweep(tmp_path / "s", config, {"batch_size": [64]}, processes=0)
    config.lr_scaling = "sqrt"
    with pytest.raises(ValueError, match="needs 'linear'"):
        studies.lr_search(tmp_path / "lr", config, {"momentum": [0.1]}, [64, 128], [0.9])
    assert not (tmp_path / "lr").exists()


def _row(batch, rate, steps, final):
    return {
        "optimizer": "sgd",
        "batch_size": batch,
        "base_learning_rate": rate,
        "peak_learning_rate": rate,
        "steps_to_0.9": steps,
        "final_eval_accuracy": final,
        "state": "finished",
    }


def test_the_search_summary_gives_the_best_rates_alpha_and_regimes():
    table = [_row(64, 0.1, 100, 0.95), _row(64, 0.2, 80, 0.93), _row(128, 0.2, 45, 0.96), _row(128, 0.4, 40, 0.94)]
    best = lr_search.best_rows(table, ["optimizer"], "steps_to_0.9")
    fits = {
        group: lr_search.fit_exponent(list(rows), [r["peak_learning_rate"] for r in rows.values()])
        for group, rows in best.items()
    }
    text = lr_search.summary_markdown(["optimizer"], 0.9, best, fits, lr_search.summary_rows(table, ["optimizer"], 0.9))
    assert "| optimizer=sgd | 64 | 0.2* | 80 | 0.1* | 95.00 |" in text  # both at an edge of the rates tried at 64
    assert "| optimizer=sgd | 1.00 | 64-128 perfect |" in text  # the best rate doubles with the batch: alpha 1
    empty = lr_search.summary_markdown(["optimizer"], 0.99, {}, {}, [])
    assert empty.rstrip().endswith(lr_search.no_target_line(0.99))


def test_no_theory_run_draws_no_curve():
    assert theory.group_curves(None, 0.9, ["optimizer"], {("sgd",): {}}) == ({}, [])
    assert theory.group_curves({"history": []}, 0.9, ["norm"], {}) == ({}, [])
