"""kbatch.study.nqm: the closed-form expected loss against a Monte Carlo simulation and against
the exact step-by-step covariance recursion, the steady state against Zhang et al. 2019's
formula, steps-to-target against a dense scan, the batch-size regimes of Zhang et al. 2019 and
Shallue et al. 2019, `fit`, the errors for bad input, and the stability limit."""

import numpy as np
import pytest

from kbatch.study import nqm

SMALL = nqm.power_law(8, 1.0, noise_per_curvature=2.0)
# Condition number 1000: ill-conditioned enough for momentum and preconditioning to matter.
ILL = nqm.power_law(100, 1.0, exponent=1.5)
BETA = 0.9


def step_sizes(problem, optimizer, lr, power=0.5):
    """The per-direction step size a_i, written out for the references below."""
    return lr * problem.curvatures**-power if optimizer == "preconditioned" else np.full(problem.dims, lr)


def covariance_recursion(problem, optimizer, lr, batch, last, momentum=BETA):
    """The exact expected loss at steps 0..last, one step at a time: the 2x2 covariance S of
    (theta_t, theta_{t-1}) in each direction goes to A S A^T + Q, A = [[1 + beta - a h, -beta],
    [1, 0]], Q = diag(a^2 c / B, 0), from S = m0 [[1, 1], [1, 1]] (zero velocity)."""
    h, a = problem.curvatures, step_sizes(problem, optimizer, lr)
    beta = momentum if optimizer == "momentum" else 0.0
    transition = np.zeros((problem.dims, 2, 2))
    transition[:, 0, 0], transition[:, 0, 1], transition[:, 1, 0] = 1 + beta - a * h, -beta, 1.0
    noise = np.zeros((problem.dims, 2, 2))
    noise[:, 0, 0] = a**2 * problem.noise / batch
    covariance = problem.initial_second_moments[:, None, None] * np.ones((problem.dims, 2, 2))
    losses = []
    for _ in range(last + 1):
        losses.append(0.5 * np.sum(h * covariance[:, 0, 0]))
        covariance = transition @ covariance @ transition.transpose(0, 2, 1) + noise
    return np.array(losses)


def lyapunov_steady_loss(problem, optimizer, lr, batch, momentum=BETA):
    """The steady state S = A S A^T + Q solved as a linear system (I - A (x) A) vec S = vec Q."""
    h, a = problem.curvatures, step_sizes(problem, optimizer, lr)
    beta = momentum if optimizer == "momentum" else 0.0
    total = 0.0
    for hi, ai, ci in zip(h, a, problem.noise):
        transition = np.array([[1 + beta - ai * hi, -beta], [1.0, 0.0]])
        noise = np.array([ai**2 * ci / batch, 0.0, 0.0, 0.0])
        covariance = np.linalg.solve(np.eye(4) - np.kron(transition, transition), noise)
        total += 0.5 * hi * covariance[0]
    return total


# 1. The closed form against the simulation and the exact recursion.


@pytest.mark.parametrize("optimizer", nqm.OPTIMIZERS)
@pytest.mark.parametrize("batch", [1, 256])
def test_expected_loss_matches_monte_carlo(optimizer, batch):
    lr = 0.4 * nqm.stability_limit(SMALL, optimizer)
    steps = np.array([0, 1, 2, 5, 10, 30, 100, 300])
    closed = nqm.expected_loss(SMALL, optimizer, lr, batch, steps)
    mean, error = nqm.simulate(SMALL, optimizer, lr, batch, steps, runs=4000, seed=1)
    assert np.all(np.abs(closed - mean) < 4 * error), (closed, mean, error)


@pytest.mark.parametrize("optimizer", nqm.OPTIMIZERS)
@pytest.mark.parametrize("fraction", [3e-4, 0.01, 0.3, 0.9, 0.999])
def test_expected_loss_matches_exact_recursion(optimizer, fraction):
    # Small fractions put momentum's slow directions in the over-damped (real-root) regime,
    # large ones in the under-damped (complex) regime.
    lr = fraction * nqm.stability_limit(SMALL, optimizer)
    closed = nqm.expected_loss(SMALL, optimizer, lr, 16, np.arange(2001))
    np.testing.assert_allclose(closed, covariance_recursion(SMALL, optimizer, lr, 16, 2000), rtol=1e-9)


@pytest.mark.parametrize("curvature", [(1 - BETA**0.5) ** 2, (1 + BETA**0.5) ** 2])
def test_momentum_at_critical_damping_matches_exact_recursion(curvature):
    # With lr = 1, a direction whose h makes (1 + beta - h)^2 = 4 beta has a double root.
    problem = nqm.NoisyQuadratic([curvature, 0.3], [0.5, 0.2], [1.0, 2.0])
    closed = nqm.expected_loss(problem, "momentum", 1.0, 4, np.arange(3001))
    np.testing.assert_allclose(closed, covariance_recursion(problem, "momentum", 1.0, 4, 3000), rtol=1e-5)


def test_steps_need_not_be_sorted_and_may_repeat():
    lr = 0.5
    steps = np.array([7, 0, 7, 3])
    closed = nqm.expected_loss(SMALL, "momentum", lr, 8, steps)
    np.testing.assert_allclose(closed, covariance_recursion(SMALL, "momentum", lr, 8, 7)[steps], rtol=1e-12)
    assert nqm.simulate(SMALL, "momentum", lr, 8, steps, runs=10)[0].shape == (4,)


# 2. The steady state.


@pytest.mark.parametrize("optimizer", ["sgd", "preconditioned"])
@pytest.mark.parametrize("batch", [1, 64])
def test_steady_state_is_zhang_et_al_formula(optimizer, batch):
    lr = 0.8 * nqm.stability_limit(ILL, optimizer)
    h, c, a = ILL.curvatures, ILL.noise, step_sizes(ILL, optimizer, lr)
    formula = np.sum(a * c / (2 * batch * (2 - a * h)))  # 1/2 h M_inf, M_inf = a c / (B h (2 - a h))
    assert nqm.steady_state_loss(ILL, optimizer, lr, batch) == pytest.approx(formula, rel=1e-12)
    late = nqm.expected_loss(ILL, optimizer, lr, batch, [10**6])[0]
    assert late == pytest.approx(formula, rel=1e-9)


@pytest.mark.parametrize("optimizer", nqm.OPTIMIZERS)
def test_steady_state_is_the_fixed_point_of_the_recursion(optimizer):
    lr = 0.6 * nqm.stability_limit(SMALL, optimizer)
    fixed_point = lyapunov_steady_loss(SMALL, optimizer, lr, 8)
    assert nqm.steady_state_loss(SMALL, optimizer, lr, 8) == pytest.approx(fixed_point, rel=1e-10)
    assert nqm.expected_loss(SMALL, optimizer, lr, 8, [10**5])[0] == pytest.approx(fixed_point, rel=1e-9)


# 3. Steps to target: the first crossing.


def assert_first_crossing(problem, optimizer, lr, batch, target, horizon):
    steps = nqm.steps_to_target(problem, optimizer, lr, batch, target, max_steps=horizon)
    losses = nqm.expected_loss(problem, optimizer, lr, batch, np.arange(horizon + 1))
    if steps is None:
        assert np.all(losses > target)
    else:
        assert losses[steps] <= target and np.all(losses[:steps] > target), steps
    return steps, losses


@pytest.mark.parametrize("optimizer", nqm.OPTIMIZERS)
@pytest.mark.parametrize("fraction", [0.001, 0.1, 0.5, 0.95])
@pytest.mark.parametrize("target_fraction", [0.9, 0.1, 0.02])
def test_steps_to_target_is_the_first_crossing(optimizer, fraction, target_fraction):
    lr = fraction * nqm.stability_limit(ILL, optimizer)
    assert_first_crossing(ILL, optimizer, lr, 64, target_fraction * ILL.initial_loss, 5000)


def test_steps_to_target_finds_a_crossing_the_loss_later_undoes():
    # Near the stability limit the stiffest, noisiest directions rise slowly toward a high
    # steady state while the rest fall: the loss dips below the target and comes back, so
    # bisecting on "loss(t) <= target" would miss the crossing.
    lr = 0.999 * nqm.stability_limit(ILL, "sgd")
    target = 0.9
    steps, losses = assert_first_crossing(ILL, "sgd", lr, 256, target, 5000)
    assert steps is not None and losses[-1] > target
    assert nqm.steady_state_loss(ILL, "sgd", lr, 256) > target


def test_steps_to_target_is_none_below_the_steady_state():
    lr = 0.5 * nqm.stability_limit(ILL, "sgd")
    steady = nqm.steady_state_loss(ILL, "sgd", lr, 4)
    assert nqm.steps_to_target(ILL, "sgd", lr, 4, 0.99 * steady) is None
    assert nqm.steps_to_target(ILL, "sgd", lr, 4, 1.01 * steady) is not None
    assert nqm.steps_to_target(ILL, "sgd", lr, 4, ILL.initial_loss) == 0


@pytest.mark.parametrize("optimizer, fraction", [("sgd", 0.01), ("momentum", 0.001), ("preconditioned", 0.01)])
def test_steps_to_target_matches_the_simulated_crossing(optimizer, fraction):
    lr = fraction * nqm.stability_limit(SMALL, optimizer)  # about 50 steps
    target = 0.3 * SMALL.initial_loss
    steps = nqm.steps_to_target(SMALL, optimizer, lr, 64, target)
    mean, error = nqm.simulate(SMALL, optimizer, lr, 64, np.arange(2 * steps), runs=4000, seed=2)
    simulated = int(np.flatnonzero(mean <= target)[0])
    # The simulated mean is within 4 standard errors of the expected loss, so it crosses
    # between the steps at which the expected loss crosses target +- 4 standard errors.
    margin = 4 * error[steps]
    early = nqm.steps_to_target(SMALL, optimizer, lr, 64, target + margin)
    late = nqm.steps_to_target(SMALL, optimizer, lr, 64, target - margin)
    assert early <= simulated <= late and late - early <= max(2, 0.1 * steps), (early, simulated, late)


# 4. The batch-size regimes, with the learning rate tuned at every batch.

BATCHES = [2**k for k in range(17)]
TARGET = 0.01 * ILL.initial_loss


@pytest.fixture(scope="module")
def curves():
    return {optimizer: nqm.steps_curve(ILL, optimizer, BATCHES, TARGET) for optimizer in nqm.OPTIMIZERS}


def critical_batch(curve):
    """The first batch at which the examples to target, B * steps(B), reach twice the smallest
    batch's: the end of perfect scaling."""
    examples = [point["batch"] * point["steps"] for point in curve]
    return next(point["batch"] for point, n in zip(curve, examples) if n >= 2 * examples[0])


@pytest.mark.parametrize("optimizer", nqm.OPTIMIZERS)
def test_doubling_a_small_batch_halves_the_steps(curves, optimizer):
    steps = [point["steps"] for point in curves[optimizer]]
    lrs = [point["lr"] for point in curves[optimizer]]
    for b in range(3):
        assert steps[b + 1] / steps[b] == pytest.approx(0.5, abs=0.01)
        assert lrs[b + 1] / lrs[b] == pytest.approx(2.0)  # the linear scaling rule, found by the search


@pytest.mark.parametrize("optimizer", nqm.OPTIMIZERS)
def test_large_batches_stop_helping_near_the_noiseless_optimum(curves, optimizer):
    steps = [point["steps"] for point in curves[optimizer]]
    assert steps[-1] / steps[-2] > 0.95
    noiseless = nqm.NoisyQuadratic(ILL.curvatures, np.zeros(ILL.dims), ILL.initial_second_moments)
    deterministic, _ = nqm.best_steps(noiseless, optimizer, 1, TARGET)
    # Noise only adds variance, so no batch beats the noiseless steps; the largest comes close.
    assert deterministic <= min(steps) and steps[-1] <= 1.1 * deterministic


def test_preconditioning_and_momentum_raise_the_critical_batch(curves):
    sgd = critical_batch(curves["sgd"])
    assert critical_batch(curves["preconditioned"]) >= 4 * sgd
    assert critical_batch(curves["momentum"]) >= 4 * sgd


def test_momentum_helps_only_at_large_batch(curves):
    # Zhang et al. 2019: at small batch heavy ball acts as SGD with the learning rate
    # lr / (1 - beta); its gain over SGD appears past SGD's critical batch.
    sgd, momentum = curves["sgd"], curves["momentum"]
    for b in range(2):
        assert momentum[b]["steps"] == pytest.approx(sgd[b]["steps"], rel=0.01)
        assert momentum[b]["lr"] == pytest.approx((1 - BETA) * sgd[b]["lr"], rel=0.2)
    assert momentum[-1]["steps"] < 0.5 * sgd[-1]["steps"]


def test_best_steps_is_the_minimum_over_the_grid():
    grid = nqm.learning_rate_grid(ILL, "momentum", per_doubling=2, doublings=12)
    every = [nqm.steps_to_target(ILL, "momentum", lr, 64, TARGET) for lr in grid]
    fewest = min(s for s in every if s is not None)
    largest_lr = max(lr for lr, s in zip(grid, every) if s == fewest)
    assert nqm.best_steps(ILL, "momentum", 64, TARGET, lrs=grid) == (fewest, largest_lr)
    assert nqm.best_steps(ILL, "sgd", 64, 1e-9) == (None, None)


# 5. fit and bad input.


def test_fit_reproduces_the_measurements():
    fitted = nqm.fit(top_curvature=3.0, b_simple=50.0, initial_loss=2.3, dims=200)
    assert fitted.curvatures.max() == pytest.approx(3.0)
    mean, error = nqm.simulate(fitted, "sgd", 0.1, 1, [0], runs=10000)
    assert abs(mean[0] - 2.3) < 4 * error[0]
    theta = np.random.default_rng(3).standard_normal((10000, 200)) * np.sqrt(fitted.initial_second_moments)
    gradient_sq = np.mean(np.sum((fitted.curvatures * theta) ** 2, axis=1))  # E|G|^2 at initialization
    assert fitted.noise.sum() / gradient_sq == pytest.approx(50.0, rel=0.03)
    assert fitted.b_simple == pytest.approx(50.0, rel=1e-12)
    assert fitted.initial_loss == pytest.approx(2.3, rel=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: nqm.NoisyQuadratic([1.0, -1.0], [1.0, 1.0], [1.0, 1.0]), r"^curvatures\[1\]=-1\.0: must be"),
        (lambda: nqm.NoisyQuadratic([1.0, 2.0], [1.0], [1.0, 1.0]), r"^noise\.shape=\(1,\): must be \(2,\)"),
        (lambda: nqm.NoisyQuadratic([1.0], [1.0], [np.nan]), r"^initial_second_moments\[0\]=nan"),
        (lambda: nqm.NoisyQuadratic([[1.0]], [1.0], [1.0]), r"^curvatures\.shape=\(1, 1\)"),
        (lambda: nqm.expected_loss(SMALL, "adam", 0.1, 1, [1]), r"^optimizer='adam': must be one of 'sgd'"),
        (lambda: nqm.expected_loss(SMALL, "sgd", -0.1, 1, [1]), r"^lr=-0\.1: must be"),
        (lambda: nqm.expected_loss(SMALL, "sgd", 0.1, 0, [1]), r"^batch=0: must be"),
        (lambda: nqm.expected_loss(SMALL, "sgd", 0.1, 1, [1.5]), r"^steps\.dtype='float64'"),
        (lambda: nqm.expected_loss(SMALL, "sgd", 0.1, 1, [3, -1]), r"^steps\[1\]=-1"),
        (lambda: nqm.expected_loss(SMALL, "momentum", 0.1, 1, [1], momentum=1.0), r"^momentum=1\.0"),
        (lambda: nqm.steps_to_target(SMALL, "sgd", 0.1, 1, 0.0), r"^target=0\.0"),
        (lambda: nqm.fit(-1.0, 10.0, 1.0), r"^top_curvature=-1\.0"),
        (lambda: nqm.fit(1.0, 0.0, 1.0), r"^b_simple=0\.0"),
        (lambda: nqm.power_law(0, 1.0), r"^dims=0"),
        (lambda: nqm.expected_loss("not an nqm", "sgd", 0.1, 1, [1]), r"^nqm='not an nqm'"),
    ],
)
def test_bad_input_raises_one_line_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


# 6. The stability limit.


@pytest.mark.parametrize(
    "optimizer, limit", [("sgd", 2 / 4), ("momentum", 2 * (1 + BETA) / 4), ("preconditioned", 2 / 4**0.5)]
)
def test_beyond_the_stability_limit_the_loss_diverges(optimizer, limit):
    problem = nqm.power_law(8, 4.0)
    assert nqm.stability_limit(problem, optimizer) == pytest.approx(limit)
    for lr in (limit, 1.05 * limit):
        assert nqm.steady_state_loss(problem, optimizer, lr, 8) == np.inf
        losses = nqm.expected_loss(problem, optimizer, lr, 8, np.arange(5))
        assert losses[0] == problem.initial_loss and np.all(losses[1:] == np.inf)
        assert nqm.steps_to_target(problem, optimizer, lr, 8, 0.5 * problem.initial_loss) is None
    with np.errstate(over="ignore", invalid="ignore"):
        simulated, _ = nqm.simulate(problem, optimizer, 1.05 * limit, 8, [300], runs=100)
    assert simulated[0] > 1e3 * problem.initial_loss
    assert np.isfinite(nqm.steady_state_loss(problem, optimizer, 0.99 * limit, 8))
