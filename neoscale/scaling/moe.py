"""Mixture-of-experts scaling laws.

1. Clark et al. 2022 (routed language models):
     log10 L = a·log10 N + b·log10 Ê + c·log10 N·log10 Ê + d,
   N the dense (= active) parameter count and Ê the saturating expert count
     Ê = 1 / (1/(E − 1 + (1/E_start − 1/E_max)^−1) + 1/E_max),
   fitted by least squares in log10 space with E_start, E_max held at given values (default
   S-BASE's; a handful of expert counts cannot pin them down). Its effective parameter count
   N̄(N, E) is the dense size with the same predicted loss (at E = 1).
2. Chinchilla form in active parameters with the expert count as a covariate:
     L(N, D, E) = E₀ + A/(N^α·E^γ) + B/D^β,
   fitted as Approach 3 (sum of Huber log-residuals, L-BFGS). E experts act like E^(γ/α) times
   more active parameters; with C = 6·N·D, the compute a model needs to reach a loss is
   (K_E/K_1)^((α+β)/(αβ)) times the dense one, the same at every loss (K defined in
   `compute_saving`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from neoscale.scaling import bootstrap, checks, chinchilla, optimize

CLARK_S_BASE = {"a": -0.082, "b": -0.108, "c": 0.009, "d": 1.104, "e_start": 1.847, "e_max": 314.478}

# LSE(e, a − α·log N − γ·log E, b − β·log D): rows (e, a, b, α, γ, β), log_x = (log N, log D, log E)
LAW = optimize.LSELaw(terms=((0, 2), (1,)))
GAMMA_STARTS = (0.0, 0.1, 0.3, 0.6, 1.0)


def saturated_experts(
    experts, e_start: float = CLARK_S_BASE["e_start"], e_max: float = CLARK_S_BASE["e_max"]
):
    """Clark et al.'s Ê(E): ≈ E for small counts, saturating towards e_max."""
    experts = np.asarray(experts, np.float64)
    return 1.0 / (1.0 / (experts - 1 + 1.0 / (1.0 / e_start - 1.0 / e_max)) + 1.0 / e_max)


@dataclasses.dataclass(frozen=True)
class ClarkFit:
    """log10 L = a·log10 N + b·log10 Ê + c·log10 N·log10 Ê + d."""

    a: float
    b: float
    c: float
    d: float
    e_start: float = CLARK_S_BASE["e_start"]
    e_max: float = CLARK_S_BASE["e_max"]

    def predict(self, n, experts):
        log_n = np.log10(np.asarray(n, np.float64))
        log_e = np.log10(saturated_experts(experts, self.e_start, self.e_max))
        return 10 ** (self.a * log_n + self.b * log_e + self.c * log_n * log_e + self.d)

    def effective_params(self, n, experts):
        """Dense parameter count N̄ with the same predicted loss as (n, experts)."""
        log_n = np.log10(np.asarray(n, np.float64))
        log_e = np.log10(saturated_experts(experts, self.e_start, self.e_max))
        log_e1 = np.log10(saturated_experts(1.0, self.e_start, self.e_max))
        log_loss = self.a * log_n + self.b * log_e + self.c * log_n * log_e
        return 10 ** ((log_loss - self.b * log_e1) / (self.a + self.c * log_e1))

    def constants(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in ("a", "b", "c", "d", "e_start", "e_max")}


def fit_clark(
    n, experts, loss, *, e_start: float = CLARK_S_BASE["e_start"], e_max: float = CLARK_S_BASE["e_max"]
) -> ClarkFit:
    """Least squares of Clark et al.'s bilinear law on (N, E, loss) points."""
    cols, _ = checks.clean_points(4, n=n, experts=experts, loss=loss)
    checks.require_distinct("n", cols["n"])
    checks.require_distinct("experts", cols["experts"])
    log_n = np.log10(cols["n"])
    log_e = np.log10(saturated_experts(cols["experts"], e_start, e_max))
    design = np.stack([log_n, log_e, log_n * log_e, np.ones_like(log_n)], axis=1)
    coef = np.linalg.lstsq(design, np.log10(cols["loss"]), rcond=None)[0]
    return ClarkFit(*(float(v) for v in coef), e_start=e_start, e_max=e_max)


@dataclasses.dataclass(frozen=True)
class MoEChinchillaFit:
    """L(N, D, E) = E0 + A/(N^α·E^γ) + B/D^β, N active parameters, E experts (1 = dense)."""

    E0: float
    A: float
    B: float
    alpha: float
    beta: float
    gamma: float
    objective: float = float("nan")
    n_points: int = 0

    def predict(self, n, d, experts):
        n, d, experts = (np.asarray(v, np.float64) for v in (n, d, experts))
        return self.E0 + self.A / (n**self.alpha * experts**self.gamma) + self.B / d**self.beta

    def dense(self, experts: float = 1.0) -> chinchilla.ChinchillaFit:
        """The Chinchilla law of models with `experts` experts (A scaled by experts^−γ)."""
        return chinchilla.ChinchillaFit(
            E=self.E0, A=self.A * experts**-self.gamma, B=self.B, alpha=self.alpha, beta=self.beta
        )

    def effective_params(self, n, experts):
        """Dense-equivalent active parameters: N·E^(γ/α)."""
        return np.asarray(n, np.float64) * np.asarray(experts, np.float64) ** (self.gamma / self.alpha)

    def compute_saving(self, experts, loss=None):
        """How many times less compute (C = 6·N_active·D) E experts need to reach a loss.

        Equals (K_1/K_E)^((α+β)/(αβ)) with K_E = A_E·G_E^−α + B·G_E^β, A_E = A·E^−γ: the same at
        every loss above E0 in this form (`loss` is accepted for clarity and checked).
        """
        if loss is not None and np.any(np.asarray(loss) <= self.E0):
            raise ValueError(f"loss must be above the irreducible E0 = {self.E0:.3f}")
        exponent = (self.alpha + self.beta) / (self.alpha * self.beta)
        k_dense = self.dense(1.0).frontier_k
        k_moe = np.array([self.dense(e).frontier_k for e in np.atleast_1d(experts)])
        saving = (k_dense / k_moe) ** exponent
        return saving if np.ndim(experts) else float(saving[0])

    def constants(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in ("E0", "A", "B", "alpha", "beta", "gamma")}


def _decode(p: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Centred rows (e, a, b, α, γ, β) -> (E0, A, B, α, β, γ)."""
    p = np.atleast_2d(p)
    e, a, b, alpha, gamma, beta = p.T
    return np.stack(
        [np.exp(e), np.exp(a + alpha * centre[0]), np.exp(b + beta * centre[1]), alpha, beta, gamma], axis=1
    )


NAMES = ("E0", "A", "B", "alpha", "beta", "gamma")
# Over-determined: 7 distinct (N, D, E) points, 3 sizes and 3 token counts (as Chinchilla's law),
# 2 expert counts (γ).
REQUIREMENT = bootstrap.Requirement(points=LAW.n_params + 1, columns=(3, 3, 2), names=("N", "D", "experts"))


def fit_moe_chinchilla_bootstrap(n, d, experts, loss, *, groups=None, n_bootstrap: int = 0, seed: int = 0,
                                 delta: float = optimize.HUBER_DELTA):
    """(fit, bootstrap of (E0, A, B, α, β, γ)); see bootstrap.Bootstrap for rejected resamples.

    Starts: the best distinct optima of a full-grid dense Chinchilla fit on the same points
    (ignoring E), each combined with γ ∈ GAMMA_STARTS.
    """
    cols, kept = checks.clean_points(LAW.n_params + 1, n=n, d=d, experts=experts, loss=loss)
    checks.require_distinct("experts", cols["experts"])
    _, params, objective, log_nd, centre = chinchilla._fit_grid(
        {k: cols[k] for k in ("n", "d", "loss")}, None, delta
    )
    dense = bootstrap.distinct_best(params, objective, 4)  # (S, 5) rows (e, a, b, α, β)
    starts = np.array([(*row[:4], gamma, row[4]) for row in dense for gamma in GAMMA_STARTS])
    log_x = np.concatenate([log_nd, np.log(cols["experts"])[:, None]], axis=1)
    log_y = np.log(cols["loss"])
    params, objective = optimize.minimize_huber(LAW, starts, log_x, log_y, delta=delta)
    best = int(np.argmin(objective))
    fit = MoEChinchillaFit(
        *(float(v) for v in _decode(params[best], centre)[0]),
        objective=float(objective[best]),
        n_points=int(log_y.size),
    )
    groups = np.arange(kept.size) if groups is None else np.asarray(groups)
    seeds = bootstrap.distinct_best(params, objective, 3)
    boot = bootstrap.bootstrap_huber(
        LAW, seeds, log_x, log_y, groups[kept], n_bootstrap, seed,
        requirement=REQUIREMENT, names=NAMES, decode=lambda raw: _decode(raw, centre), delta=delta,
    )
    return fit, boot


def fit_moe_chinchilla(n, d, experts, loss) -> MoEChinchillaFit:
    """L(N, D, E) = E0 + A/(N^α·E^γ) + B/D^β on active parameters n, tokens d, expert counts."""
    return fit_moe_chinchilla_bootstrap(n, d, experts, loss)[0]
