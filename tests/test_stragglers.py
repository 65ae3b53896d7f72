"""kbatch.study.stragglers and tools/stragglers.py against references computed here: a synchronous
update takes the expected maximum of N step times (exponential: H_N / lambda; log-normal: the
integral of 1 - F(t)^N), with b backups the expected N-th of N + b; asynchronous workers apply
the sum of their rates; with equal step times every mode gives the same examples/s and an
asynchronous gradient is exactly N - 1 updates stale; one slow machine sets the pace of
synchronous training and backups drop it; the tool writes its files and refuses a bad flag."""

import csv
import math

import matplotlib.image
import numpy as np
import pytest
from run_tool import run_tool

from kbatch.study import step_times, stragglers


def harmonic(n):
    return sum(1.0 / i for i in range(1, n + 1))


def lognormal_expected_max(mean, sigma, n):
    """E[max of n] = integral of 1 - F(t)^n dt, with t = exp(mu + sigma z): the integral over z of
    (1 - Phi(z)^n) sigma exp(mu + sigma z), by Simpson's rule on [-12, 12], plus the part below."""
    mu = math.log(mean) - sigma**2 / 2
    z = np.linspace(-12.0, 12.0, 24_001)
    phi = np.array([0.5 * math.erfc(-x / math.sqrt(2)) for x in z])
    y = (1 - phi**n) * sigma * np.exp(mu + sigma * z)
    h = z[1] - z[0]
    return math.exp(mu - 12 * sigma) + h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())


def within(result, expected, standard_errors=4):
    return abs(result.seconds_per_update - expected) <= standard_errors * result.standard_error


@pytest.mark.parametrize("workers", [2, 16, 256])
def test_a_synchronous_update_takes_the_expected_max_of_exponentials(workers):
    result = stragglers.simulate_sync(step_times.Exponential(0.5), workers, 32, 3000, np.random.default_rng(workers))
    assert within(result, 0.5 * harmonic(workers)), (result, 0.5 * harmonic(workers))
    assert result.examples_per_second == pytest.approx(32 * workers / result.seconds_per_update)


@pytest.mark.parametrize("sigma, workers", [(0.5, 8), (1.0, 64), (0.5, 1024)])
def test_a_synchronous_update_takes_the_expected_max_of_lognormals(sigma, workers):
    expected = lognormal_expected_max(0.1, sigma, workers)
    dist = step_times.LogNormal(0.1, sigma)
    assert step_times.expected_max(dist, workers) == pytest.approx(expected, rel=1e-6)
    result = stragglers.simulate_sync(dist, workers, 32, 2000, np.random.default_rng(workers))
    assert within(result, expected), (result, expected)


def test_the_numerical_integral_matches_the_exact_order_statistics():
    """E[X_(k:n)]: exponential mean (H_n - H_(n-k)); Pareto t_m n! Gamma(n-k+1-1/a) / ((n-k)! Gamma(n+1-1/a))."""
    exponential, pareto = step_times.Exponential(2.0), step_times.Pareto(1.0, 3.0)
    t_m, a = 2 / 3, 1 / 3
    for k, n in [(1, 1), (2, 2), (64, 64), (1024, 1024), (64, 68), (1000, 1064), (3, 7)]:
        exact = 2.0 * (harmonic(n) - harmonic(n - k))
        assert step_times.integrate_order_statistic(exponential, k, n) == pytest.approx(exact, rel=1e-8)
        assert step_times.expected_order_statistic(exponential, k, n) == pytest.approx(exact, rel=1e-12)
        exact = t_m * math.exp(
            math.lgamma(n + 1) - math.lgamma(n + 1 - a) + math.lgamma(n - k + 1 - a) - math.lgamma(n - k + 1)
        )
        assert step_times.integrate_order_statistic(pareto, k, n) == pytest.approx(exact, rel=1e-6)
        assert step_times.expected_order_statistic(pareto, k, n) == pytest.approx(exact, rel=1e-12)
    assert step_times.expected_order_statistic(pareto, 1, 1) == pytest.approx(1.0)  # its mean


@pytest.mark.parametrize("workers, backups", [(16, 1), (256, 16)])
def test_with_backups_an_update_takes_the_expected_nth_of_n_plus_b(workers, backups):
    result = stragglers.simulate_sync(
        step_times.Exponential(1.0), workers, 8, 3000, np.random.default_rng(0), backups=backups
    )
    expected = harmonic(workers + backups) - harmonic(backups)
    assert result.mode == "backups" and result.machines == workers + backups and within(result, expected)
    assert result.examples_per_update == 8 * workers  # the late gradients are dropped


@pytest.mark.parametrize("backups", [0, 3])
def test_backups_are_the_nth_smallest_of_the_same_draws_and_none_is_plain_sync(backups):
    dist, workers, updates = step_times.LogNormal(1.0, 1.0), 12, 500
    draws = dist.sample(np.random.default_rng(7), (updates, workers + backups))
    reference = np.sort(draws, axis=1)[:, workers - 1]  # the N-th of N + b; of N alone, the maximum
    result = stragglers.simulate_sync(dist, workers, 4, updates, np.random.default_rng(7), backups=backups)
    assert result.seconds_per_update == pytest.approx(reference.mean(), rel=1e-12)
    if backups == 0:
        assert result.mode == "sync" and np.array_equal(reference, draws.max(axis=1))


@pytest.mark.parametrize(
    "dist, workers",
    [
        (step_times.LogNormal(0.1, 0.5), 16),
        (step_times.Pareto(0.1, 3.0), 128),
        (step_times.OneSlowMachine(step_times.LogNormal(0.1, 0.5), 4.0), 32),
    ],
)
def test_asynchronous_throughput_is_the_sum_of_the_workers_rates(dist, workers):
    result = stragglers.simulate_async(dist, workers, 16, 4000, np.random.default_rng(1))
    rate = sum(1 / m for m in dist.worker_means(workers))  # (N - 1) / mean + 1 / (4 mean) for the slow machine
    assert step_times.async_rate(dist, workers) == pytest.approx(rate)
    assert within(result, 1 / rate), (result, 1 / rate)
    assert result.updates_per_second == pytest.approx(rate, rel=0.03)
    assert result.examples_per_second == pytest.approx(16 * result.updates_per_second)
    assert result.staleness == pytest.approx(workers - 1, rel=0.03)  # N - 1 even for unequal workers


@pytest.mark.parametrize("workers", [2, 7, 64, 1024])
def test_equal_step_times_give_every_mode_the_same_examples_per_second(workers):
    dist = step_times.Constant(0.25)
    results = stragglers.simulate(dist, workers, 32, 200, seed=0, backups=(2,))
    sync, backups, asynchronous = results["sync"], results["backups b=2"], results["async"]
    assert sync.updates_per_second == pytest.approx(4.0) == backups.updates_per_second
    assert asynchronous.updates_per_second == pytest.approx(4.0 * workers)
    for result in results.values():  # sync on N + b has 2 more workers
        machines = workers + (2 if result.mode == "sync" and result.workers > workers else 0)
        assert result.examples_per_second == pytest.approx(32 * 4.0 * machines)
    assert asynchronous.staleness == workers - 1 and asynchronous.staleness_p99 == workers - 1
    assert sync.staleness == 0 and backups.staleness == 0


@pytest.mark.parametrize("workers", [2, 16, 1024])
def test_one_slow_machine_sets_the_pace_and_backups_drop_it(workers):
    dist, rng = step_times.OneSlowMachine(step_times.Constant(0.2), 5.0), np.random.default_rng(0)
    assert stragglers.simulate_sync(dist, workers, 32, 100, rng).seconds_per_update == pytest.approx(1.0, rel=1e-12)
    assert step_times.expected_max(dist, workers) == pytest.approx(1.0)
    assert step_times.expected_max(dist, workers, exact=False) == pytest.approx(1.0, rel=1e-3)
    one_backup = stragglers.simulate_sync(dist, workers, 32, 100, rng, backups=1)
    assert one_backup.seconds_per_update == pytest.approx(0.2, rel=1e-12)
    asynchronous = stragglers.simulate_async(dist, workers, 32, 2000, rng)
    assert asynchronous.updates_per_second == pytest.approx((workers - 1) / 0.2 + 1 / 1.0, rel=0.01)


def test_the_async_burn_in_window_and_backup_specs():
    assert [stragglers.backups_for("N/16", n) for n in (2, 16, 17, 1024)] == [1, 1, 2, 64]
    assert stragglers.backups_for("4", 1024) == 4 and stragglers.backups_for(0, 8) == 0
    with pytest.raises(ValueError):
        stragglers.backups_for("N/0", 8)
    assert stragglers.overtakes([2, 4, 8, 16], [True, False, True, True]) == 8
    assert stragglers.overtakes([2, 4, 8], [True, True, False]) is None
    assert stragglers.overtakes([2, 4, 8], [True, True, True]) == 2


def test_the_tool_writes_its_table_plot_and_crossovers(tmp_path):
    prefix = tmp_path / "s"
    run = run_tool(
        "stragglers.py",
        [
            "--workers=4,2,8",
            "--updates=300",
            "--backups=N/2",
            "--distributions=lognormal:1.0,slow_machine:4",
            f"--output_prefix={prefix}",
        ],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if "overtakes" in line or "vs sync" in line]
    assert len(lines) == 2 and lines[1].startswith("stragglers: one slow machine (x4")
    assert "async vs sync from N = 2" in lines[1]  # (N - 1 + 1/4) / t against N / (4 t)
    with open(f"{prefix}.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * 3 * 4  # distributions x N x (sync, backups, sync on N+b, async)
    slow_sync = [r for r in rows if r["distribution"].startswith("one slow") and r["mode"] == "sync"]
    assert [int(r["workers"]) for r in slow_sync] == [2, 4, 8]
    assert all(float(r["seconds_per_update"]) == pytest.approx(0.4) for r in slow_sync)  # 4 x the 0.1 s mean step
    assert all(r["closed_form_seconds_per_update"] for r in rows)
    text = (tmp_path / "s.md").read_text()
    assert "## lognormal(sigma=1)" in text and "python tools/stragglers.py" in text
    # the summary row: sync's efficiency at N = 8 is 8 / 4 over 7 + 1/4 workers' worth, 0.28; async ahead from N = 2
    assert "| one slow machine (x4, others constant) | 0.28 | from N = 2 |" in text
    height, width, _ = matplotlib.image.imread(f"{prefix}.png").shape
    assert width > 1.5 * height  # two panels side by side


def test_a_bad_flag_is_one_line_and_nothing_is_written(tmp_path):
    run = run_tool("stragglers.py", ["--distributions=lognormal:0.5,weibull:2", f"--output_prefix={tmp_path / 's'}"])
    lines = [line for line in run.stderr.splitlines() if line.startswith("stragglers:")]
    assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "'weibull:2'" in lines[0] and "lognormal:SIGMA" in lines[0] and not list(tmp_path.iterdir())
