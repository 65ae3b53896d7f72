"""kbatch.study.straggler_report called directly (tests/test_stragglers.py runs the tool): the
flags' checks, the refusal of existing outputs, the share of sync's loss backups recover, and a
whole report whose every figure is known in closed form (constant steps, one slow machine)."""

import csv
import types

import pytest

from kbatch.study import step_times
from kbatch.study import straggler_report as report

pytestmark = pytest.mark.fast


def test_the_modes_are_sync_each_backups_pair_then_async():
    assert report.Setting(("4", "N/16")).modes() == [
        "sync",
        "backups b=4",
        "sync on N+b, b=4",
        "backups b=N/16",
        "sync on N+b, b=N/16",
        "async",
    ]


def test_each_distribution_spec_is_its_step_time_and_a_bad_one_names_the_flag():
    assert report.parse_distribution("lognormal:0.5", 0.2).mean == pytest.approx(0.2)
    assert isinstance(report.parse_distribution("slowdowns:0.01:10", 0.1), step_times.Slowdowns)
    for spec in ("weibull:2", "lognormal", "lognormal:0", "pareto:x"):
        with pytest.raises(ValueError, match=f"--distributions: '{spec}'"):
            report.parse_distribution(spec, 0.1)


@pytest.mark.parametrize(
    "setting, specs, workers, message",
    [
        (report.Setting(("4",)), [], ["2"], "--distributions: give at least one"),
        (report.Setting(("4",), mean_step=0.0), ["constant"], ["2"], "--mean_step=0.0"),
        (report.Setting(("4",)), ["constant"], ["2", "2"], "--workers=2,2: want distinct integers"),
        (report.Setting(("N/0",)), ["constant"], ["2"], "--backups=N/0: 'N/0' is not a count"),
        (report.Setting(("4", "4")), ["constant"], ["2"], "a backup setting given twice"),
        (report.Setting(("4",), updates=1), ["constant"], ["2"], "--updates=1: want an integer >= 2"),
    ],
)
def test_a_bad_setting_is_refused_naming_its_flag(setting, specs, workers, message):
    with pytest.raises(ValueError, match=message):
        report.check(setting, specs, workers)


def test_outputs_are_refused_in_a_missing_folder_or_when_they_exist(tmp_path):
    assert report.output_paths(str(tmp_path / "s"), False) == {
        "csv": str(tmp_path / "s.csv"),
        "markdown": str(tmp_path / "s.md"),
        "plot": str(tmp_path / "s.png"),
    }
    with pytest.raises(ValueError, match="no folder"):
        report.output_paths(str(tmp_path / "missing" / "s"), False)
    (tmp_path / "s.md").write_text("mine")
    with pytest.raises(ValueError, match="s.md exists: refusing to overwrite it"):
        report.output_paths(str(tmp_path / "s"), False)
    assert report.output_paths(str(tmp_path / "s"), True)["markdown"] == str(tmp_path / "s.md")


def test_the_loss_recovered_is_the_backups_gain_over_what_sync_loses():
    setting, dist = report.Setting(("2",), batch_per_worker=10), step_times.Constant(0.5)
    rate = types.SimpleNamespace
    by_n = {4: {"sync": rate(examples_per_second=50.0), "backups b=2": rate(examples_per_second=65.0)}}
    assert report.recovered(setting, dist, by_n, 4, "2") == pytest.approx((65 - 50) / (4 * 10 / 0.5 - 50))
    by_n[4]["sync"] = rate(examples_per_second=80.0)  # no loss: nothing to recover
    assert report.recovered(setting, dist, by_n, 4, "2") is None


def test_a_report_of_constant_steps_and_one_slow_machine_has_the_closed_form_figures(tmp_path, capsys):
    setting = report.Setting(("1",), batch_per_worker=8, mean_step=0.1, updates=50)
    paths = report.output_paths(str(tmp_path / "r"), False)
    report.report(setting, ["constant", "slow_machine:4"], ["2", "4"], paths, "the command", 0.0)
    with open(paths["csv"]) as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * 2 * 4
    for row in rows:  # constant: every worker steps in 0.1 s; one slow machine: sync waits 0.4 s
        slow = row["distribution"].startswith("one slow") and row["mode"] in ("sync", "sync on N+b, b=1")
        if row["mode"] != "async":
            assert float(row["seconds_per_update"]) == pytest.approx(0.4 if slow else 0.1)
        assert float(row["closed_form_seconds_per_update"]) == pytest.approx(float(row["seconds_per_update"]), rel=0.05)
    text = open(paths["markdown"]).read()
    # efficiency of sync at N = 4 with one machine 4 x slower: 4 / 0.4 against (3 / 0.1 + 1 / 0.4) per second
    assert f"| one slow machine (x4, others constant) | {(4 / 0.4) / (3 / 0.1 + 1 / 0.4):.2f} |" in text
    assert "| constant | 1.00 | never in the range |" in text and "`the command`" in text
    printed = capsys.readouterr().out
    assert "stragglers: wrote" in printed and (tmp_path / "r.png").stat().st_size > 0
