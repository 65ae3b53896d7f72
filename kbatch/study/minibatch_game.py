"""A minibatch two-player game: the Dirac GAN against the learning rate and the batch size.

The Dirac GAN of Mescheder, Geiger & Nowozin 2018 ("Which Training Methods for GANs do actually
Converge?", section 2), with data x ~ N(mu, s^2) (s = 0: their point mass) so that batches matter:
the generator is a point mass at theta, the discriminator D(x) = psi (x - c) / r, and the players
follow the simultaneous gradient field v = (-dL/dtheta - decay theta, dL/dpsi - gamma psi) of
L = f(D(theta)) + E_data f(-D(x)), with f(t) = -log(1 + exp(-t)) (`loss="gan"`) or f(t) = t
(`"wgan"`), gamma the R1 penalty and decay the generator's weight decay. Two estimates of the data
term from a batch of B points: `"unbiased"` (c, r the data's mean and scale: each example's term
averaged) and `"batchnorm"` (c, r the batch's mean and standard deviation, as a batch-normalized
discriminator input: consistent, biased by O(1/B)).

Closed forms (this module's docstrings derive them): the Jacobian at the equilibrium, the update
map's eigenvalues 1 + h lambda (momentum: the roots of m^2 - (1 + beta + h lambda) m + beta), the
learning-rate bound, the stationary covariance of SGD, and the batchnorm estimate's spurious fixed
point (exact for `"wgan"`, and to first order in 1/B). Measured: the same with Keras's SGD, SGD with
momentum and kbatch's LARS acting on the players as Keras variables.

  python -m kbatch.study.minibatch_game OUT_DIR [--steps=3000] [--seeds=8]

writes OUT_DIR/minibatch_game.csv and OUT_DIR/minibatch_game.png, prints a line per grid point.
"""

import argparse
import csv
import dataclasses
import math
import os
import time

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

ESTIMATES = ("unbiased", "batchnorm")
COLUMNS = ("part", "game", "estimate", "optimizer", "lr", "batch", "quantity", "closed_form", "measured")
_NODES, _WEIGHTS = hermegauss(64)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


@dataclasses.dataclass(frozen=True)
class Game:
    """The game's constants: the loss, the data's mean and scale, the R1 weight, the generator's decay."""

    loss: str = "gan"
    mu: float = 1.0
    s: float = 1.0
    gamma: float = 0.0
    decay: float = 0.0

    @property
    def scale(self):
        """r of the unbiased discriminator: the data's scale, 1 for Mescheder's point mass (s = 0)."""
        return self.s if self.s > 0 else 1.0

    @property
    def slopes(self):
        """(f'(0), f''(0)): (1/2, -1/4) for the GAN loss, (1, 0) for the Wasserstein one."""
        return (0.5, -0.25) if self.loss == "gan" else (1.0, 0.0)

    def f_prime(self, t):
        return 1.0 / (1.0 + np.exp(t)) if self.loss == "gan" else np.ones_like(t)


def field(game, theta, psi, x=None, estimate="unbiased"):
    """The simultaneous gradient field (v_theta, v_psi) at replicas `theta`, `psi` (shape (R,)) from
    batches `x` (shape (R, B)); x None: the population field (Gauss-Hermite quadrature, exact)."""
    theta, psi = np.asarray(theta, np.float64), np.asarray(psi, np.float64)
    if x is None:
        x, weights = game.mu + game.s * _NODES[None, :], _WEIGHTS[None, :]
    else:
        x, weights = np.asarray(x, np.float64), np.full(np.shape(x)[-1], 1.0 / np.shape(x)[-1])[None, :]
    if estimate == "batchnorm":
        centre, scale = x.mean(axis=-1), x.std(axis=-1, ddof=1)
    else:
        centre, scale = np.full_like(theta, game.mu), np.full_like(theta, game.scale)
    fake, real = (theta - centre) / scale, (x - centre[:, None]) / scale[:, None]
    f_fake = game.f_prime(psi * fake)
    v_theta = -psi / scale * f_fake - game.decay * theta
    v_psi = fake * f_fake - np.sum(weights * real * game.f_prime(-psi[:, None] * real), axis=-1) - game.gamma * psi
    return v_theta, v_psi


def field_jacobian(game, z, eps=1e-6):
    """The Jacobian of the population field at z = (theta, psi), by central differences."""
    z = np.asarray(z, np.float64)
    points = np.concatenate([z + eps * np.eye(2), z - eps * np.eye(2)])
    v = np.stack(field(game, points[:, 0], points[:, 1]), axis=1)
    return ((v[:2] - v[2:]) / (2 * eps)).T


def gain(game, batch=None):
    """E[s / s_hat] / s, the batchnorm discriminator's expected slope per unit psi (batch None: 1/r).
    s_hat^2 ~ s^2 chi^2_{B-1} / (B-1), so E[s / s_hat] = sqrt((B-1)/2) Gamma((B-2)/2) / Gamma((B-1)/2),
    = 1 + 3 / (4 (B-1)) + O(1/B^2) by a second-order Taylor term of y^(-1/2) (Jensen: above 1)."""
    if batch is None:
        return 1.0 / game.scale
    if batch < 3:
        raise ValueError(f"batch={batch}: E[1/s_hat] is infinite below 3 examples")
    k = batch - 1
    return math.sqrt(k / 2) * math.exp(math.lgamma((k - 1) / 2) - math.lgamma(k / 2)) / game.s


def equilibrium(game, batch=None):
    """The fixed point of the expected field. GAN loss without decay: (mu, 0) (Mescheder et al.
    2018). WGAN: g (theta - mu) = gamma psi, g psi = -decay theta, so theta* = mu g^2 / (g^2 + gamma
    decay), psi* = -decay theta* / g, with g = gain(game, batch): it moves with B (batchnorm)."""
    if game.loss == "wgan":
        g = gain(game, batch)
        theta = game.mu * g**2 / (g**2 + game.gamma * game.decay)
        return np.array([theta, -game.decay * theta / g])
    if game.decay:
        raise ValueError("the GAN loss with decay has no closed-form equilibrium")
    return np.array([game.mu, 0.0])


def first_order_offset(game, batch):
    """theta*(B) - theta*(inf) to first order in 1/B for the batchnorm WGAN: d theta*/d g times
    g(B) - g(inf) = 3 / (4 (B-1) s), with d theta*/d g = 2 mu g gamma decay / (g^2 + gamma decay)^2."""
    g, gd = 1.0 / game.s, game.gamma * game.decay
    return 2 * game.mu * g * gd / (g**2 + gd) ** 2 * 3 / (4 * (batch - 1) * game.s)


def jacobian(game, batch=None):
    """The expected field's Jacobian at the equilibrium, closed form. WGAN: [[-decay, -g], [g, -gamma]].
    GAN (no decay): [[0, -f'(0)/r], [f'(0)/r, f''(0) (s/r)^2 - gamma]] (Mescheder et al. 2018, eq. 5
    with R1; the data's spread damps the discriminator like R1 with gamma = s^2/4 after scaling by r)."""
    f1, f2 = game.slopes
    if game.loss == "wgan":
        g = gain(game, batch)
        return np.array([[-game.decay, -g], [g, -game.gamma]])
    equilibrium(game)  # refuses the GAN loss with decay: no closed form
    r = game.scale
    return np.array([[0.0, -f1 / r], [f1 / r, f2 * (game.s / r) ** 2 - game.gamma]])


def map_eigenvalues(eigenvalues, lr, momentum=0.0):
    """The eigenvalues of one step of heavy-ball SGD, w' = w + beta m + h v(w) (Keras's SGD), near a
    fixed point where v has Jacobian eigenvalues lambda: the roots of m^2 - (1 + beta + h lambda) m
    + beta; 1 + h lambda without momentum (Mescheder et al. 2018, Lemma 2.3; Polyak 1964)."""
    if not momentum:
        return 1 + lr * np.asarray(eigenvalues)
    return np.concatenate([np.roots([1.0, -(1 + momentum + lr * lam), momentum]) for lam in eigenvalues])


def lr_bound(eigenvalues):
    """The largest h with |1 + h lambda| < 1 for every eigenvalue: min -2 Re(lambda) / |lambda|^2
    (0 where some Re(lambda) >= 0: no learning rate converges)."""
    lam = np.asarray(eigenvalues, np.complex128)
    return float(max(0.0, np.min(-2 * lam.real / np.abs(lam) ** 2)))


def noise_covariance(game, batch):
    """The covariance of the unbiased estimate at the equilibrium (no decay, or WGAN): only v_psi is
    noisy, by f'(0) times the batch mean of (x - mu)/r: variance f'(0)^2 (s/r)^2 / B."""
    f1 = game.slopes[0]
    return np.diag([0.0, f1**2 * (game.s / game.scale) ** 2 / batch])


def stationary_covariance(game, lr, batch):
    """SGD's stationary covariance of (theta, psi) around the equilibrium, linearized: P = A P A^T +
    h^2 Q with A = I + h J (a discrete Lyapunov equation), solved through vec(P) = (I - A (x) A)^-1 vec(h^2 Q)."""
    a = np.eye(2) + lr * jacobian(game)
    q = lr**2 * noise_covariance(game, batch)
    return np.linalg.solve(np.eye(4) - np.kron(a, a), q.reshape(-1)).reshape(2, 2)


def _optimizer(name, lr):
    """Keras's SGD, SGD with momentum 0.9, or kbatch's LARS (momentum 0.9, trust coefficient 0.001)."""
    import keras

    from kbatch.optimizers import LARS

    if name == "lars":
        return LARS(learning_rate=lr, momentum=0.9, exclude_from_weight_decay=())
    return keras.optimizers.SGD(learning_rate=lr, momentum=0.9 if name == "momentum" else 0.0)


def _variables(z):
    """theta and psi as float64 Keras variables, one entry per replica (z has shape (R, 2))."""
    import keras

    return [keras.Variable(np.asarray(z, np.float64)[:, i], dtype="float64", name=n) for i, n in enumerate("tp")]


def update_jacobian(game, optimizer, lr, z, eps=1e-5, x=None, estimate="unbiased"):
    """The Jacobian of one step of a Keras optimizer at the fixed point z (its state: the players, and
    the momenta for "momentum"), by central differences, all 2 dim perturbed copies stepped at once;
    x: one batch (shape (B,)) shared by the copies, None: the population field."""
    dim = 4 if optimizer == "momentum" else 2
    state = np.concatenate([z, np.zeros(2)])[None, :] + eps * np.concatenate([np.eye(4)[:dim], -np.eye(4)[:dim]])
    opt, variables = _optimizer(optimizer, lr), _variables(state[:, :2])
    opt.build(variables)
    if dim == 4:
        for i, momentum in enumerate(opt.momentums):
            momentum.assign(state[:, 2 + i])
    v_theta, v_psi = field(game, state[:, 0], state[:, 1], None if x is None else np.tile(x, (2 * dim, 1)), estimate)
    opt.apply_gradients([(-v_theta, variables[0]), (-v_psi, variables[1])])
    after = [v.numpy() for v in variables] + ([m.numpy() for m in opt.momentums] if dim == 4 else [])
    after = np.stack(after[:dim], axis=1)
    return ((after[:dim] - after[dim:]) / (2 * eps)).T


def solve_equilibrium(game, start, iterations=50):
    """The population field's zero near `start` by Newton's method (the GAN loss with decay has no
    closed form)."""
    z = np.asarray(start, np.float64)
    for _ in range(iterations):
        z = z - np.linalg.solve(field_jacobian(game, z), np.concatenate(field(game, z[:1], z[1:])))
    return z


def train(game, optimizer, lr, batches, seeds, steps, estimate="unbiased", start=None, seed=0):
    """`steps` updates of one replica per (batch, seed), all started at `start` (default: the
    equilibrium), each drawing its own batches; returns the path, shape (steps, 2, replicas), and
    the replicas' batch sizes. LARS normalizes per variable, so it takes one replica at a time."""
    sizes = np.repeat(batches, seeds)
    if optimizer == "lars" and len(sizes) > 1:
        raise ValueError("LARS couples replicas through its per-variable norm: one batch and one seed")
    start = equilibrium(game) if start is None else np.asarray(start, np.float64)
    opt, variables = _optimizer(optimizer, lr), _variables(np.tile(start, (len(sizes), 1)))
    rng = np.random.default_rng(seed)
    path = np.empty((steps, 2, len(sizes)))
    for t in range(steps):
        theta, psi = variables[0].numpy(), variables[1].numpy()
        parts = []
        for batch in batches:
            mine = sizes == batch
            x = game.mu + game.s * rng.standard_normal((seeds, batch))
            parts.append(field(game, theta[mine], psi[mine], x, estimate))
        v_theta, v_psi = (np.concatenate(p) for p in zip(*parts))
        opt.apply_gradients([(-v_theta, variables[0]), (-v_psi, variables[1])])
        path[t] = variables[0].numpy(), variables[1].numpy()
    return path, sizes


GAMES = {
    "dirac": Game(s=0.0),
    "dirac R1 0.5": Game(s=0.0, gamma=0.5),
    "gaussian": Game(s=1.0),
    "wgan": Game(loss="wgan", mu=2.0, gamma=1.0, decay=1.0),
    "gan decay": Game(mu=2.0, decay=0.5),
}
MOMENTUM = 0.9
RATES = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
BATCHES = (4, 8, 16, 32, 64, 128, 256)


def _row(part, game, estimate, optimizer, lr, batch, quantity, closed_form, measured):
    row = dict(zip(COLUMNS, (part, game, estimate, optimizer, lr, batch, quantity, closed_form, measured)))
    print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def eigen_rows(rates=RATES):
    """Part 1: the largest |eigenvalue| of one step at the equilibrium against the effective rate
    h / (1 - beta), closed form against finite differences of Keras's SGD step (population field)."""
    rows = []
    for name in ("dirac", "dirac R1 0.5", "gaussian"):
        game = GAMES[name]
        lam = np.linalg.eigvals(jacobian(game))
        for optimizer, beta in (("sgd", 0.0), ("momentum", MOMENTUM)):
            for rate in rates:
                closed = np.abs(map_eigenvalues(lam, rate * (1 - beta), beta)).max()
                jac = update_jacobian(game, optimizer, rate * (1 - beta), equilibrium(game))
                measured = np.abs(np.linalg.eigvals(jac)).max()
                rows.append(_row("eigen", name, "population", optimizer, rate, 0, "max|eig|", closed, measured))
    return rows


def bound_rows(batches=BATCHES, draws=400, seed=0):
    """Part 1b: SGD's learning-rate bound of the batchnorm WGAN against B, from the closed-form
    Jacobian and from the mean over `draws` batches of the finite-difference Jacobian of Keras's step."""
    game, rng, rows = GAMES["wgan"], np.random.default_rng(seed), []
    for batch in batches:
        z = equilibrium(game, batch)
        draw = [game.mu + game.s * rng.standard_normal(batch) for _ in range(draws)]
        jacs = [update_jacobian(game, "sgd", 1.0, z, x=x, estimate="batchnorm") for x in draw]
        measured = lr_bound(np.linalg.eigvals(np.mean(jacs, axis=0) - np.eye(2)))
        closed = lr_bound(np.linalg.eigvals(jacobian(game, batch)))
        rows.append(_row("bound", "wgan", "batchnorm", "sgd", 0.0, batch, "lr_bound", closed, measured))
    return rows


def _time_average(path, sizes, batch):
    """The replicas of `batch`: their iterates averaged over the second half of the run, per replica."""
    return path[len(path) // 2 :, :, sizes == batch].mean(axis=0)


def offset_rows(batches=BATCHES, steps=3000, seeds=8, lr=0.1):
    """Part 2: theta's time average minus theta*(inf), the population game's equilibrium, against B:
    the WGAN (closed forms: exact, first order) with SGD, momentum (at the same h / (1 - beta)) and
    LARS (one seed, at 8 and 64, learning rate 1), and the GAN loss with decay (measured only)."""
    rows = []
    runs = [("wgan", e, "sgd", lr, batches, seeds) for e in ESTIMATES]
    runs += [("wgan", "batchnorm", "momentum", lr * (1 - MOMENTUM), batches, seeds)]
    runs += [("wgan", "batchnorm", "lars", 1.0, [b], 1) for b in (8, 64)]
    runs += [("gan decay", e, "sgd", lr, batches, seeds) for e in ESTIMATES]
    for name, estimate, optimizer, rate, chosen, count in runs:
        game = GAMES[name]
        start = solve_equilibrium(game, (1.0, -1.0)) if name == "gan decay" else equilibrium(game)
        path, sizes = train(game, optimizer, rate, chosen, count, steps, estimate, start)
        for batch in chosen:
            theta = _time_average(path, sizes, batch)[0] - start[0]
            if name == "gan decay":
                closed = float("nan")
            else:
                closed = 0.0 if estimate == "unbiased" else equilibrium(game, batch)[0] - start[0]
            rows.append(_row("offset", name, estimate, optimizer, rate, batch, "theta_offset", closed, theta.mean()))
            if name == "wgan" and estimate == "batchnorm" and optimizer == "sgd":
                first = first_order_offset(game, batch)
                rows.append(_row("offset", name, estimate, optimizer, rate, batch, "first_order", first, theta.mean()))
            spread = theta.std(ddof=1) / np.sqrt(len(theta)) if len(theta) > 1 else float("nan")
            rows.append(_row("offset", name, estimate, optimizer, rate, batch, "offset_stderr", 0.0, spread))
    return rows


def spread_rows(batches=(1, 4, 16, 64, 256), rates=(0.1, 0.5), steps=3000, seeds=8):
    """Part 3: SGD's stationary variance of theta and psi around the Gaussian game's equilibrium
    against B, the discrete Lyapunov equation's against the variance over time and seeds."""
    game, rows = GAMES["gaussian"], []
    for rate in rates:
        path, sizes = train(game, "sgd", rate, batches, seeds, steps)
        for batch in batches:
            tail = path[len(path) // 2 :, :, sizes == batch]
            closed = stationary_covariance(game, rate, batch)
            for i, quantity in enumerate(("var_theta", "var_psi")):
                measured = float(np.mean((tail[:, i] - equilibrium(game)[i]) ** 2))
                rows.append(
                    _row("spread", "gaussian", "unbiased", "sgd", rate, batch, quantity, closed[i, i], measured)
                )
    return rows


def grid(steps=3000, seeds=8):
    """All four parts' rows."""
    return eigen_rows() + bound_rows() + offset_rows(steps=steps, seeds=seeds) + spread_rows(steps=steps, seeds=seeds)


def _select(rows, **where):
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def _plot_eigen(ax, rows):
    dense = np.linspace(0.01, max(r["lr"] for r in _select(rows, part="eigen")), 200)
    for i, name in enumerate(("dirac", "dirac R1 0.5", "gaussian")):
        lam = np.linalg.eigvals(jacobian(GAMES[name]))
        for optimizer, beta, style in (("sgd", 0.0, "-"), ("momentum", MOMENTUM, ":")):
            closed = [np.abs(map_eigenvalues(lam, h * (1 - beta), beta)).max() for h in dense]
            ax.plot(dense, closed, style, color=f"C{i}", label=f"{name}, {optimizer}")
            mine = _select(rows, part="eigen", game=name, optimizer=optimizer)
            ax.plot([r["lr"] for r in mine], [r["measured"] for r in mine], "o" if beta == 0 else "s", color=f"C{i}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xlabel="effective learning rate h / (1 - beta)", ylabel="max |eigenvalue| of one step", ylim=(0.4, 2.0))
    ax.set_title("stability at the equilibrium (lines: closed form, points: Keras)", fontsize=9)
    ax.legend(fontsize=7)


def _plot_offset(ax, rows):
    exact = _select(rows, part="offset", game="wgan", estimate="batchnorm", optimizer="sgd", quantity="theta_offset")
    first = _select(rows, part="offset", quantity="first_order")
    ax.plot([r["batch"] for r in exact], [abs(r["closed_form"]) for r in exact], "k-", label="WGAN+BN closed form")
    ax.plot([r["batch"] for r in first], [abs(r["closed_form"]) for r in first], "k--", label="first order 1/B")
    series = [("wgan", e, o) for e, o in (("batchnorm", "sgd"), ("batchnorm", "momentum"), ("batchnorm", "lars"))]
    series += [("wgan", "unbiased", "sgd"), ("gan decay", "batchnorm", "sgd"), ("gan decay", "unbiased", "sgd")]
    for i, (name, estimate, optimizer) in enumerate(series):
        mine = _select(rows, part="offset", game=name, estimate=estimate, optimizer=optimizer, quantity="theta_offset")
        marker = {"sgd": "o", "momentum": "s", "lars": "^"}[optimizer]
        ax.plot(
            [r["batch"] for r in mine],
            [abs(r["measured"]) for r in mine],
            marker,
            color=f"C{i}",
            label=f"{name}, {estimate}, {optimizer}",
        )
    ax.set(xscale="log", yscale="log", xlabel="batch B", ylabel="|time-averaged theta - theta*(population)|")
    ax.set_ylim(1e-5, 1.0)  # a run that diverged (momentum at B <= 8) is off the panel
    ax.set_title("fixed point: biased (batchnorm) vs unbiased estimate", fontsize=9)
    ax.legend(fontsize=7)


def _plot_spread(ax, rows):
    for i, rate in enumerate(sorted({r["lr"] for r in _select(rows, part="spread")})):
        for quantity, style in (("var_theta", "o"), ("var_psi", "s")):
            mine = _select(rows, part="spread", lr=rate, quantity=quantity)
            batches = [r["batch"] for r in mine]
            ax.plot(batches, [r["closed_form"] for r in mine], "-" if style == "o" else "--", color=f"C{i}")
            ax.plot(batches, [r["measured"] for r in mine], style, color=f"C{i}", label=f"{quantity}, h={rate}")
    ax.set(xscale="log", yscale="log", xlabel="batch B", ylabel="stationary variance")
    ax.set_title("SGD's spread around the equilibrium (lines: Lyapunov)", fontsize=9)
    ax.legend(fontsize=7)


def plot(path, rows):
    """Three panels: stability against the rate, the fixed point's offset and the spread against B."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.8))
    for ax, draw in zip(fig.subplots(1, 3), (_plot_eigen, _plot_offset, _plot_spread)):
        draw(ax, rows)
    fig.suptitle("Dirac GAN with minibatches (Mescheder et al. 2018): Keras SGD, momentum 0.9, kbatch LARS")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=3000, help="updates per training run")
    parser.add_argument("--seeds", type=int, default=8, help="replicas per batch size")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    began = time.time()
    rows = grid(args.steps, args.seeds)
    with open(os.path.join(args.out_dir, "minibatch_game.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot(os.path.join(args.out_dir, "minibatch_game.png"), rows)
    print(f"{len(rows)} rows in {time.time() - began:.0f} s")


if __name__ == "__main__":
    main()
