"""The reports of kbatch.study called directly (tests/test_*_tool.py and test_staleness_report.py
run the tools): critical_batch's CSV reading and fit, staleness_report's table and sharpness_report's
table, each against figures computed here."""

import json

import numpy as np
import pytest

from kbatch.study import critical_batch, sharpness_report, staleness_report

pytestmark = pytest.mark.fast


def _write_sweep(path, rows):
    columns = list(rows[0])
    path.write_text("\n".join([",".join(columns), *(",".join(str(r[c]) for c in columns) for r in rows)]) + "\n")
    return path


def test_the_fewest_steps_at_each_batch_among_the_kept_rows(tmp_path):
    rows = [
        {"batch_size": b, "optimizer": o, "steps_to_0.9": s}
        for b, o, s in [(64, "sgd", 900), (64, "sgd", 700), (128, "sgd", 400), (128, "lars", 100), (256, "sgd", "")]
    ]
    sweep = _write_sweep(tmp_path / "r.csv", rows)
    assert critical_batch.read_curves(str(sweep), ["optimizer=sgd"]) == {0.9: {64: 700, 128: 400}}
    assert critical_batch.read_curves(str(sweep), []) == {0.9: {64: 700, 128: 100}}
    assert critical_batch.same_cell("1.0", "1") and not critical_batch.same_cell("lars", "sgd")
    with pytest.raises(ValueError, match="the CSV has no column 'lr'"):
        critical_batch.read_curves(str(sweep), ["lr=1"])
    with pytest.raises(ValueError, match="no target reached at two batch sizes"):
        critical_batch.read_curves(str(sweep), ["optimizer=lars"])


def test_the_report_fits_b_crit_and_reads_b_simple_where_the_run_reached_the_target(tmp_path):
    s_min, e_min = 200.0, 51200.0  # McCandlish et al.'s S(B) = S_min + E_min / B: B_crit = 256
    rows = [{"batch_size": b, "steps_to_0.9": int(s_min + e_min / b)} for b in (64, 128, 256, 512, 1024)]
    sweep = _write_sweep(tmp_path / "r.csv", rows)
    run = tmp_path / "run"
    run.mkdir()
    history = [{"step": 100, "epoch": 1.0, "eval_accuracy": 0.8}, {"step": 200, "epoch": 2.0, "eval_accuracy": 0.95}]
    noise = [{"step": s, "b_simple": b, "global_batch_size": 64} for s, b in ((90, 30.0), (210, 120.0))]
    (run / "result.json").write_text(
        json.dumps(
            {"history": history, "noise_scale": noise, "global_batch_size": 64, "examples_seen": 64 * 300, "epochs": 3}
        )
    )
    text = critical_batch.report(str(sweep), [], str(run), str(tmp_path / "c.md"), str(tmp_path / "c.png"))
    row = text.splitlines()[2].split("|")
    assert row[5].strip() == f"**{e_min / s_min:,.0f}**" and row[6].strip() == "120 (epoch 2.00)"
    assert row[7].strip() == f"{120 / (e_min / s_min):.2f}" and (tmp_path / "c.png").stat().st_size > 0
    with pytest.raises(ValueError, match="--noise_run=.*must be the model_dir of a finished run"):
        critical_batch.report(str(sweep), [], str(tmp_path / "none"), str(tmp_path / "d.md"), str(tmp_path / "d.png"))
    assert not (tmp_path / "d.md").exists()


def test_the_staleness_table_has_each_runs_shares_mean_and_max(tmp_path):
    counts = np.array([50, 30, 10, 5, 3, 2])
    asynchronous = {
        "steps": 100,
        "final_eval_accuracy": 0.9,
        "best_eval_accuracy": 0.91,
        "staleness": {"counts": counts.tolist(), "mean": float((np.arange(6) * counts).sum() / 100), "max": 5},
    }
    synchronous = {"steps": 40, "final_eval_accuracy": 0.95, "best_eval_accuracy": 0.96}
    rows = [
        line.split("|")[1:-1]
        for line in staleness_report.table([("ps", asynchronous), ("sync", synchronous)]).splitlines()[2:]
    ]
    shares = [*(counts[:4] / 100), counts[4:].sum() / 100]
    assert [c.strip() for c in rows[0][3:]] == [
        "100",
        f"{(np.arange(6) * counts).sum() / 100:.2f}",
        "5",
        *(f"{100 * s:.1f}%" for s in shares),
    ]
    assert [c.strip() for c in rows[1][3:]] == ["40", "0.00", "0", "100.0%", "0.0%", "0.0%", "0.0%", "0.0%"]
    assert staleness_report.delayed_by(3, 10) == {"counts": [0, 0, 0, 10], "mean": 3.0, "max": 3}
    with pytest.raises(ValueError, match="'a' is not LABEL=MODEL_DIR"):
        staleness_report.report(["a"], str(tmp_path / "s.md"), str(tmp_path / "s.png"))
    assert not (tmp_path / "s.md").exists()


def test_the_sharpness_table_has_the_gap_and_the_peak_epoch():
    row = {
        "run": "b256",
        "batch": 256,
        "lr_scaling": "linear",
        "warmup_epochs": 2.0,
        "peak_lr": 0.4,
        "test": 0.91,
        "train": 0.985,
        "final_sharpness": 12.5,
        "peak_lr_sharpness": 3.9,
        "peak_step": 300,
        "bound": 3.8,
        "steps_per_epoch": 100.0,
    }
    cells = [c.strip() for c in sharpness_report.table([row]).splitlines()[2].split("|")[1:-1]]
    assert cells == [
        "b256",
        "256",
        "linear, 2",
        "0.4",
        "91.00",
        "98.50",
        f"{100 * (0.985 - 0.91):+.2f}",
        "12.5",
        "3.9 (3.0)",
        "3.80",
    ]
    with pytest.raises(ValueError, match="--runs: must name finished runs"):
        sharpness_report.report(["/nonexistent"], "unused.md", "unused.png")


def test_the_throughput_tables_are_the_timings_their_fit_and_the_wall_time(tmp_path):
    from kbatch.diagnostics import update_time
    from kbatch.study import throughput, throughput_report

    timings = {b: [2e-3 + 1e-5 * b, 2e-3 + 1e-5 * b] for b in (16, 32, 64)}  # T0 = 2 ms, k = 0.01 ms, gamma = 1
    fit = update_time.fit_update_time(list(timings), [t[0] for t in timings.values()])
    rows = throughput.wall_time_to_target(fit, {16: 1000, 64: None})
    throughput_report.write_csv(tmp_path / "t.csv", timings, fit, {r["batch"]: r for r in rows}, "steps_to_0.9")
    table = [line.split(",") for line in (tmp_path / "t.csv").read_text().splitlines()]
    assert table[0][-2:] == ["steps_to_0.9", "seconds_to_target"]
    assert [float(r[2]) for r in table[1:]] == pytest.approx([b / (2e-3 + 1e-5 * b) for b in (16, 32, 64)], rel=1e-5)
    assert table[1][-2:] == ["1000", f"{1000 * (2e-3 + 1e-5 * 16):.6g}"] and table[3][-2:] == ["", ""]
    lines = throughput_report.wall_table(rows, throughput.fastest(rows), [16, 32, 64], "steps_to_0.9")
    assert f"Fastest to target: **batch 16**, {1000 * (2e-3 + 1e-5 * 16):,.2f} s." in lines[-1]
    assert any(line.startswith("| 64 | - |") and line.endswith("| not reached |") for line in lines)
