"""The sweep engine (kbatch.study, tools/sweep.py): a tiny sweep end to end on mnist1d/original
(two batch sizes, one epoch), a point that diverges recorded while the sweep goes on, a killed
sweep continued by the same command, the report's rows against each run's own files, the PNG,
the HParams as TensorBoard's loader reads them, and the refusals in one line."""

import csv
import json
import os
import signal
import subprocess
import time

import forked
import matplotlib.image
import psutil
import pytest
from run_tool import REPO, run_tool

BASE = [
    "--config.dataset=mnist1d/original",
    "--config.num_epochs=1",
    "--config.warmup_epochs=0",
    "--config.strategy=one_device",
    "--config.evals_per_epoch=2",
    "--config.target_accuracy=0.3",
]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


SPEC = 'SWEEP = {"grid": {"base_learning_rate": [0.05, 1e6]}, "targets": [0.3, 0.4]}\n'


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """2 batch sizes (--grid) x 2 rates (the spec's axis), one of which diverges, in 2 worker processes."""
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "spec.py").write_text(SPEC)
    flags = [f"--sweep_dir={folder / 's'}", *BASE, f"--spec={folder / 'spec.py'}", "--grid=batch_size=128,512"]
    run = run_tool("sweep.py", flags + ["--processes=2"], timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return folder / "s", flags


def test_every_point_is_a_row_with_its_config_and_its_own_result(tiny_sweep):
    sweep_dir, _ = tiny_sweep
    rows = {(int(r["batch_size"]), float(r["base_learning_rate"])): r for r in _rows(sweep_dir / "report.csv")}
    assert set(rows) == {(128, 0.05), (512, 0.05), (128, 1e6), (512, 1e6)}
    for (batch, rate), row in rows.items():
        assert row["dataset"] == "mnist1d/original" and row["optimizer"] == "momentum"
        if rate == 1e6:
            assert row["state"] == "diverged" and ("nan" in row["error"] or "finite" in row["error"])
            continue
        result = json.loads((sweep_dir / "runs" / row["name"] / "result.json").read_text())
        assert row["state"] == "finished"
        assert float(row["final_eval_accuracy"]) == pytest.approx(result["final_eval_accuracy"])
        assert int(row["steps"]) == result["steps"] == -(-4000 // batch)
        for target in (0.3, 0.4):  # the first evaluation at or above the target, from the run's history
            reached = [e for e in result["history"] if e["eval_accuracy"] >= target]
            assert row[f"steps_to_{target:g}"] == (str(reached[0]["step"]) if reached else "")
            assert row[f"examples_to_{target:g}"] == (str(reached[0]["examples"]) if reached else "")
    table = (sweep_dir / "report.md").read_text().splitlines()
    assert len(table) == 2 + 4 and sum("diverged" in line for line in table) == 2


def test_the_diverged_points_are_recorded_and_not_retrained(tiny_sweep):
    sweep_dir, flags = tiny_sweep
    failures = sorted(os.listdir(sweep_dir / "failures"))
    assert len(failures) == 2 and all("base_learning_rate=1e+06" in f for f in failures)
    record = json.loads((sweep_dir / "failures" / failures[0]).read_text())
    assert record["state"] == "diverged" and record["error"]
    again = run_tool("sweep.py", flags)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "4 already done, 0 to run" in again.stdout


def test_the_plot_opens_and_the_hparams_read_back_through_tensorboard(tiny_sweep):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    sweep_dir, _ = tiny_sweep
    height, width, _ = matplotlib.image.imread(sweep_dir / "report.png").shape
    assert height > 400 and width > 1000

    def hparams_of(folder):
        events = event_accumulator.EventAccumulator(str(folder))
        events.Reload()
        content = events.PluginTagToContent("hparams")
        return events, {tag: plugin_data_pb2.HParamsPluginData.FromString(data) for tag, data in content.items()}

    _, experiment = hparams_of(sweep_dir / "tensorboard")
    names = {info.name for data in experiment.values() for info in data.experiment.hparam_infos}
    assert {"batch_size", "base_learning_rate", "optimizer"} <= names
    finished = [r for r in _rows(sweep_dir / "report.csv") if r["state"] == "finished"]
    trials = {f for f in os.listdir(sweep_dir / "tensorboard") if (sweep_dir / "tensorboard" / f).is_dir()}
    assert trials == {r["name"] for r in finished}
    for row in finished:
        events, trial = hparams_of(sweep_dir / "tensorboard" / row["name"])
        start = next(d.session_start_info for d in trial.values() if d.HasField("session_start_info"))
        assert start.hparams["batch_size"].number_value == int(row["batch_size"])
        accuracy = events.Scalars("final_eval_accuracy")[0]
        assert accuracy.value == pytest.approx(float(row["final_eval_accuracy"])) and accuracy.step == int(row["steps"])


def test_a_killed_sweep_continues_where_it_stopped(tmp_path):
    sweep_dir = tmp_path / "s"
    flags = [f"--sweep_dir={sweep_dir}", *BASE, "--config.num_epochs=2", "--grid=batch_size=128,256,512"]
    process = forked.Popen(  # its own session, as the sweep's workers are its children
        [os.path.join(REPO, "tools", "sweep.py"), *flags],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = sweep_dir / "runs" / "batch_size=128" / "result.json"
    deadline = time.time() + 240
    while not first.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert first.exists(), "the first point did not finish in time"
    written = first.stat().st_mtime_ns
    partial = run_tool("sweep.py", [f"--sweep_dir={sweep_dir}", "--report_only"])
    assert partial.returncode == 0, partial.stderr[-2000:]
    states = [r["state"] for r in _rows(sweep_dir / "report.csv")]
    assert states[0] == "finished" and set(states[1:]) <= {"partial", "pending"}
    again = run_tool("sweep.py", flags)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 already done, 2 to run" in again.stdout
    assert first.stat().st_mtime_ns == written  # read back, not trained again
    rows = _rows(sweep_dir / "report.csv")
    assert [r["state"] for r in rows] == ["finished"] * 3
    assert [int(r["steps"]) for r in rows] == [-(-8000 // b) for b in (128, 256, 512)]


@pytest.mark.parametrize(
    "stop, code, line",
    [
        (signal.SIGTERM, 42, "sweep: preempted: stopped the workers of"),
        (signal.SIGINT, 130, "sweep: interrupted: stopped the workers of"),
        (signal.SIGKILL, -signal.SIGKILL, None),
    ],
)
def test_a_sweep_in_worker_processes_stopped_leaves_no_worker_running(tmp_path, stop, code, line):
    """SIGTERM, Ctrl-C or SIGKILL of a sweep training in 2 worker processes: SIGTERM and Ctrl-C stop
    the workers (they save their checkpoints) and exit 42 or 130 with one line; after SIGKILL the
    kernel sends the workers SIGTERM. No worker is left running in any case."""
    sweep_dir = tmp_path / "s"
    flags = [f"--sweep_dir={sweep_dir}", *BASE, "--config.num_epochs=50", "--grid=batch_size=128,256", "--processes=2"]
    process = forked.Popen(
        [os.path.join(REPO, "tools", "sweep.py"), *flags], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    started = [sweep_dir / "runs" / f"batch_size={b}" / "config.json" for b in (128, 256)]
    deadline = time.time() + 240
    while not all(p.exists() for p in started) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    workers = psutil.Process(process.pid).children()
    try:
        assert len(workers) == 2 and all(p.exists() for p in started), "the workers did not start training in time"
        os.kill(process.pid, stop)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == code, stderr[-2000:]
        if line:
            assert stderr.strip().splitlines()[-1].startswith(line) and "Traceback" not in stderr, stderr[-2000:]
        _, alive = psutil.wait_procs(workers, timeout=90)
        assert not alive, f"workers left running: {alive}"
    finally:
        for leftover in workers:
            if leftover.is_running():
                leftover.kill()
        if process.poll() is None:
            process.kill()


def _refused(flags, script="sweep.py"):
    run = run_tool(script, flags)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and lines, run.stderr[-2000:]
    return lines[-1]


def test_an_empty_grid_an_unknown_field_and_bad_axes_are_one_line(tmp_path):
    sweep_dir = tmp_path / "s"
    assert "the grid is empty" in _refused([f"--sweep_dir={sweep_dir}", *BASE])
    line = _refused([f"--sweep_dir={sweep_dir}", *BASE, "--grid=batchsize=64,128"])
    assert line.startswith("sweep: --grid: config.batchsize: no such field") and "batch_size" in line
    assert "config.batchsize" in _refused([f"--sweep_dir={sweep_dir}", "--config.batchsize=3", "--grid=seed=1,2"])
    line = _refused([f"--sweep_dir={sweep_dir}", *BASE, "--grid=batch_size=0,64"])
    assert "point batch_size=0: config.batch_size=0" in line
    (tmp_path / "spec.py").write_text('SWEEP = {"overrides": {"num_epoch": 2}, "grid": {"seed": [1, 2]}}\n')
    assert "spec overrides: config.num_epoch: no such field" in _refused(
        [f"--sweep_dir={sweep_dir}", *BASE, f"--spec={tmp_path / 'spec.py'}"]
    )
    line = _refused([f"--sweep_dir={sweep_dir}", *BASE, "--grid=seed=1,2", "--report_only"])
    assert "no sweep has run there yet" in line and "without --report_only" in line
    assert not sweep_dir.exists()  # nothing written before everything is checked


def test_a_folder_of_another_sweep_or_of_anything_else_is_refused(tmp_path):
    from kbatch.configs import mnist1d_cnn
    from kbatch.study import grid, sweep

    theirs = tmp_path / "theirs"
    other = mnist1d_cnn.get_config()
    other.num_epochs = 3
    sweep.Sweep(theirs, other, grid.expand({"seed": [1]})).write_manifest()
    manifest = (theirs / "sweep.json").read_text()
    line = _refused([f"--sweep_dir={theirs}", *BASE, "--grid=seed=1,2"])
    assert "belongs to another sweep" in line and "num_epochs: 3 -> 1" in line
    assert (theirs / "sweep.json").read_text() == manifest
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert "not a kbatch sweep" in _refused([f"--sweep_dir={mine}", *BASE, "--grid=seed=1,2"])
    assert sorted(os.listdir(mine)) == ["notes.txt"]


def test_a_sweep_made_before_a_field_existed_is_the_same_sweep_at_that_field_s_default(tmp_path):
    from kbatch.configs import mnist1d_cnn
    from kbatch.study import grid, sweep

    older = tmp_path / "older"
    sweep.Sweep(older, mnist1d_cnn.get_config(), grid.expand({"seed": [1]})).write_manifest()
    manifest = json.loads((older / "sweep.json").read_text())
    del manifest["base"]["staleness"]  # written before config.staleness was added
    (older / "sweep.json").write_text(json.dumps(manifest))
    sweep.Sweep(older, mnist1d_cnn.get_config(), grid.expand({"seed": [1, 2]})).check()  # the same sweep
    changed = mnist1d_cnn.get_config()
    changed.staleness = 1
    with pytest.raises(ValueError, match=r"belongs to another sweep .*staleness: 0 -> 1"):
        sweep.Sweep(older, changed, grid.expand({"seed": [1]})).check()
