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
PINNED = optimize.LSELaw(terms=((0,),), offset=True, pinned_offset=True)  # rows (log E fixed, a, α)


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


def _starts(log_c: np.ndarray, loss: np.ndarray, with_offset: bool, fixed_E: float | None = None
            ) -> np.ndarray:
    """Starts around the data: E a fraction of the lowest loss (or the pinned E), α on a grid,
    a through the mean."""
    alphas = np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.8])
    if not with_offset:
        return np.stack([np.full_like(alphas, np.log(loss).mean()), alphas], axis=1)
    rows = []
    for fraction in (0.01, 0.3, 0.6, 0.8, 0.9, 0.97) if fixed_E is None else (None,):
        e_value = fraction * loss.min() if fixed_E is None else fixed_E
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


def check_pinned_E(fixed_E: float, loss: np.ndarray) -> None:
    """A pinned asymptote must be positive and below every loss it is fitted to."""
    if not (np.isfinite(fixed_E) and 0 < fixed_E < np.nanmin(loss)):
        raise ValueError(f"the pinned E = {fixed_E:g} must be positive and below every loss (lowest "
                         f"{np.nanmin(loss):.4g}): pin the asymptote of this evaluation set's loss")


def fit_power_law_bootstrap(
    compute, loss, *, with_offset: bool = True, groups=None, n_bootstrap: int = 0, seed: int = 0,
    delta: float = optimize.HUBER_DELTA, fixed_E: float | None = None,
) -> tuple[PowerLawFit, bootstrap.Bootstrap]:
    """(fit, bootstrap of (E, A, α)) over n_bootstrap resamples of runs (`groups`).

    A resample needs distinct compute values for one more point than the law has free constants
    (4 with E, 3 without or with E pinned); see bootstrap.Bootstrap for when there is no interval.
    fixed_E: pin the asymptote (with_offset only) instead of fitting it.
    """
    law = SATURATING if with_offset else PURE
    if fixed_E is not None and with_offset:
        law = PINNED
        check_pinned_E(fixed_E, np.asarray(loss, np.float64))
    cols, kept = checks.clean_points(law.n_free, compute=compute, loss=loss)
    checks.require_distinct("compute", cols["compute"], minimum=2)
    log_c = np.log(cols["compute"])
    centre = float(log_c.mean())
    log_x, log_y = (log_c - centre)[:, None], np.log(cols["loss"])
    starts = _starts(log_c, cols["loss"], with_offset, fixed_E if law is PINNED else None)
    params, objective = optimize.minimize_huber(law, starts, log_x, log_y, delta=delta)
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
        requirement=bootstrap.Requirement(points=law.n_free + 1), names=NAMES,
        decode=lambda raw: _decode(raw, centre, with_offset), delta=delta,
    )
    return fit, boot


def fit_power_law(
    compute, loss, *, with_offset: bool = True, delta: float = optimize.HUBER_DELTA,
    fixed_E: float | None = None,
) -> PowerLawFit:
    """L(C) = E + A·C^(−α) (or A·C^(−α) with with_offset=False) through (compute, loss) points."""
    return fit_power_law_bootstrap(compute, loss, with_offset=with_offset, delta=delta,
                                   fixed_E=fixed_E)[0]
