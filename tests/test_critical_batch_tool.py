"""tools/critical_batch.py: the fit from a sweep's report CSV (the best row at each batch, among
those --where keeps) recovers a critical batch built into it, B_simple is read where the noise run
reached each target, and bad input or a file a person made is refused in one line."""

import csv
import json
import re

import pytest
from run_tool import run_tool

FIELDS = ("name", "state", "optimizer", "batch_size", "steps_to_0.9", "steps_to_0.99")


def _study(tmp_path):
    """Steps S = S_min + E_min / B for the best optimizer (b); a worse one (a) takes 2x the steps,
    so its own critical batch is the same and its S_min twice as large."""
    rows = []
    for batch in (64, 256, 1024):
        for optimizer, factor in (("a", 2), ("b", 1)):
            early, late = factor * (100 + 50_000 / batch), factor * (200 + 400_000 / batch)
            rows.append(
                {
                    "name": f"{optimizer}{batch}",
                    "state": "finished",
                    "optimizer": optimizer,
                    "batch_size": batch,
                    "steps_to_0.9": round(early),
                    "steps_to_0.99": round(late) if batch < 1024 else "",
                }
            )
    path = tmp_path / "sweep.csv"
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    run = tmp_path / "noise_run"
    run.mkdir()
    history = [{"step": 10 * i, "epoch": i / 4, "eval_accuracy": 0.5 + 0.1 * i} for i in range(1, 6)]
    points = [{"step": 5 * i, "global_batch_size": 256, "b_simple": 40.0 * i} for i in range(1, 11)]
    (run / "result.json").write_text(
        json.dumps(
            {"history": history, "noise_scale": points, "global_batch_size": 256, "examples_seen": 12_800, "epochs": 1}
        )
    )
    return path, run


def _fit_cells(line):
    """(S_min, B_crit) of a row of the table."""
    s_min, b_crit = re.search(r"\| (\d+) \| [\d,]+ \| \*\*([\d,]+)\*\*", line).groups()
    return int(s_min), int(b_crit.replace(",", ""))


def test_the_fit_and_the_noise_scale_side_by_side(tmp_path):
    study, noise_run = _study(tmp_path)
    flags = [
        f"--sweep_csv={study}",
        f"--noise_run={noise_run}",
        f"--markdown={tmp_path / 't.md'}",
        f"--plot={tmp_path / 'p.png'}",
    ]
    run = run_tool("critical_batch.py", flags)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| 9")]
    early, late = rows
    s_min, b_crit = _fit_cells(early)
    assert s_min == 100 and abs(b_crit - 500) <= 5  # E_min / S_min = 50,000 / 100, from optimizer b (to rounding)
    # 90% is first reached at step 40 (accuracy 0.9): the nearest noise point, step 40, has B_simple 320.
    assert "320 (epoch 1.00)" in early and "| 0.64 |" in early
    assert "64: 6450, 256: 1762" in late  # the 1024 batch never reached 99%: left out of that fit
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_existing_outputs_are_refused(tmp_path):
    study, noise_run = _study(tmp_path)
    (tmp_path / "t.md").write_text("mine")
    run = run_tool(
        "critical_batch.py",
        [
            f"--sweep_csv={study}",
            f"--noise_run={noise_run}",
            f"--markdown={tmp_path / 't.md'}",
            f"--plot={tmp_path / 'p.png'}",
        ],
    )
    assert run.returncode != 0 and "--markdown=" in run.stderr and "refusing to overwrite" in run.stderr
    assert (tmp_path / "t.md").read_text() == "mine" and not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("noise_run", ["", "nowhere"])
def test_a_noise_run_that_is_not_a_finished_run_is_one_line(tmp_path, noise_run):
    study, _ = _study(tmp_path)
    run = run_tool(
        "critical_batch.py",
        [
            f"--sweep_csv={study}",
            f"--noise_run={noise_run}",
            f"--markdown={tmp_path / 't.md'}",
            f"--plot={tmp_path / 'p.png'}",
        ],
    )
    assert run.returncode != 0 and f"--noise_run={noise_run}: must be the model_dir of a finished run" in run.stderr


def test_where_keeps_only_the_rows_it_names(tmp_path):
    study, noise_run = _study(tmp_path)
    flags = [
        f"--sweep_csv={study}",
        f"--noise_run={noise_run}",
        f"--markdown={tmp_path / 't.md'}",
        f"--plot={tmp_path / 'p.png'}",
        "--where=optimizer=a",
    ]
    run = run_tool("critical_batch.py", flags)
    assert run.returncode == 0, run.stderr[-2000:]
    early = next(line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| 90%"))
    assert "64: 1762, 256: 591, 1024: 298" in early  # 2 (100 + 50,000 / B), rounded
    s_min, b_crit = _fit_cells(early)
    assert s_min == 200 and abs(b_crit - 500) <= 5  # S_min doubled, B_crit the same (to rounding)


@pytest.mark.parametrize(
    "where, message",
    [
        ("optimiser=a", "--where=optimiser=a: the CSV has no column 'optimiser'"),
        ("optimizer", "--where=optimizer: write FIELD=VALUE"),
        ("optimizer=adam", "no target reached at two batch sizes or more in the 0 rows kept"),
    ],
)
def test_a_bad_where_is_one_line_and_writes_nothing(tmp_path, where, message):
    study, noise_run = _study(tmp_path)
    run = run_tool(
        "critical_batch.py",
        [
            f"--sweep_csv={study}",
            f"--noise_run={noise_run}",
            f"--where={where}",
            f"--markdown={tmp_path / 't.md'}",
            f"--plot={tmp_path / 'p.png'}",
        ],
    )
    assert run.returncode != 0 and message in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "t.md").exists() and not (tmp_path / "p.png").exists()


def test_steps_that_halve_exactly_are_perfect_scaling_not_an_absurd_critical_batch(tmp_path):
    """S = 64,000 / B exactly: S_min is 0 to rounding, so B_crit = E_min / S_min is not measured."""
    _, noise_run = _study(tmp_path)
    path = tmp_path / "perfect.csv"
    path.write_text("batch_size,steps_to_0.9\n" + "".join(f"{b},{64_000 // b}\n" for b in (64, 128, 256, 512)))
    run = run_tool(
        "critical_batch.py",
        [
            f"--sweep_csv={path}",
            f"--noise_run={noise_run}",
            f"--markdown={tmp_path / 't.md'}",
            f"--plot={tmp_path / 'p.png'}",
        ],
    )
    assert run.returncode == 0, run.stderr[-2000:]
    row = next(line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| 90%"))
    assert "perfect scaling over the measured range: B_crit above the largest batch (512)" in row
    assert "**" not in row and not re.search(r"\d{1,3}(,\d{3}){3,}", row)  # no bold, no 10^9 or larger


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"steps": 10, "history": []}', "not a sweep's report CSV"),
        ("batch_size,steps_to_0.9\nsixty-four,100\n128,50\n", "batch_size 'sixty-four' is not a number"),
    ],
)
def test_a_file_that_is_not_a_sweep_csv_is_one_line(tmp_path, content, message):
    _, noise_run = _study(tmp_path)
    path = tmp_path / "result.json"
    path.write_text(content)
    run = run_tool(
        "critical_batch.py",
        [
            f"--sweep_csv={path}",
            f"--noise_run={noise_run}",
            f"--markdown={tmp_path / 't.md'}",
            f"--plot={tmp_path / 'p.png'}",
        ],
    )
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and message in run.stderr, run.stderr
    assert not (tmp_path / "t.md").exists()


def test_sweep_csv_is_required_not_a_path_into_the_repository(tmp_path):
    _, noise_run = _study(tmp_path)
    run = run_tool(
        "critical_batch.py",
        [f"--noise_run={noise_run}", f"--markdown={tmp_path / 't.md'}", f"--plot={tmp_path / 'p.png'}"],
    )
    assert run.returncode == 2 and run.stderr.strip() == (
        "critical_batch: --sweep_csv is required: a sweep's report CSV (tools/sweep.py's report.csv)."
    )
