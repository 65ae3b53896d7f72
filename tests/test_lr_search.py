"""The LR search (kbatch.study.lr_search, tools/lr_search.py): points along lr = cB and wildcards
off it, the best rate per batch, the fitted exponent against NumPy's own least squares, the
regimes of Shallue et al. on curves built to have them, and the tool end to end."""

import json
import math

import numpy as np
import pytest
from run_tool import run_tool

from kbatch.study import grid, lr_search, nqm, theory


def test_points_walk_the_lines_and_wildcards_stay_in_range():
    rates = {"lars": [0.05, 0.1], "momentum": [0.025]}
    points = lr_search.points(rates, [64, 256], wildcards=3, seed=1)
    on_line = [p for p in points if p["base_learning_rate"] in rates[p["optimizer"]]]
    assert len(on_line) == 2 * 2 + 2 * 1  # every line at every batch
    for p in points:
        low, high = min(rates[p["optimizer"]]) / 2, 2 * max(rates[p["optimizer"]])
        assert low <= p["base_learning_rate"] <= high
    wild = [p for p in points if p not in on_line]
    assert len(wild) >= 2 * 2 * 3 - 1 and len({p["base_learning_rate"] for p in wild}) > 3
    assert points == lr_search.points(rates, [64, 256], wildcards=3, seed=1)  # seeded
    assert grid.expand({}, points)  # distinct runs, valid fields


def test_the_exponent_and_its_error_are_numpys_least_squares():
    batches = np.array([32, 64, 128, 256, 512, 1024])
    noise = np.array([0.1, -0.05, 0.08, -0.12, 0.03, 0.02])
    rates = 0.001 * batches**0.8 * np.exp(noise)
    alpha, error = lr_search.fit_exponent(batches, rates)
    (slope, _), covariance = np.polyfit(np.log(batches), np.log(rates), 1, cov="unscaled")
    residual = np.log(rates) - np.polyval([slope, _], np.log(batches))
    assert alpha == pytest.approx(slope)
    assert error == pytest.approx(math.sqrt(covariance[0, 0] * residual @ residual / (len(batches) - 2)))
    assert lr_search.fit_exponent([64, 128], [0.1, 0.2]) == (pytest.approx(1.0), None)


def test_the_best_rate_is_the_fewest_steps_and_unfinished_points_never_win():
    def row(batch, rate, steps, final, state="finished"):
        return {
            "optimizer": "sgd",
            "batch_size": batch,
            "base_learning_rate": rate,
            "peak_learning_rate": rate,
            "steps_to_0.9": steps,
            "final_eval_accuracy": final,
            "state": state,
        }

    table = [
        row(64, 0.1, 50, 0.95),
        row(64, 0.2, 40, 0.93),
        row(64, 0.4, None, None, "diverged"),
        row(64, 0.05, 40, 0.96),
        row(128, 0.2, 30, 0.9),
    ]
    best = lr_search.best_rows(table, ["optimizer"], "steps_to_0.9")[("sgd",)]
    assert best[64]["base_learning_rate"] == 0.05  # 40 steps, the tie broken by the higher final accuracy
    final = lr_search.best_rows(table, ["optimizer"], "final_eval_accuracy")[("sgd",)]
    assert final[64]["base_learning_rate"] == 0.05 and final[128]["base_learning_rate"] == 0.2
    assert lr_search.at_edge(table, best[64], ["optimizer"])  # 0.05 is the smallest tried
    assert not lr_search.at_edge(table, table[0], ["optimizer"])


def test_the_three_regimes_are_named_where_a_curve_has_them():
    s_min, e_min = 100, 200_000  # S(B) = S_min + E_min / B: B_crit = 2,000 (McCandlish et al. 2018)
    curve = {b: s_min + e_min / b for b in (16, 32, 64, 1024, 2048, 65536, 131072)}
    names = {(a, b): name for a, b, name in lr_search.regimes(curve)}
    assert names[16, 32] == "perfect" and names[1024, 2048] == "diminishing" and names[65536, 131072] == "none"
    assert names[64, 1024] == "perfect"  # 0.09x over four doublings: 0.55x per doubling


def test_the_tool_searches_reports_alpha_and_refuses_bad_input(tmp_path):
    sweep_dir = tmp_path / "s"
    base = [
        "--config.dataset=mnist1d/original",
        "--config.num_epochs=1",
        "--config.warmup_epochs=0",
        "--config.strategy=one_device",
        "--config.evals_per_epoch=2",
    ]
    flags = [
        f"--sweep_dir={sweep_dir}",
        *base,
        "--batch_sizes=256,1024",
        "--lrs=momentum:0.05,0.2",
        "--wildcards=1",
        "--targets=0.15",
        f"--output_prefix={tmp_path / 'out'}",
        f"--theory_run={_theory_run(tmp_path / 'theory')}",
    ]
    run = run_tool("lr_search.py", flags, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    text = (tmp_path / "out_lr.md").read_text()
    assert "| optimizer=momentum | 256 |" in text and "| optimizer=momentum | 1024 |" in text and "alpha" in text
    assert "NQM (momentum), lambda_max 18, B_simple 350, fitted at B=256" in text
    for suffix in (".csv", ".md", ".png", "_lr.png"):
        assert (tmp_path / f"out{suffix}").stat().st_size > 200
    assert (sweep_dir / "lr_search.md").read_text() == text
    again = run_tool("lr_search.py", flags)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr.strip().splitlines()[-1]
    lines = [
        run_tool("lr_search.py", [f"--sweep_dir={tmp_path / 'n'}", *base, *extra]).stderr.strip().splitlines()[-1]
        for extra in (["--batch_sizes=256"], ["--batch_sizes=256", "--lrs=momentum:0.1", "--grid=batchsize=1,2"])
    ]
    assert lines[0].startswith("lr_search: --lrs:") and "empty" in lines[0]
    assert "config.batchsize: no such field" in lines[1]
    foreign = run_tool(
        "lr_search.py",
        [f"--sweep_dir={sweep_dir}", *base, "--config.seed=1", "--batch_sizes=256", "--lrs=momentum:0.05"],
    )
    assert foreign.returncode == 2 and "belongs to another sweep" in foreign.stderr.strip().splitlines()[-1]
    unreached = run_tool(
        "lr_search.py",
        [
            f"--sweep_dir={sweep_dir}",
            *base,
            "--batch_sizes=256,1024",
            "--lrs=momentum:0.05,0.2",
            "--wildcards=1",
            "--targets=0.999",
            "--report_only",
        ],
    )
    assert unreached.returncode == 0, unreached.stderr[-2000:]
    assert "No run reached 99.9%: no best rate by steps and no alpha" in unreached.stdout
    assert "| group | alpha" not in (sweep_dir / "lr_search.md").read_text()
    assert "No artists with labels" not in unreached.stderr and "legend" not in unreached.stderr


def _theory_run(folder, reached_step=8):
    """A finished run's result.json with sharpness and noise-scale points (as MeasureSharpness and
    MeasureNoiseScale write them) and the step where it reached 25%."""
    history = [
        {"step": s, "epoch": s / 16, "eval_accuracy": 0.1 + 0.2 * (s >= reached_step), "eval_loss": 2.0 - s / 16}
        for s in (4, 8, 12, 16)
    ]
    folder.mkdir()
    (folder / "result.json").write_text(
        json.dumps(
            {
                "history": history,
                "sharpness": [{"step": s, "sharpness": 10.0 + s} for s in (4, 8, 16)],
                "noise_scale": [{"step": s, "b_simple": 50.0 * s} for s in (2, 7, 12)],
            }
        )
    )
    return folder


def test_the_theory_run_is_read_where_it_reached_the_target(tmp_path):
    result = json.loads((_theory_run(tmp_path / "run") / "result.json").read_text())
    assert theory.run_measurements(result, 0.25) == (18.0, 350.0, 1.5)  # step 8: sharpness at 8, noise at 7
    with pytest.raises(ValueError, match="never reached"):
        theory.run_measurements(result, 0.9)


def test_the_calibrated_nqm_takes_the_measured_steps_at_the_smallest_batch():
    model = nqm.fit(top_curvature=20.0, b_simple=300.0, initial_loss=2.0, dims=200)
    measured = {64: 400, 256: 150, 1024: 90}
    curve, target = theory.predicted_curve(model, "sgd", measured)
    assert curve[64] <= 400 < nqm.best_steps(model, "sgd", 64, target * 0.999)[0]  # the lowest target reached in time
    assert curve == {b: nqm.best_steps(model, "sgd", b, target)[0] for b in measured}


def test_a_long_point_keeps_its_name_when_its_tuples_come_back_as_lists():
    point = {
        "decay_boundaries": (2.0, 4.0, 6.0),
        "batch_sizes": (512, 1024),
        "optimizer": "lars",
        "exclude_from_weight_decay": ("bias", "gamma", "beta", "moving"),
        "base_learning_rate": 0.123456,
        "warmup_epochs": 2.5,
        "virtual_batch_size": 16,
    }
    assert len(grid.run_name(point)) == grid.NAME_LIMIT  # shortened, with a hash of the whole
    assert grid.run_name(point) == grid.run_name(json.loads(json.dumps(point)))  # as sweep.json holds it
