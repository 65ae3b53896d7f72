"""Each way a run stops short is one line and its own exit code, for kbatch-train and the tools."""

import pathlib
import signal
import subprocess
import sys

import pytest

from stop_run import signal_at_checkpoint

from kbatch.training import stops


@pytest.mark.parametrize("error, code", [
    (ValueError("config.batch_size=0: must be a positive integer."), 2),
    (FloatingPointError("The training loss is nan at step 3: stopping."), 3),
    (stops.Preempted(8, "runs/x/checkpoints/ckpt-8"), 42),
    (stops.Interrupted(8, "runs/x/checkpoints/ckpt-8"), 130),
])
def test_a_stop_is_one_line_and_its_exit_code(capsys, error, code):
    def main(argv):
        raise error

    assert stops.reporting("tool", main)(["tool"]) == code
    assert capsys.readouterr().err == f"tool: {error}\n"


def test_a_finished_main_keeps_its_return_value_and_other_errors_are_not_hidden():
    assert stops.reporting("tool", lambda argv: 0)(["tool"]) == 0
    with pytest.raises(KeyError):
        stops.reporting("tool", lambda argv: {}["missing"])(["tool"])


def test_a_tool_under_sigterm_saves_and_exits_42_in_one_line(tmp_path):
    tool = pathlib.Path(__file__).resolve().parents[1] / "tools" / "lars_vs_sgd.py"
    process = subprocess.Popen(
        [sys.executable, str(tool), "--runs=momentum:128:0.05", "--dataset=mnist1d/original", "--num_epochs=4",
         "--strategy=one_device", f"--csv={tmp_path / 'lars.csv'}", f"--model_root={tmp_path / 'runs'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:  # "<name>: training (<model_dir>)"
        if ": training (" in line:
            model_dir = line.strip().rpartition("(")[2].rstrip(")")
            break
    _, stderr = signal_at_checkpoint(process, model_dir, 32, signal.SIGTERM)  # the first epoch's end
    assert process.returncode == 42, stderr[-2000:]  # the watch saved at the next loop's end
    (line,) = [line for line in stderr.splitlines() if line.startswith("lars_vs_sgd:")]
    assert "preempted: checkpoint of step" in line
    assert "Traceback" not in stderr and not (tmp_path / "lars.csv").exists()
