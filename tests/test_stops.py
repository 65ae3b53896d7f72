"""Each way a run stops short is one line and its own exit code, for kbatch-train and the tools."""

import json
import pathlib
import signal
import subprocess
import sys

import pytest
from stop_run import signal_at_checkpoint

from kbatch.training import stops


@pytest.fixture(autouse=True)
def _sigint_handler_kept():
    """`reporting` ignores Ctrl-C as the process leaves; in pytest's own process it must come back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.mark.parametrize(
    "error, code",
    [
        (ValueError("config.batch_size=0: must be a positive integer."), 2),
        (FloatingPointError("The training loss is nan at step 3: stopping."), 3),
        (stops.Preempted(8, "runs/x/checkpoints/ckpt-8"), 42),
        (stops.Interrupted(8, "runs/x/checkpoints/ckpt-8"), 130),
    ],
)
def test_a_stop_is_one_line_and_its_exit_code(capsys, error, code):
    def main(argv):
        raise error

    assert stops.reporting("tool", main)(["tool"]) == code
    assert capsys.readouterr().err == f"tool: {error}\n"


def test_a_finished_main_keeps_its_return_value_and_other_errors_are_not_hidden():
    assert stops.reporting("tool", lambda argv: 0)(["tool"]) == 0
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # a late Ctrl-C cannot make it exit -2
    with pytest.raises(KeyError):
        stops.reporting("tool", lambda argv: {}["missing"])(["tool"])


def test_a_sweep_under_sigterm_saves_exits_42_in_one_line_and_continues_the_point(tmp_path):
    """The point in progress is preempted, not recorded as a failure: the same command trains it
    again in the same folder (where the trainer resumes from the checkpoint, as test_faults shows)."""
    repo = pathlib.Path(__file__).resolve().parents[1]
    command = [
        sys.executable,
        str(repo / "tools" / "sweep.py"),
        f"--sweep_dir={tmp_path / 'sweep'}",
        "--grid=batch_size=128",
        "--config.dataset=mnist1d/original",
        "--config.num_epochs=4",
        "--config.strategy=one_device",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo)
    model_dir = tmp_path / "sweep" / "runs" / "batch_size=128"
    _, stderr = signal_at_checkpoint(process, str(model_dir), 32, signal.SIGTERM)  # the first epoch's end
    assert process.returncode == 42, stderr[-2000:]  # the watch saved at the next loop's end
    (line,) = [line for line in stderr.splitlines() if line.startswith("sweep:")]
    assert "preempted: checkpoint of step" in line
    assert "Traceback" not in stderr and not (tmp_path / "sweep" / "failures").exists()
    again = subprocess.run(command, capture_output=True, text=True, cwd=repo, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 already done, 1 to run" in again.stdout and "finished" in again.stdout
    assert json.loads((model_dir / "result.json").read_text())["steps"] == -(-16000 // 128)  # 4 epochs of 4000
