"""Chinchilla Approach 3 (Hoffmann et al. 2022): L(N, D) = E + A/N^α + B/D^β.

Fitted exactly as published (and as Epoch AI's replication, Besiroglu et al. 2024): minimise the
*sum* over runs of Huber_δ(LSE(a − α·log N, b − β·log D, e) − log L), δ = 1e-3, A, B, E =
exp(a, b, e), by L-BFGS from every start of the grid α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1},
a, b ∈ {0, 5, …, 25} (4500 starts), keeping the best. Internally log N and log D are centred
(a' = a − α·mean log N), which maps every grid start to the same point of the same function
but conditions L-BFGS better; constants are reported uncentred.

Conventions: N counts all parameters (embeddings included), D is training tokens, and the
compute-optimal allocation uses C = 6·N·D.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from neoscale.scaling import bootstrap, checks, optimize

PUBLISHED = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
EPOCH_REFIT = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
EPOCH_INTERVALS = {
    "E": (1.769, 1.871),
    "A": (285.0, 744.0),
    "B": (1042.0, 5810.0),
    "alpha": (0.317, 0.373),
    "beta": (0.331, 0.415),
}
CONSTANTS = ("E", "A", "B", "alpha", "beta")


def start_grid() -> np.ndarray:
    """(4500, 5) published starts as rows (e, a, b, α, β)."""
    exponents = np.arange(0.0, 2.01, 0.5)
    e_values = np.arange(-1.0, 1.01, 0.5)
    ab_values = np.arange(0.0, 25.1, 5.0)
    grid = itertools.product(e_values, ab_values, ab_values, exponents, exponents)
    return np.array(list(grid))


# log L = LSE(e, a − α·log N, b − β·log D): rows (e, a, b, α, β), log_x (n, 2) = (log N, log D).
LAW = optimize.LSELaw(terms=((0,), (1,)))


@dataclasses.dataclass(frozen=True)
class ChinchillaFit:
    """L(N, D) = E + A/N^α + B/D^β with its compute-optimal allocation (C = 6ND)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float = float("nan")
    n_points: int = 0
    n_dropped: int = 0

    def predict(self, n, d):
        """Loss for parameters n and tokens d (broadcasting arrays)."""
        n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    @property
    def a(self) -> float:
        """N_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """D_opt ∝ C^b."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    def optimal_allocation(self, compute):
        """(n_opt, d_opt) minimising loss at compute C = 6·N·D."""
        c6 = np.asarray(compute, np.float64) / 6
        return self.G * c6**self.a, c6**self.b / self.G

    def optimal_loss(self, compute):
        """Loss of the compute-optimal model at compute C."""
        return self.predict(*self.optimal_allocation(compute))

    @property
    def frontier_k(self) -> float:
        """K in the compute-optimal frontier L*(C) = E + K·(C/6)^(−αβ/(α+β))."""
        return self.A * self.G**-self.alpha + self.B * self.G**self.beta

    def compute_for_loss(self, loss):
        """Smallest compute C (= 6ND) whose compute-optimal model reaches `loss` (inf if <= E)."""
        exponent = self.alpha * self.beta / (self.alpha + self.beta)
        excess = np.asarray(loss, np.float64) - self.E
        safe = np.where(excess > 0, excess, 1.0)
        return np.where(excess > 0, 6 * (safe / self.frontier_k) ** (-1 / exponent), np.inf)

    def constants(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in CONSTANTS}


def _features(n, d):
    log_x = np.stack([np.log(n), np.log(d)], axis=1)
    centre = log_x.mean(axis=0)
    return log_x - centre, centre


def _centred(params: np.ndarray, centre: np.ndarray) -> np.ndarray:
    p = np.array(params, np.float64)
    p[..., 1] -= p[..., 3] * centre[0]
    p[..., 2] -= p[..., 4] * centre[1]
    return p


def _uncentred(params: np.ndarray, centre: np.ndarray) -> np.ndarray:
    p = np.array(params, np.float64)
    p[..., 1] += p[..., 3] * centre[0]
    p[..., 2] += p[..., 4] * centre[1]
    return p


def _to_fit(p, **extra) -> ChinchillaFit:
    e, a, b, alpha, beta = (float(v) for v in p)
    return ChinchillaFit(
        E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta, **extra
    )


def _fit_grid(cols, starts):
    """Full fit from every start: (fit, params (S, 5) centred, objective (S,), log_x, centre)."""
    checks.require_distinct("n", cols["n"])
    checks.require_distinct("d", cols["d"])
    log_x, centre = _features(cols["n"], cols["d"])
    starts = start_grid() if starts is None else np.atleast_2d(starts)
    params, objective = optimize.minimize_huber(LAW, _centred(starts, centre), log_x, np.log(cols["loss"]))
    best = int(np.argmin(objective))
    fit = _to_fit(
        _uncentred(params[best], centre), objective=float(objective[best]), n_points=int(cols["n"].size)
    )
    return fit, params, objective, log_x, centre


def fit_chinchilla(n, d, loss, *, starts: np.ndarray | None = None) -> ChinchillaFit:
    """Chinchilla Approach 3 on runs with n parameters, d tokens and final loss.

    Args:
      n, d, loss: (runs,) positive values; rows with NaN are dropped with a warning.
      starts: (S, 5) rows (e, a, b, α, β) to start L-BFGS from; default the published grid.
    """
    cols, kept = checks.clean_points(5, n=n, d=d, loss=loss)
    fit = _fit_grid(cols, starts)[0]
    return dataclasses.replace(fit, n_dropped=int((~kept).sum()))


def fit_chinchilla_bootstrap(
    n,
    d,
    loss,
    *,
    groups=None,
    n_bootstrap: int = 200,
    seed: int = 0,
    starts: np.ndarray | None = None,
    n_seeds: int = 4,
):
    """(fit, samples (R, 5) of (E, A, B, α, β)): the full fit and R refits on resampled runs.

    Args:
      groups: (runs,) run label per point (points of one run are resampled together); default
        every point is its own run.
      n_seeds: each resample starts L-BFGS from the full fit's optimum and its best distinct local
        optima (n_seeds in all), not the whole grid: see bootstrap.bootstrap_huber.
    """
    cols, kept = checks.clean_points(5, n=n, d=d, loss=loss)
    groups = np.arange(kept.size) if groups is None else np.asarray(groups)
    if groups.size != kept.size:
        raise ValueError(f"groups has {groups.size} labels for {kept.size} points: pass one per point")
    fit, params, objective, log_x, centre = _fit_grid(cols, starts)
    seeds = bootstrap.distinct_best(params, objective, n_seeds)
    samples = bootstrap.bootstrap_huber(
        LAW, seeds, log_x, np.log(cols["loss"]), groups[kept], n_bootstrap, seed
    )
    samples = _uncentred(samples, centre)
    samples = np.concatenate([np.exp(samples[:, :3]), samples[:, 3:]], axis=1)
    return dataclasses.replace(fit, n_dropped=int((~kept).sum())), samples
