"""kbatch.study.controllers: a run's controller named from its config, the measured and predicted
seconds to a target summed by hand from its evaluations, and a blank where a target was not reached."""

import pytest

from kbatch.diagnostics import update_time
from kbatch.study import controllers

pytestmark = pytest.mark.fast

HISTORY = [  # two evaluations at batch 128, then one at 512 (a doubling at step 20)
    {"step": 10, "examples": 1280, "eval_accuracy": 0.5, "global_batch_size": 128, "examples_per_second": 640.0},
    {"step": 20, "examples": 2560, "eval_accuracy": 0.8, "global_batch_size": 128, "examples_per_second": 1280.0},
    {"step": 25, "examples": 5120, "eval_accuracy": 0.9, "global_batch_size": 512, "examples_per_second": 2560.0},
]
CURVE = update_time.UpdateTimeFit(0.01, 1e-4, 1.0, residual=0.0)  # T(128) = 22.8 ms, T(512) = 61.2 ms


def test_the_seconds_to_a_target_are_the_sums_of_the_intervals_by_hand():
    table = controllers.row("x", controllers.trajectory(HISTORY, CURVE), [0.8, 0.9, 0.95])
    assert table["updates_to_0.8"] == 20 and table["examples_to_0.8"] == 2560
    assert table["cpu_s_to_0.8"] == pytest.approx(1280 / 640 + 1280 / 1280)
    assert table["accel_s_to_0.8"] == pytest.approx(20 * 0.0228)
    assert table["cpu_s_to_0.9"] == pytest.approx(3.0 + 2560 / 2560)
    assert table["accel_s_to_0.9"] == pytest.approx(20 * 0.0228 + 5 * 0.0612)
    assert table["updates_to_0.95"] is None and table["accel_s_to_0.95"] is None
    assert table["batches"] == "128 -> 512" and table["final_accuracy"] == 0.9 and table["updates"] == 25


@pytest.mark.parametrize(
    "config, name",
    [
        ({"batch_size": 128}, "fixed 128"),
        ({"batch_size": 128, "anneal_batch": True}, "annealing"),
        ({"batch_size": 128, "batch_schedule": "seesaw"}, "seesaw"),
        ({"batch_size": 64, "decay": "step", "decay_boundaries": (1.5, 2.25)}, "fixed 64, step at 1.5/2.25"),
        ({"batch_size": 1024, "lr_gain": "adascale"}, "AdaScale 1024"),
        (
            {"batch_size": 128, "batch_schedule": "goodput", "update_time_model": [0.005, 2e-5, 0.7]},
            "goodput (given curve)",
        ),
        ({"batch_size": 128, "batch_schedule": "goodput", "update_time_model": []}, "goodput (timed here)"),
    ],
)
def test_each_controller_is_named_from_its_config(config, name):
    assert controllers.label(config) == name


def test_the_markdown_table_blanks_what_was_not_reached():
    text = controllers.markdown([{"controller": "fixed 128", "updates": 2500, "accel_s_to_0.97": None, "a": 0.12345}])
    assert text.splitlines()[2] == "| fixed 128 | 2,500 | - | 0.123 |"


LOSSES = [2.6, 2.1, 1.9]  # HISTORY's eval losses, one per evaluation


def _with_losses():
    return [dict(entry, eval_loss=loss) for entry, loss in zip(HISTORY, LOSSES)]


def test_a_loss_target_is_reached_at_the_first_evaluation_at_or_below_it():
    """--metric=loss (a language model's monitor): the final loss beside the final accuracy, and each target
    at the first evaluation whose loss is at or below it, blank where none is."""
    table = controllers.row("x", controllers.trajectory(_with_losses(), CURVE), [2.1, 2.0, 1.5], metric="loss")
    assert list(table)[:5] == ["controller", "final_loss", "final_accuracy", "updates", "batches"]
    assert table["final_loss"] == 1.9 and table["final_accuracy"] == 0.9
    assert table["updates_to_loss_2.1"] == 20 and table["examples_to_loss_2.1"] == 2560  # equal counts as reached
    assert table["cpu_s_to_loss_2.1"] == pytest.approx(3.0)
    assert table["updates_to_loss_2"] == 25 and table["accel_s_to_loss_2"] == pytest.approx(20 * 0.0228 + 5 * 0.0612)
    assert table["updates_to_loss_1.5"] is None and table["accel_s_to_loss_1.5"] is None


def test_the_accuracy_table_is_unchanged_where_losses_are_recorded():
    with_losses = controllers.row("x", controllers.trajectory(_with_losses(), CURVE), [0.8])
    assert with_losses == controllers.row("x", controllers.trajectory(HISTORY, CURVE), [0.8])
    assert "final_loss" not in with_losses


def test_the_loss_report_writes_its_table_and_plot(tmp_path, monkeypatch, capsys):
    found = {"fixed 64": controllers.trajectory(_with_losses(), CURVE)}
    monkeypatch.setattr(controllers, "runs", lambda sweep_dir, curve: found)
    prefix = str(tmp_path / "lm")
    controllers.main(["unused", f"--output={prefix}", "--metric=loss", "--targets=2.0"])
    with open(prefix + ".csv") as f:
        assert f.readline().strip().split(",")[:2] == ["controller", "final_loss"]
    assert (tmp_path / "lm.png").stat().st_size > 0
    assert "| fixed 64 | 1.9 | 0.9 | 25 | 128 -> 512 | 25 | 5,120 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # loss targets have no default
        controllers.main(["unused", f"--output={prefix}", "--metric=loss"])
