"""Every script in tools/ and benchmarks/ as a user runs it: `--help` exits 0, an unknown flag or a bad input is one
line and exit code 2 before any work, the NumPy-only tool never starts TensorFlow, and sweep specs
and --grid flags are read as written."""

import os
import subprocess
import sys

import pytest
from run_tool import REPO, run_tool


def _is_script(path):
    """A file a user runs (it has a main), not a module the scripts beside it import."""
    with open(path) as source:
        return 'if __name__ == "__main__":' in source.read()


SCRIPTS = sorted(
    (folder, name)
    for folder in ("tools", "benchmarks")
    for name in os.listdir(os.path.join(REPO, folder))
    if name.endswith(".py") and _is_script(os.path.join(REPO, folder, name))
)


def test_every_script_is_found():
    assert ("tools", "stragglers.py") in SCRIPTS and ("benchmarks", "bench_lars.py") in SCRIPTS and len(SCRIPTS) >= 16
    assert ("benchmarks", "run_timing.py") not in SCRIPTS  # imported by the benchmarks, not run


@pytest.mark.parametrize("folder, tool", SCRIPTS)
def test_help_exits_0_and_an_unknown_flag_is_one_line_and_exit_2(folder, tool):
    shown = run_tool(tool, ["--help"], timeout=180, folder=folder)
    assert shown.returncode == 0 and shown.stdout.strip() and "--" in shown.stdout, shown.stderr[-2000:]
    refused = run_tool(tool, ["--bogus_flag=1"], timeout=180, folder=folder)
    assert refused.returncode == 2, refused.stderr[-2000:]
    program, lines = tool[:-3], refused.stderr.strip().splitlines()
    assert lines[-1].startswith(f"{program}: ") and "bogus_flag" in lines[-1] and "Traceback" not in refused.stderr
    if folder == "tools":  # a benchmark that imports TensorFlow itself prints its start-up lines first
        assert lines == [lines[-1]]


def test_a_false_config_override_is_not_taken_for_an_unknown_flag(tmp_path):
    """`--noconfig.FIELD` (what kbatch.notebook writes for FIELD=False) is a config override."""
    run = run_tool(
        "sweep.py",
        [f"--sweep_dir={tmp_path}", "--grid=batch_size=64", "--noconfig.rescale_recipe", "--report_only"],
        timeout=180,
    )
    assert run.returncode == 0 and "unknown flag" not in run.stderr, run.stderr[-2000:]
    assert "1 pending" in run.stdout


def test_stragglers_imports_no_tensorflow_or_keras(tmp_path):
    """Documented NumPy only: `python -X importtime` lists every module the whole command imports."""
    env = dict(os.environ, PYTHONPATH=REPO)
    timed = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            os.path.join(REPO, "tools", "stragglers.py"),
            f"--output_prefix={tmp_path / 's'}",
            "--workers=2,4",
            "--updates=50",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert timed.returncode == 0, timed.stderr[-2000:]
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in timed.stderr.splitlines() if line.startswith("import time:")
    ]
    assert "kbatch.study.step_times" in imported and (tmp_path / "s.png").exists()
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "jax")]


def test_throughput_refuses_an_output_in_a_missing_folder_before_timing(tmp_path):
    run = run_tool(
        "throughput.py",
        [f"--csv={tmp_path / 't.csv'}", f"--markdown={tmp_path / 't.md'}", f"--plot={tmp_path / 'nowhere' / 't.png'}"],
        timeout=60,
    )
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f"throughput: --plot={tmp_path / 'nowhere' / 't.png'}: the folder {tmp_path / 'nowhere'} does not exist "
        "(create it first)."
    ]
    assert os.listdir(tmp_path) == []


def test_throughput_names_an_unknown_flag_not_a_missing_one():
    run = run_tool("throughput.py", ["--bogus_flag=1"], timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip() == "throughput: unknown flag or argument --bogus_flag=1 (see --help)."


@pytest.mark.parametrize(
    "spec, message",
    [
        ("SWEEP = {'grid': {'batch_size': [64,}\n", "the file does not run: SyntaxError"),
        ("raise RuntimeError('no GPU here')\n", "the file does not run: RuntimeError: no GPU here"),
        ("SWEEP = {'grid': {'batch_size': 64}}\n", "SWEEP['grid']['batch_size'] = 64: give a list of values"),
        ("SWEEP = {'points': {'batch_size': 64}}\n", "SWEEP['points'] must be a list"),
    ],
)
def test_a_spec_that_does_not_run_or_has_a_scalar_axis_is_one_line(tmp_path, spec, message):
    (tmp_path / "spec.py").write_text(spec)
    run = run_tool("sweep.py", [f"--sweep_dir={tmp_path / 's'}", f"--spec={tmp_path / 'spec.py'}"], timeout=120)
    assert run.returncode == 2 and message in run.stderr.strip().splitlines()[-1], run.stderr[-2000:]
    assert "Traceback" not in run.stderr and not (tmp_path / "s").exists()


def test_grid_flags_naming_one_field_add_up(tmp_path):
    """Both values are points: the first one checked (too large for the data set) is the first
    flag's, where only the last flag's used to be kept."""
    run = run_tool(
        "sweep.py",
        [
            f"--sweep_dir={tmp_path / 's'}",
            "--config.dataset=mnist1d/original",
            "--grid=batch_size=100000",
            "--grid=batch_size=200000",
        ],
        timeout=180,
    )
    assert run.returncode == 2 and "point batch_size=100000: config.batch_size=100000 is larger" in run.stderr
    twice = run_tool(
        "sweep.py", [f"--sweep_dir={tmp_path / 's'}", "--grid=batch_size=64", "--grid=batch_size=32,64"], timeout=180
    )
    assert twice.returncode == 2 and "a value of batch_size is given twice" in twice.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "s").exists()


def test_a_point_that_is_already_in_the_sweep_under_another_name_is_that_point(tmp_path):
    from conftest import small_config

    from kbatch.study import sweep

    base = small_config(tmp_path / "unused")
    first = sweep.Sweep(tmp_path / "s", base, [{"batch_size": 64}])
    first.write_manifest()
    grown = sweep.Sweep(
        tmp_path / "s",
        base,
        [
            {"batch_size": 64, "optimizer": base.optimizer},
            {"batch_size": 256, "optimizer": base.optimizer},
            {"batch_size": 256},
        ],
    )
    assert [p.name for p in grown.points] == ["batch_size=64", f"batch_size=256,optimizer={base.optimizer}"]
    grown.write_manifest()
    assert sorted(p.name for p in sweep.Sweep.open(tmp_path / "s").points) == sorted(p.name for p in grown.points)
