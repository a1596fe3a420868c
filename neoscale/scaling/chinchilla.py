"""Chinchilla Approach 3 (Hoffmann et al. 2022): L(N, D) = E + A/N^α + B/D^β.

Fitted exactly as published (and as Epoch AI's replication, Besiroglu et al. 2024): minimise the
*sum* over runs of Huber_δ(LSE(a − α·log N, b − β·log D, e) − log L), δ = 1e-3, A, B, E =
exp(a, b, e), by L-BFGS from every start of the grid α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1},
a, b ∈ {0, 5, …, 25} (4500 starts), keeping the best. Internally log N and log D are centred
(a' = a − α·mean log N), which maps every grid start to the same point of the same function
but conditions L-BFGS better; constants are reported uncentred.

Conventions: N counts all parameters (embeddings included), D is training tokens. The law itself
has no compute axis; the compute-optimal allocation needs one, C = k·N^s·D (`ComputeAxis`):
Chinchilla's C = 6·N·D by default (k = 6, s = 1), or the runs' own FLOP count measured by
`fit_compute_axis`, so that N_opt(C) is on the same axis as L(C) and Approaches 1 and 2.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from neoscale.scaling import bootstrap, checks, optimize, power_law

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


def coarse_start_grid() -> np.ndarray:
    """(243, 5) every other value of the published grid's axes (α, β ∈ {0, 1, 2}, e ∈ {−1, 0, 1},
    a, b ∈ {0, 10, 20}): for the many refits of a backtest, where the full grid's 4500 starts per
    refit cost minutes."""
    axis = (np.array([-1.0, 0.0, 1.0]), np.array([0.0, 10.0, 20.0]), np.array([0.0, 10.0, 20.0]),
            np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0]))
    return np.array(list(itertools.product(*axis)))


# log L = LSE(e, a − α·log N, b − β·log D): rows (e, a, b, α, β), log_x (n, 2) = (log N, log D).
LAW = optimize.LSELaw(terms=((0,), (1,)))
PINNED = optimize.LSELaw(terms=((0,), (1,)), pinned_offset=True)  # e = log E stays at its start


def _pinned_starts(starts: np.ndarray, fixed_E: float) -> np.ndarray:
    """The start rows with e set to log(fixed_E), duplicates removed."""
    rows = np.array(starts, np.float64)
    rows[:, 0] = np.log(fixed_E)
    return np.unique(rows, axis=0)


@dataclasses.dataclass(frozen=True)
class ComputeAxis:
    """Training compute as C = k·N^s·D (FLOPs per token k·N^s): 6·N·D is k = 6, s = 1."""

    k: float = 6.0
    s: float = 1.0
    label: str = "C = 6·N·D"
    max_relative_error: float = 0.0  # of k·N^s against the runs' FLOPs per token it was fitted to

    def compute(self, n, d):
        return self.k * np.asarray(n, np.float64) ** self.s * np.asarray(d, np.float64)


SIX_ND = ComputeAxis()


def fit_compute_axis(n, d, flops, label: str) -> ComputeAxis:
    """FLOPs per token of the runs (flops / d) fitted as k·N^s by least squares in log-log.

    Args:
      n, d, flops: (runs,) parameters, tokens and training FLOPs (the study's own count).
      label: what the FLOPs are, for fit.json and the figures.
    """
    n, d, flops = (np.asarray(v, np.float64) for v in (n, d, flops))
    per_token = flops / d
    if np.unique(np.round(np.log10(n), 3)).size < 2:
        k, s = float(np.exp(np.mean(np.log(per_token / n)))), 1.0
    else:
        s, log_k = np.polyfit(np.log(n), np.log(per_token), 1)
        k, s = float(np.exp(log_k)), float(s)
    error = float(np.max(np.abs(k * n**s / per_token - 1)))
    return ComputeAxis(k=k, s=s, label=label, max_relative_error=error)


@dataclasses.dataclass(frozen=True)
class ChinchillaFit:
    """L(N, D) = E + A/N^α + B/D^β with its compute-optimal allocation (C = 6ND unless an axis
    is given)."""

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

    def domain_error(self) -> str | None:
        """Why the fitted constants are outside the law's domain (None when inside).

        The law falls with N and D only for α, β > 0; otherwise there is no compute-optimal
        allocation (its G = (αA/(βB))^(1/(α+β)) is a fractional power of a negative number)."""
        values = self.constants()
        if not all(np.isfinite(v) for v in values.values()):
            return f"non-finite constants {values}"
        if self.alpha <= 0 or self.beta <= 0:
            return (f"the fitted exponents alpha = {self.alpha:.3g}, beta = {self.beta:.3g} are not both "
                    "positive: in these points loss does not fall with both N and D, so there is no "
                    "compute-optimal allocation")
        if self.A <= 0 or self.B <= 0:
            return (f"the fitted coefficients A = {self.A:.3g}, B = {self.B:.3g} are not both positive: "
                    "loss is flat in N or D, so there is no compute-optimal allocation")
        return None

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

    def allocation_exponents(self, axis: ComputeAxis = SIX_ND) -> tuple[float, float]:
        """(a, b) with N_opt ∝ C^a, D_opt ∝ C^b on the axis C = k·N^s·D: β/(α+sβ), α/(α+sβ)."""
        denominator = self.alpha + axis.s * self.beta
        return self.beta / denominator, self.alpha / denominator

    def optimal_allocation(self, compute, axis: ComputeAxis = SIX_ND):
        """(n_opt, d_opt) minimising loss at compute C = k·N^s·D (default 6·N·D).

        Setting dL/dN = 0 along D = C/(k·N^s): α·A·N^−α = s·β·B·(k·N^s/C)^β, so
        N_opt = (αA/(sβB))^(1/(α+sβ)) · (C/k)^(β/(α+sβ)) and D_opt = C/(k·N_opt^s).
        """
        if (why := self.domain_error()) is not None:
            raise ValueError(f"no optimal allocation: {why}")
        c = np.asarray(compute, np.float64)
        a, _ = self.allocation_exponents(axis)
        denominator = self.alpha + axis.s * self.beta
        scale = (self.alpha * self.A / (axis.s * self.beta * self.B)) ** (1 / denominator)
        n_opt = scale * (c / axis.k) ** a
        return n_opt, c / (axis.k * n_opt**axis.s)

    def optimal_loss(self, compute, axis: ComputeAxis = SIX_ND):
        """Loss of the compute-optimal model at compute C."""
        return self.predict(*self.optimal_allocation(compute, axis))

    @property
    def frontier_k(self) -> float:
        """K in the compute-optimal frontier L*(C) = E + K·(C/6)^(−αβ/(α+β))."""
        if (why := self.domain_error()) is not None:
            raise ValueError(f"no compute-optimal frontier: {why}")
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


def _fit_grid(cols, starts, delta=optimize.HUBER_DELTA, fixed_E: float | None = None):
    """Full fit from every start: (fit, params (S, 5) centred, objective (S,), log_x, centre)."""
    # With two values of N, E + A/N^α takes two values for three constants (likewise D).
    checks.require_distinct("n", cols["n"], minimum=3)
    checks.require_distinct("d", cols["d"], minimum=3)
    log_x, centre = _features(cols["n"], cols["d"])
    starts = start_grid() if starts is None else np.atleast_2d(starts)
    law = LAW
    if fixed_E is not None:
        power_law.check_pinned_E(fixed_E, cols["loss"])
        law, starts = PINNED, _pinned_starts(starts, fixed_E)
    params, objective = optimize.minimize_huber(
        law, _centred(starts, centre), log_x, np.log(cols["loss"]), delta=delta
    )
    best = int(np.argmin(objective))
    if not np.isfinite(objective[best]):
        raise ValueError("no start of L-BFGS reached a finite objective: the law cannot be evaluated "
                         "on these points")
    fit = _to_fit(
        _uncentred(params[best], centre), objective=float(objective[best]), n_points=int(cols["n"].size)
    )
    return fit, params, objective, log_x, centre


def fit_chinchilla(
    n, d, loss, *, starts: np.ndarray | None = None, delta: float = optimize.HUBER_DELTA,
    fixed_E: float | None = None,
) -> ChinchillaFit:
    """Chinchilla Approach 3 on runs with n parameters, d tokens and final loss.

    Args:
      n, d, loss: (runs,) positive values; rows with NaN are dropped with a warning.
      starts: (S, 5) rows (e, a, b, α, β) to start L-BFGS from; default the published grid.
      delta: Huber's δ on log residuals (inf: squared error).
      fixed_E: pin the irreducible loss E instead of fitting it (four constants left).
    """
    cols, kept = checks.clean_points(5 if fixed_E is None else 4, n=n, d=d, loss=loss)
    fit = _fit_grid(cols, starts, delta, fixed_E)[0]
    return dataclasses.replace(fit, n_dropped=int((~kept).sum()))


REQUIREMENT = bootstrap.Requirement(points=LAW.n_params + 1, columns=(3, 3), names=("N", "D"))


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
    delta: float = optimize.HUBER_DELTA,
    fixed_E: float | None = None,
) -> tuple[ChinchillaFit, bootstrap.Bootstrap]:
    """(fit, bootstrap of (E, A, B, α, β)): the full fit and refits on resampled runs.

    Resamples with fewer than 6 distinct (N, D) points or 3 distinct N or D are rejected, not
    refitted (bootstrap.Requirement); see bootstrap.Bootstrap for when there is no interval.

    Args:
      groups: (runs,) run label per point (points of one run are resampled together); default
        every point is its own run.
      n_seeds: each resample starts L-BFGS from the full fit's optimum and its best distinct local
        optima (n_seeds in all), not the whole grid: see bootstrap.bootstrap_huber.
    """
    law = LAW if fixed_E is None else PINNED
    cols, kept = checks.clean_points(law.n_free, n=n, d=d, loss=loss)
    groups = np.arange(kept.size) if groups is None else np.asarray(groups)
    if groups.size != kept.size:
        raise ValueError(f"groups has {groups.size} labels for {kept.size} points: pass one per point")
    fit, params, objective, log_x, centre = _fit_grid(cols, starts, delta, fixed_E)
    seeds = bootstrap.distinct_best(params, objective, n_seeds)

    def decode(raw):
        raw = _uncentred(raw, centre)
        return np.concatenate([np.exp(raw[:, :3]), raw[:, 3:]], axis=1)

    requirement = dataclasses.replace(REQUIREMENT, points=law.n_free + 1)
    boot = bootstrap.bootstrap_huber(
        law, seeds, log_x, np.log(cols["loss"]), groups[kept], n_bootstrap, seed,
        requirement=requirement, names=CONSTANTS, decode=decode, delta=delta,
    )
    return dataclasses.replace(fit, n_dropped=int((~kept).sum())), boot


def reference_refit(log_x: np.ndarray, log_y: np.ndarray, weights: np.ndarray, starts
                    ) -> tuple[np.ndarray, float]:
    """(centred params (5,), objective) of scipy's L-BFGS-B with tight tolerances from each start:
    the slow, converged reference the batched solver is checked against (tests, benchmarks)."""
    from scipy import optimize as scipy_optimize

    def objective(p):
        value, grad = LAW.value_and_grad(p[None], log_x, log_y, weights[None])
        return value[0] / 1e-6, grad[0] / 1e-6  # δ² units: scipy's tolerances are for O(1)

    best = min((scipy_optimize.minimize(objective, s, jac=True, method="L-BFGS-B",
                                        options={"gtol": 1e-11, "ftol": 1e-15, "maxiter": 20000})
                for s in starts), key=lambda r: r.fun)
    return best.x, best.fun * 1e-6
