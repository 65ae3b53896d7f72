"""tools/staleness_report.py: the table's shares, means and maxima are those of the runs' counts
(NumPy), a synchronous run is every update at staleness 0, the figure is written, and a bad
--runs entry or an existing output is one line with nothing written."""

import json

import numpy as np
import pytest
from run_tool import run_tool

COUNTS = [605, 679, 400, 165, 18, 6, 0, 1]


def _run(folder, staleness, steps, accuracy):
    folder.mkdir()
    result = {
        "steps": steps,
        "final_eval_accuracy": accuracy,
        "best_eval_accuracy": accuracy + 0.001,
        "staleness": staleness,
    }
    (folder / "result.json").write_text(json.dumps(result))
    return folder


def test_table_and_figure_of_a_synchronous_and_an_asynchronous_run(tmp_path):
    sync = _run(tmp_path / "sync", None, 1875, 0.9918)
    counts = np.array(COUNTS)  # the summary a parameter-server run writes (kbatch.training.run_files.history)
    summary = {"counts": COUNTS, "mean": float((np.arange(8) * counts).sum() / counts.sum()), "max": 7}
    ps = _run(tmp_path / "ps", summary, sum(COUNTS), 0.9898)
    markdown, plot = tmp_path / "s.md", tmp_path / "s.png"
    run = run_tool(
        "staleness_report.py", [f"--runs=sync={sync},4 workers={ps}", f"--markdown={markdown}", f"--plot={plot}"]
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in markdown.read_text().splitlines()[2:]]
    assert [r[0].strip() for r in rows] == ["sync", "4 workers"]
    shares = [*(counts[:4] / counts.sum()), counts[4:].sum() / counts.sum()]
    assert [c.strip() for c in rows[1][1:6]] == [
        "98.98",
        "99.08",
        str(counts.sum()),
        f"{(np.arange(8) * counts).sum() / counts.sum():.2f}",
        "7",
    ]
    assert [c.strip() for c in rows[1][6:]] == [f"{100 * s:.1f}%" for s in shares]
    assert [c.strip() for c in rows[0][3:]] == ["1875", "0.00", "0", "100.0%", "0.0%", "0.0%", "0.0%", "0.0%"]
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "runs, message",
    [
        ("--runs=a", "'a' is not LABEL=MODEL_DIR"),
        ("--runs=a=/nonexistent/run", "a=/nonexistent/run has no result.json"),
    ],
)
def test_a_bad_runs_entry_is_one_line_and_writes_nothing(tmp_path, runs, message):
    markdown = tmp_path / "s.md"
    run = run_tool("staleness_report.py", [runs, f"--markdown={markdown}", f"--plot={tmp_path / 's.png'}"])
    assert run.returncode == 2 and message in run.stderr.strip().splitlines()[-1]
    assert not markdown.exists()


def test_an_existing_output_is_not_overwritten(tmp_path):
    ps = _run(tmp_path / "ps", {"counts": COUNTS, "mean": 1.0, "max": 7}, sum(COUNTS), 0.99)
    markdown = tmp_path / "mine.md"
    markdown.write_text("mine")
    run = run_tool("staleness_report.py", [f"--runs=ps={ps}", f"--markdown={markdown}", f"--plot={tmp_path / 'p.png'}"])
    assert run.returncode == 2 and "--markdown" in run.stderr and "exists" in run.stderr
    assert markdown.read_text() == "mine"


def test_a_run_with_the_simulated_delay_is_every_update_at_its_tau(tmp_path):
    """config.staleness = 2 (the delay line, no parameter server): result.json has no measured
    staleness, config.json has the tau every update was delayed by."""
    run_dir = _run(tmp_path / "tau2", None, 500, 0.95)
    (run_dir / "config.json").write_text(json.dumps({"staleness": 2, "batch_size": 128}))
    markdown = tmp_path / "s.md"
    run = run_tool(
        "staleness_report.py", [f"--runs=delayed={run_dir}", f"--markdown={markdown}", f"--plot={tmp_path / 's.png'}"]
    )
    assert run.returncode == 0, run.stderr[-2000:]
    row = [c.strip() for c in markdown.read_text().splitlines()[2].split("|")[1:-1]]
    assert row[0] == "delayed (config.staleness=2)"
    assert row[3:] == ["500", "2.00", "2", "0.0%", "0.0%", "100.0%", "0.0%", "0.0%"]
