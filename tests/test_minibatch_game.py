"""kbatch.study.minibatch_game: the Dirac GAN with minibatches (Mescheder et al. 2018), each closed
form against an independent reference: the field against finite differences of the loss written
out here, its Jacobian's eigenvalues against the paper's formula, the update map's against the
matrix of heavy-ball SGD and Keras's own step, E[s / s_hat] against Monte Carlo, the stationary
covariance against the Lyapunov series, the fixed points of the unbiased and batchnorm estimates
against batch averages of the field, the learning-rate bound and the spurious offset against
training with Keras's SGD."""

import math

import numpy as np
import pytest

from kbatch.study import minibatch_game as mg

GAMES = [mg.Game(s=0.0), mg.Game(s=0.0, gamma=0.5), mg.Game(s=1.0), mg.Game(s=2.0, gamma=0.3, mu=-1.0)]
WGAN = mg.GAMES["wgan"]


def _loss(game, theta, psi):
    """L(theta, psi) = f(D(theta)) + E f(-D(x)) with D(x) = psi (x - mu) / r, f written out, the
    expectation by a 200-point Gauss-Hermite rule (independent of the module's 64 points)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    f = (lambda t: -np.logaddexp(0.0, -t)) if game.loss == "gan" else (lambda t: t)
    x = game.mu + game.s * nodes
    return f(psi * (theta - game.mu) / game.scale) + np.sum(
        weights / weights.sum() * f(-psi * (x - game.mu) / game.scale)
    )


@pytest.mark.fast
@pytest.mark.parametrize("game", GAMES + [WGAN], ids=str)
def test_the_field_is_the_games_gradient(game):
    eps = 1e-6
    for theta, psi in [(0.3, -0.7), (1.2, 0.4)]:
        v_theta, v_psi = mg.field(game, [theta], [psi])
        dl_theta = (_loss(game, theta + eps, psi) - _loss(game, theta - eps, psi)) / (2 * eps)
        dl_psi = (_loss(game, theta, psi + eps) - _loss(game, theta, psi - eps)) / (2 * eps)
        np.testing.assert_allclose(v_theta, -dl_theta - game.decay * theta, atol=1e-7)
        np.testing.assert_allclose(v_psi, dl_psi - game.gamma * psi, atol=1e-7)


@pytest.mark.fast
@pytest.mark.parametrize("game", GAMES, ids=str)
def test_jacobian_eigenvalues_at_the_equilibrium_are_the_closed_form(game):
    """Mescheder et al. 2018: +-i f'(0) for the point mass, -g/2 +- sqrt(g^2/4 - f'(0)^2) with R1
    (here g = gamma + s^2/4 / r^2: the data's spread damps like R1)."""
    z = mg.equilibrium(game)
    np.testing.assert_allclose(mg.field(game, z[:1], z[1:]), 0.0, atol=1e-12)
    measured = np.sort_complex(np.linalg.eigvals(mg.field_jacobian(game, z)))
    g = game.gamma + 0.25 * (game.s / game.scale) ** 2
    root = np.sqrt(complex(g**2 / 4 - 0.25 / game.scale**2))
    np.testing.assert_allclose(measured, np.sort_complex([-g / 2 - root, -g / 2 + root]), atol=1e-5)


@pytest.mark.fast
def test_the_learning_rate_bound_and_the_momentum_map():
    lam = np.linalg.eigvals(mg.jacobian(mg.Game(s=0.0, gamma=0.5)))
    assert mg.lr_bound(lam) == pytest.approx(2.0)
    assert mg.lr_bound(np.linalg.eigvals(mg.jacobian(mg.Game(s=0.0)))) == 0.0
    assert np.abs(mg.map_eigenvalues(lam, 2.0)).max() == pytest.approx(1.0)
    jac, h, beta = mg.jacobian(WGAN), 0.07, 0.9
    heavy_ball = np.block([[np.eye(2) + h * jac, beta * np.eye(2)], [h * jac, beta * np.eye(2)]])
    expected = np.sort_complex(np.linalg.eigvals(heavy_ball))
    np.testing.assert_allclose(
        np.sort_complex(mg.map_eigenvalues(np.linalg.eigvals(jac), h, beta)), expected, atol=1e-9
    )


@pytest.mark.fast
@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_kerass_step_has_the_closed_form_eigenvalues(optimizer):
    game, beta = mg.Game(s=1.0, gamma=0.2), 0.9 if optimizer == "momentum" else 0.0
    lam = np.linalg.eigvals(mg.jacobian(game))
    measured = np.linalg.eigvals(mg.update_jacobian(game, optimizer, 0.3, mg.equilibrium(game)))
    np.testing.assert_allclose(
        np.sort(np.abs(measured)), np.sort(np.abs(mg.map_eigenvalues(lam, 0.3, beta))), atol=1e-6
    )


@pytest.mark.fast
def test_the_batchnorm_gain_against_monte_carlo_and_its_first_order():
    rng = np.random.default_rng(0)
    for batch in (4, 16):
        x = rng.standard_normal((200_000, batch)) * 2.0
        measured = np.mean(2.0 / x.std(axis=1, ddof=1))
        assert mg.gain(mg.Game(s=2.0), batch) * 2.0 == pytest.approx(measured, rel=3e-3)
    exact = mg.gain(mg.Game(s=1.0), 1001) - 1
    assert exact == pytest.approx(3 / (4 * 1000), rel=1e-2)
    with pytest.raises(ValueError, match="batch=2"):
        mg.gain(mg.Game(), 2)


@pytest.mark.fast
def test_the_stationary_covariance_is_the_lyapunov_series():
    game, h, batch = mg.Game(s=1.0), 0.5, 8
    a = np.eye(2) + h * mg.jacobian(game)
    q, term, total = h**2 * mg.noise_covariance(game, batch), np.eye(2), np.zeros((2, 2))
    for _ in range(3000):
        total += term @ q @ term.T
        term = a @ term
    np.testing.assert_allclose(mg.stationary_covariance(game, h, batch), total, rtol=1e-8)


def _mean_field(game, z, batch, estimate, draws=40_000, seed=0):
    """The batch average of the estimated field at z, and its standard error."""
    x = game.mu + game.s * np.random.default_rng(seed).standard_normal((draws, batch))
    v = np.stack(mg.field(game, np.full(draws, z[0]), np.full(draws, z[1]), x, estimate))
    return v.mean(axis=1), v.std(axis=1) / math.sqrt(draws)


@pytest.mark.fast
@pytest.mark.parametrize("game", [WGAN, mg.Game(mu=2.0, decay=0.5)], ids=["wgan", "gan decay"])
def test_the_unbiased_estimate_keeps_the_fixed_point_and_batchnorm_moves_it(game):
    z = mg.solve_equilibrium(game, (1.0, -1.0))
    mean, stderr = _mean_field(game, z, 8, "unbiased")
    assert np.all(np.abs(mean) < 4 * stderr + 1e-12), (mean, stderr)
    mean, stderr = _mean_field(game, z, 8, "batchnorm")
    assert np.any(np.abs(mean) > 10 * stderr), (mean, stderr)
    if game.loss == "wgan":
        mean, stderr = _mean_field(game, mg.equilibrium(game, 8), 8, "batchnorm")
        assert np.all(np.abs(mean) < 4 * stderr), (mean, stderr)


def test_just_below_the_learning_rate_bound_sgd_converges_and_just_above_it_does_not():
    """R1 0.5 on Mescheder's Dirac GAN: the bound is h = 2; Keras's SGD at 1.9 and 2.1."""
    game = mg.Game(s=0.0, gamma=0.5)
    below, _ = mg.train(game, "sgd", 1.9, [1], 1, 600, start=(1.01, 0.0))
    above, _ = mg.train(game, "sgd", 2.1, [1], 1, 600, start=(1.01, 0.0))
    assert np.linalg.norm(below[-1, :, 0] - (1.0, 0.0)) < 1e-6
    assert np.linalg.norm(above[-1, :, 0] - (1.0, 0.0)) > 0.1


def test_trained_batchnorm_players_sit_at_the_spurious_fixed_point_and_unbiased_ones_do_not():
    """WGAN, SGD at 0.2: at B = 64 the time average's offset is the first-order 3 / (4 (B-1)) term
    within 25%, at B = 4 the exact one within 10%; the unbiased estimate stays within 0.03 of theta*."""
    theta = mg.equilibrium(WGAN)[0]
    path, sizes = mg.train(WGAN, "sgd", 0.2, [4, 64], 16, 1500, "batchnorm")
    offsets = {b: mg._time_average(path, sizes, b)[0].mean() - theta for b in (4, 64)}
    assert offsets[64] == pytest.approx(mg.first_order_offset(WGAN, 64), rel=0.25)
    assert offsets[4] == pytest.approx(mg.equilibrium(WGAN, 4)[0] - theta, rel=0.1)
    path, sizes = mg.train(WGAN, "sgd", 0.2, [4], 8, 600, "unbiased")
    assert abs(mg._time_average(path, sizes, 4)[0].mean() - theta) < 0.03
