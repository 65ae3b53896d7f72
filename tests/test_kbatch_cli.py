"""kbatch_cli, what every command line shares, called directly (tests/test_tools_cli.py runs the
scripts): a stop is one line and its code, a late Ctrl-C is ignored, outputs are refused before
any work, and `import_light` loads a NumPy-only module without Keras or TensorFlow."""

import os
import signal
import subprocess
import sys
import time
import weakref

import pytest

import kbatch_cli

pytestmark = pytest.mark.fast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _sigint_handler_kept():
    """`reporting` ignores Ctrl-C as the process leaves; in pytest's own process it must come back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def _raises(error):
    def main(argv):
        raise error

    return main


def test_a_stop_is_one_line_and_its_code_and_other_errors_are_not_hidden(capsys):
    assert kbatch_cli.reporting("tool", _raises(ValueError("--x=1: want 2.\nmore")), ((ValueError, 2),))([]) == 2
    assert capsys.readouterr().err == "tool: --x=1: want 2.\n"
    assert kbatch_cli.reporting("tool", _raises(KeyboardInterrupt()), ((ValueError, 2),))([]) == 130
    assert capsys.readouterr().err == "tool: interrupted at once (Ctrl-C).\n"
    with pytest.raises(KeyError):
        kbatch_cli.reporting("tool", _raises(KeyError("k")), ((ValueError, 2),))([])
    assert kbatch_cli.reporting("tool", lambda argv: 0)([]) == 0
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # a late Ctrl-C cannot make it exit -2


class _Collected:
    pass


def _interrupt_in_a_collector_callback():
    """A Ctrl-C that lands in a weakref callback run by the garbage collector: Python cannot raise
    it there, and hands it to `sys.unraisablehook`; then time for a signal to be delivered."""

    def callback(_):
        raise KeyboardInterrupt

    collected = _Collected()
    reference = weakref.ref(collected, callback)
    del collected
    time.sleep(0.2)
    return reference


def test_an_interrupt_the_garbage_collector_swallowed_is_raised_again(capsys, monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's, not pytest's
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _interrupt_in_a_collector_callback()  # Python's own hook: printed, and the run goes on
    assert "KeyboardInterrupt" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt), kbatch_cli.interrupts_not_swallowed():
        _interrupt_in_a_collector_callback()
    assert capsys.readouterr().err == ""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as the process leaves (`ignore_late_interrupts`): dropped
    with kbatch_cli.interrupts_not_swallowed():
        _interrupt_in_a_collector_callback()
    assert capsys.readouterr().err == ""


def test_a_hook_installed_meanwhile_stays_and_sees_the_reports(monkeypatch):
    """Orbax's checkpoints install a hook (dropping its "Event loop is closed" noise) during a
    command: leaving must not drop it, or its noise comes back as the process exits (CI, 2026-12-05)."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    with kbatch_cli.interrupts_not_swallowed():
        below = sys.unraisablehook
        sys.unraisablehook = lambda unraisable: below(unraisable) if unraisable.exc_type is not RuntimeError else None
        installed = sys.unraisablehook
    assert sys.unraisablehook is installed
    _interrupt_in_a_collector_callback()  # no longer redelivered: reaches the first hook
    assert [report.exc_type for report in seen] == [KeyboardInterrupt]


def test_a_command_stops_in_one_line_on_a_ctrl_c_the_garbage_collector_swallowed(capsys):
    """Finding 13 of issue 31, in the CI run of 2026-12-05: a second Ctrl-C landed in a weakref
    callback while the first one's stop was leaving `main`, and Python printed a traceback."""
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def main(argv):
        _interrupt_in_a_collector_callback()
        return 0

    assert kbatch_cli.reporting("tool", main, ((ValueError, 2),))([]) == 130
    assert capsys.readouterr().err == "tool: interrupted at once (Ctrl-C).\n"


def test_outputs_are_refused_unless_they_can_be_written(tmp_path):
    kbatch_cli.refuse_existing({"csv": str(tmp_path / "t.csv")}, overwrite=False)
    (tmp_path / "t.csv").write_text("mine")
    for outputs, message in [
        ({"csv": ""}, "--csv is required."),
        ({"csv": str(tmp_path / "t.csv")}, "exists: refusing to overwrite it"),
        ({"plot": str(tmp_path / "no" / "p.png")}, r"does not exist \(create it first\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            kbatch_cli.refuse_existing(outputs, overwrite=False)
    kbatch_cli.refuse_existing({"csv": str(tmp_path / "t.csv")}, overwrite=True)


def test_help_is_asked_only_before_the_launched_command():
    assert kbatch_cli.wants_help(["tool", "--workers=2", "--help"])
    assert not kbatch_cli.wants_help(["tool", "--", "kbatch-train", "--help"])


def test_import_light_loads_a_numpy_only_module_without_keras_or_tensorflow():
    code = (
        "import sys, kbatch_cli; s = kbatch_cli.import_light('kbatch.study.straggler_report');"
        "import kbatch.launcher;"
        "print(s.Setting(('4',)).modes()[1], sorted({m.split('.')[0] for m in sys.modules} & "
        "{'keras', 'tensorflow', 'jax'}))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO)
    )
    assert run.returncode == 0 and run.stdout.split() == ["backups", "b=4", "[]"], run.stderr[-2000:]
