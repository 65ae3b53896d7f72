"""tools/sharpness_report.py on two short runs with sharpness measured: one row each with the
run's own figures, the train accuracy measured on the training split, and outputs never
overwritten."""

import json

import pytest
from run_tool import run_tool

from kbatch.training.config.recipe import RunRecipe
from kbatch.training.config.schema import resolve


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from conftest import small_config

    from kbatch.training import train

    made = []
    for batch in (64, 256):
        directory = tmp_path_factory.mktemp("runs") / f"b{batch}"
        train(
            small_config(directory, batch_size=batch, base_batch_size=64, sharpness_every=1, num_epochs=2),
            verbose=False,
        )
        made.append(directory)
    return made


def test_one_row_per_run_with_its_own_figures(runs, tmp_path):
    flags = [f"--runs={','.join(map(str, runs))}", f"--markdown={tmp_path / 't.md'}", f"--plot={tmp_path / 'p.png'}"]
    done = run_tool("sharpness_report.py", flags)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split(" | ") for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| b")]
    assert [r[0] for r in rows] == ["| b64", "| b256"]
    for row, directory in zip(rows, runs):
        result = json.loads((directory / "result.json").read_text())
        assert float(row[4]) == pytest.approx(100 * result["final_eval_accuracy"], abs=0.006)
        assert float(row[7]) == pytest.approx(result["sharpness"][-1]["sharpness"], rel=1e-2)
        train, test = float(row[5]), float(row[4])
        assert 10 < train <= 100 and float(row[6]) == pytest.approx(train - test, abs=0.011)
        assert row[9].startswith("3.80")  # 2 + 2 x 0.9
        # the schedule's peak (reached after the half-epoch warmup, between the evaluations, which
        # see a rate already decaying), not the largest rate seen at an evaluation
        config = resolve(json.loads((directory / "config.json").read_text()))
        assert float(row[3]) == pytest.approx(RunRecipe.from_settings(config).peak_learning_rate(), rel=1e-3)
        assert float(row[3]) > 1.001 * max(e["learning_rate"] for e in result["history"])
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_outputs_are_not_overwritten_and_bad_runs_are_one_line(runs, tmp_path):
    (tmp_path / "t.md").write_text("mine")
    done = run_tool(
        "sharpness_report.py", [f"--runs={runs[0]}", f"--markdown={tmp_path / 't.md'}", f"--plot={tmp_path / 'p.png'}"]
    )
    assert done.returncode != 0 and "refusing to overwrite" in done.stderr and (tmp_path / "t.md").read_text() == "mine"
    done = run_tool(
        "sharpness_report.py",
        [f"--runs={tmp_path / 'nowhere'}", f"--markdown={tmp_path / 'u.md'}", f"--plot={tmp_path / 'u.png'}"],
    )
    assert done.returncode != 0 and "--runs: must name finished runs" in done.stderr
