"""kbatch.study.throughput and tools/throughput.py: the fit T0 + k B^gamma recovers the
parameters that made its data (and nearly so under 2% noise), the wall time to target is the
steps times the fitted time per update, a sweep's CSV gives the fewest steps of its finished runs
at each batch, and the tool times real runs on the CPU, writes its three files, and refuses bad
flags and existing outputs with one line before any run."""

import csv

import matplotlib.image
import numpy as np
import pytest
from run_tool import run_tool

from kbatch.diagnostics import update_time
from kbatch.study import throughput

BATCHES = np.array([16, 32, 64, 128, 256, 512, 1024, 2048])
PARAMETERS = [(2e-3, 1e-5, 1.0), (5e-4, 3e-4, 0.5), (1e-2, 1e-7, 1.5), (0.0, 1e-4, 0.8), (4e-3, 0.0, 1.0)]


def _formula(t0, k, gamma, batches=BATCHES):
    return t0 + k * batches.astype(float) ** gamma


@pytest.mark.parametrize("t0, k, gamma", PARAMETERS[:4])
def test_the_fit_recovers_the_parameters_of_noiseless_data(t0, k, gamma):
    fit = update_time.fit_update_time(BATCHES, _formula(t0, k, gamma))
    assert fit.t0 == pytest.approx(t0, abs=1e-9) and fit.k == pytest.approx(k, rel=1e-6)
    assert fit.gamma == pytest.approx(gamma, abs=1e-6) and fit.residual < 1e-8
    np.testing.assert_allclose(fit.seconds(BATCHES), _formula(t0, k, gamma), rtol=1e-8)
    np.testing.assert_allclose(fit.examples_per_second(BATCHES), BATCHES / _formula(t0, k, gamma), rtol=1e-8)


def test_a_time_that_does_not_grow_with_the_batch_is_all_t0():
    fit = update_time.fit_update_time(BATCHES, _formula(*PARAMETERS[4]))
    assert fit.t0 == pytest.approx(4e-3) and fit.k == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("t0, k, gamma", PARAMETERS[:3])
def test_the_fit_under_2_percent_noise_stays_near(t0, k, gamma):
    rng, repeated = np.random.default_rng(0), np.repeat(BATCHES, 3)  # three timings at each batch
    for _ in range(5):
        noisy = _formula(t0, k, gamma, repeated) * (1 + 0.02 * rng.standard_normal(len(repeated)))
        fit = update_time.fit_update_time(repeated, noisy)
        assert abs(fit.gamma - gamma) < 0.1 and 0.01 < fit.residual < 0.03
        np.testing.assert_allclose(fit.seconds(BATCHES), _formula(t0, k, gamma), rtol=0.03)


def test_a_gamma_past_the_range_searched_is_flagged():
    assert update_time.fit_update_time(BATCHES, _formula(1e-3, 1e-9, 2.6)).gamma_at_search_edge
    assert not update_time.fit_update_time(BATCHES, _formula(1e-3, 1e-6, 1.0)).gamma_at_search_edge


@pytest.mark.parametrize("batches", [[64, 128], [64, 64, 128, 128]])
def test_fewer_than_3_batch_sizes_cannot_be_fitted(batches):
    with pytest.raises(ValueError, match="2 distinct batch sizes; the fit has 3 parameters"):
        update_time.fit_update_time(batches, [1.0] * len(batches))


def test_wall_time_to_target_is_the_steps_times_the_fitted_update():
    fit = update_time.UpdateTimeFit(t0=2e-3, k=3e-5, gamma=0.9, residual=0.0)
    steps = {1024: 120, 16: 9000, 256: None, 64: 2600}
    rows = throughput.wall_time_to_target(fit, steps)
    batches = np.array([16, 64, 256, 1024])
    per_update = 2e-3 + 3e-5 * batches**0.9
    assert [r["batch"] for r in rows] == list(batches) and [r["steps"] for r in rows] == [9000, 2600, None, 120]
    np.testing.assert_allclose([r["seconds_per_update"] for r in rows], per_update)
    expected = np.array([9000, 2600, np.nan, 120]) * per_update
    assert rows[2]["seconds_to_target"] is None
    np.testing.assert_allclose([rows[i]["seconds_to_target"] for i in (0, 1, 3)], expected[[0, 1, 3]])
    assert throughput.fastest(rows) == batches[np.nanargmin(expected)] == 1024
    assert throughput.fastest([r for r in rows if r["batch"] == 256]) is None


def _sweep(path, rows, fields=("batch_size", "base_learning_rate", "status", "steps_to_target")):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(fields)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("status", ["status", "state"])  # kbatch.study.report's CSV says state
def test_read_steps_takes_the_best_finished_run_at_each_batch(tmp_path, status):
    path = _sweep(
        tmp_path / "sweep.csv",
        [
            (16, 0.1, "finished", 900),
            (16, 0.2, "finished", 700),
            (16, 0.4, "failed", 50),  # failed: skipped
            (32, 0.2, "finished", ""),
            (32, 0.4, "finished", 400),
            (64, 0.4, "finished", ""),  # finished, never reached the target
            (128, 0.8, "diverged", 10),
        ],  # no finished run: absent
        fields=("batch_size", "base_learning_rate", status, "steps_to_0.97"),
    )
    assert throughput.read_steps(path, "steps_to_0.97") == {16: 700, 32: 400, 64: None}


def test_read_steps_names_a_missing_column_and_those_there(tmp_path):
    path = _sweep(tmp_path / "sweep.csv", [(16, "finished", 9)], fields=("batch_size", "status", "steps"))
    with pytest.raises(ValueError, match="no column 'steps_to_target'; the columns are batch_size, status, steps"):
        throughput.read_steps(path)


def _outputs(tmp_path):
    return [f"--csv={tmp_path / 't.csv'}", f"--markdown={tmp_path / 't.md'}", f"--plot={tmp_path / 't.png'}"]


def test_the_tool_times_three_batches_and_writes_its_files(tmp_path):
    sweep = _sweep(
        tmp_path / "sweep.csv",
        [
            (16, 0.1, "finished", 10_000),
            (16, 0.2, "failed", 1),
            (32, 0.1, "finished", 5_000),
            (64, 0.1, "finished", 100),
            (128, 0.1, "finished", ""),
        ],
    )
    run = run_tool(
        "throughput.py",
        [
            "--batch_sizes=64,16,32",
            "--steps=4",
            "--repeats=1",
            "--config.dataset=mnist1d/original",
            f"--sweep_csv={sweep}",
            *_outputs(tmp_path),
        ],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert [line.split(":")[1] for line in run.stdout.splitlines() if "ms/update" in line] == [
        " batch 16",
        " batch 32",
        " batch 64",
    ]
    with open(tmp_path / "t.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["batch"]) for r in rows] == [16, 32, 64]
    assert all(float(r["seconds_per_update"]) > 0 for r in rows) and rows[0]["steps_to_target"] == "10000"
    text = (tmp_path / "t.md").read_text()
    assert "gamma 0 = a fixed cost per update (latency bound)" in text and "on the CPU" in text
    assert "| 128 | - |" in text and "(extrapolated)" in text
    assert "Fastest to target: **batch 64**" in text  # had the failed row counted, 16 (1 step) would be
    height, width, _ = matplotlib.image.imread(tmp_path / "t.png").shape
    assert width > 2.5 * height  # three panels side by side


def _refused(run):
    """The tool's one line (TensorFlow's own start-up lines aside), and exit code 2."""
    lines = [line for line in run.stderr.splitlines() if line.startswith("throughput:")]
    assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "ms/update" not in run.stdout
    return lines[0]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--batch_sizes=", "want at least 3 distinct positive integers"),
        ("--batch_sizes=16,32", "(the fit has 3"),
        ("--batch_sizes=16,16,32", "want at least 3 distinct"),
        ("--steps=0", "--steps=0: want a positive integer"),
    ],
)
def test_a_bad_flag_is_refused_before_tensorflow_starts(tmp_path, flag, message):
    line = _refused(run_tool("throughput.py", ["--batch_sizes=16,32,64", flag, *_outputs(tmp_path)]))
    assert message in line and not list(tmp_path.iterdir())


def test_an_unknown_config_field_is_refused(tmp_path):
    line = _refused(run_tool("throughput.py", ["--batch_sizes=16,32,64", "--config.batchsize=64", *_outputs(tmp_path)]))
    assert "config.batchsize: no such field (did you mean batch_size" in line and not list(tmp_path.iterdir())


def test_existing_outputs_are_refused(tmp_path):
    (tmp_path / "t.md").write_text("mine")
    line = _refused(run_tool("throughput.py", ["--batch_sizes=16,32,64", *_outputs(tmp_path)]))
    assert "--markdown=" in line and "refusing to overwrite" in line
    assert (tmp_path / "t.md").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["t.md"]
