"""Loss against compute: L(C) = E + A·C^(−α) and the pure power law L(C) = A·C^(−α).

Both are fitted robustly in log space, like Chinchilla Approach 3: the sum of Huber_δ
(δ = 1e-3) log-residuals of LSE(e, a − α·log C) (or a − α·log C for the pure law), by L-BFGS
from a small grid of data-driven starts, keeping the best.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from neoscale.scaling import bootstrap, checks, optimize

SATURATING = optimize.LSELaw(terms=((0,),), offset=True)  # rows (e, a, α)
PURE = optimize.LSELaw(terms=((0,),), offset=False)  # rows (a, α)


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """L(C) = E + A·C^(−α); E = 0 for the pure power law."""

    E: float
    A: float
    alpha: float
    objective: float = float("nan")
    n_points: int = 0
    n_dropped: int = 0

    def predict(self, compute):
        return self.E + self.A * np.asarray(compute, np.float64) ** -self.alpha

    def constants(self) -> dict[str, float]:
        return {"E": float(self.E), "A": float(self.A), "alpha": float(self.alpha)}


def _starts(log_c: np.ndarray, loss: np.ndarray, with_offset: bool) -> np.ndarray:
    """Starts around the data: E a fraction of the lowest loss, α on a grid, a through the mean."""
    alphas = np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.8])
    if not with_offset:
        return np.stack([np.full_like(alphas, np.log(loss).mean()), alphas], axis=1)
    rows = []
    for fraction in (0.01, 0.3, 0.6, 0.8, 0.9, 0.97):
        e_value = fraction * loss.min()
        for alpha in alphas:
            rows.append((np.log(e_value), np.log(max(loss.mean() - e_value, 1e-6)), alpha))
    return np.array(rows)


def _decode(p: np.ndarray, centre: float, with_offset: bool) -> np.ndarray:
    """Centred rows -> (E, A, α) rows."""
    p = np.atleast_2d(p)
    if not with_offset:
        p = np.concatenate([np.full((p.shape[0], 1), -np.inf), p], axis=1)
    e, a, alpha = p[:, 0], p[:, 1], p[:, 2]
    return np.stack([np.exp(e), np.exp(a + alpha * centre), alpha], axis=1)


NAMES = ("E", "A", "alpha")


def fit_power_law_bootstrap(
    compute, loss, *, with_offset: bool = True, groups=None, n_bootstrap: int = 0, seed: int = 0,
    delta: float = optimize.HUBER_DELTA,
) -> tuple[PowerLawFit, bootstrap.Bootstrap]:
    """(fit, bootstrap of (E, A, α)) over n_bootstrap resamples of runs (`groups`).

    A resample needs distinct compute values for one more point than the law has constants
    (4 with E, 3 without); see bootstrap.Bootstrap for when there is no interval.
    """
    law = SATURATING if with_offset else PURE
    cols, kept = checks.clean_points(law.n_params, compute=compute, loss=loss)
    checks.require_distinct("compute", cols["compute"], minimum=2)
    log_c = np.log(cols["compute"])
    centre = float(log_c.mean())
    log_x, log_y = (log_c - centre)[:, None], np.log(cols["loss"])
    params, objective = optimize.minimize_huber(
        law, _starts(log_c, cols["loss"], with_offset), log_x, log_y, delta=delta
    )
    best = int(np.argmin(objective))
    e_value, a_value, alpha = _decode(params[best], centre, with_offset)[0]
    fit = PowerLawFit(
        E=float(e_value),
        A=float(a_value),
        alpha=float(alpha),
        objective=float(objective[best]),
        n_points=int(log_y.size),
        n_dropped=int((~kept).sum()),
    )
    groups = np.arange(kept.size) if groups is None else np.asarray(groups)
    seeds = bootstrap.distinct_best(params, objective, 3)
    boot = bootstrap.bootstrap_huber(
        law, seeds, log_x, log_y, groups[kept], n_bootstrap, seed,
        requirement=bootstrap.Requirement(points=law.n_params + 1), names=NAMES,
        decode=lambda raw: _decode(raw, centre, with_offset), delta=delta,
    )
    return fit, boot


def fit_power_law(
    compute, loss, *, with_offset: bool = True, delta: float = optimize.HUBER_DELTA
) -> PowerLawFit:
    """L(C) = E + A·C^(−α) (or A·C^(−α) with with_offset=False) through (compute, loss) points."""
    return fit_power_law_bootstrap(compute, loss, with_offset=with_offset, delta=delta)[0]
