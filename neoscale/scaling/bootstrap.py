"""Bootstrap percentile intervals: resample runs with replacement, refit, take percentiles.

A resample is represented by integer point weights (how often each point's run was drawn), so
that every law refits with the same batched solver (`optimize.minimize_huber`).

Only over-determined refits count. A resample whose distinct points (or distinct sizes, tokens,
expert counts: a law's `Requirement`) cannot over-determine the law is rejected and counted,
never refitted: an exact or under-determined fit returns wherever L-BFGS stopped, not an
estimate. The interval is then a percentile interval of the accepted refits (a bootstrap
conditional on over-determination). There is no interval at all (`Bootstrap.note` says why) when
the data themselves have no more than one distinct point beyond the law's constants
(points <= constants + 1), or when fewer than MIN_ACCEPTED resamples were accepted and converged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from neoscale.scaling import optimize

LEVEL = 0.95
MIN_ACCEPTED = 20  # fewer refits than this put the 2.5% and 97.5% percentiles at the extremes


def resample_weights(groups: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(R, n) weights: each resample draws the distinct groups (runs) with replacement.

    Args:
      groups: (n,) run label of every point; all points of a drawn run come together.
    """
    labels, index = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, labels.size, size=(n_resamples, labels.size))
    counts = np.stack([np.bincount(d, minlength=labels.size) for d in draws])
    return counts[:, index].astype(np.float64)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """(2, ...) lower and upper percentiles over axis 0, ignoring non-finite samples."""
    samples = np.where(np.isfinite(samples), samples, np.nan)
    tail = 100 * (1 - level) / 2
    return np.nanpercentile(samples, [tail, 100 - tail], axis=0)


def _distinct_ids(values: np.ndarray) -> np.ndarray:
    """(n,) integer id per row of values (n,) or (n, K); rows equal to 3 decimals share an id."""
    rounded = np.round(np.asarray(values, np.float64).reshape(len(values), -1), 3)
    return np.unique(rounded, axis=0, return_inverse=True)[1].ravel()


def _count_distinct(ids: np.ndarray, present: np.ndarray) -> np.ndarray:
    """(R,) number of distinct ids among the points present (R, n) in each resample."""
    one_hot = np.eye(ids.max() + 1)[ids]  # (n, U)
    return ((present.astype(np.float64) @ one_hot) > 0).sum(axis=1)


@dataclasses.dataclass(frozen=True)
class Requirement:
    """What a set of points needs for a law's fit to be over-determined.

    points: distinct covariate rows, the law's constants + 1.
    columns: distinct values each covariate column needs, e.g. 3 sizes for E + A/N^α + B/D^β
      (with 2 sizes, E, A and α share two numbers).
    names: the columns' names, for messages.
    """

    points: int
    columns: tuple[int, ...] = ()
    names: tuple[str, ...] = ()

    def met(self, log_x: np.ndarray, present: np.ndarray) -> np.ndarray:
        """(R,) bool: resamples whose present points (R, n) over-determine the law."""
        log_x = np.asarray(log_x, np.float64).reshape(len(log_x), -1) / np.log(10)
        ok = _count_distinct(_distinct_ids(log_x), present) >= self.points
        for k, minimum in enumerate(self.columns):
            ok &= _count_distinct(_distinct_ids(log_x[:, k]), present) >= minimum
        return ok

    def shortfall(self, log_x: np.ndarray) -> str | None:
        """Why the full data cannot give an interval (one distinct point to spare), or None."""
        log_x = np.asarray(log_x, np.float64).reshape(len(log_x), -1) / np.log(10)
        everything = np.ones((1, len(log_x)), bool)
        n = int(_count_distinct(_distinct_ids(log_x), everything)[0])
        constants = self.points - 1
        if n <= constants + 1:
            return (f"{n} distinct points for {constants} constants: an interval needs at least "
                    f"{constants + 2} (points <= constants + 1 leave resamples exact or under-determined)")
        for k, minimum in enumerate(self.columns):
            distinct = int(_count_distinct(_distinct_ids(log_x[:, k]), everything)[0])
            name = self.names[k] if k < len(self.names) else f"covariate {k}"
            if distinct < minimum:
                return f"{distinct} distinct {name} values: the law needs {minimum}"
        return None


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """Refits on resampled runs: the accepted refits, what was rejected and why.

    samples: (accepted, P) constants of the accepted, converged refits, columns `names`.
    """

    names: tuple[str, ...]
    samples: np.ndarray
    requested: int
    rejected: int  # resamples too poor in distinct points to over-determine the law: not refitted
    failed: int  # accepted resamples whose refit reached no finite optimum (or no fit at all)
    note: str | None = None  # why there is no interval; None when there is one
    caveat: str | None = None  # what an interval there is leaves out

    @classmethod
    def none(cls, names, note: str, requested: int = 0, rejected: int = 0) -> Bootstrap:
        return cls(tuple(names), np.empty((0, len(names))), requested, rejected, 0, note)

    @classmethod
    def from_refits(cls, names, refits: np.ndarray, requested: int, rejected: int,
                    note: str | None = None) -> Bootstrap:
        """From the refits (A, P) of the accepted resamples (non-finite rows = failed)."""
        finite = np.isfinite(refits).all(axis=1)
        samples = refits[finite]
        if note is None and len(samples) < MIN_ACCEPTED:
            note = (f"only {len(samples)} of {requested} resamples were over-determined and "
                    f"converged: an interval needs at least {MIN_ACCEPTED}")
        return cls(tuple(names), samples, requested, rejected, int((~finite).sum()), note)

    @property
    def accepted(self) -> int:
        return len(self.samples)

    @property
    def has_interval(self) -> bool:
        return self.note is None

    def interval_of(self, values: np.ndarray, level: float = LEVEL) -> np.ndarray | None:
        """(2, ...) percentile interval of a quantity computed per sample, or None (no interval)."""
        return percentile_interval(np.asarray(values), level) if self.has_interval else None

    def intervals(self, level: float = LEVEL) -> dict[str, list[float]] | None:
        """Constant name -> [low, high], or None when there is no interval."""
        if not self.has_interval:
            return None
        low, high = percentile_interval(self.samples, level)
        return {k: [float(low[i]), float(high[i])] for i, k in enumerate(self.names)}

    def summary(self) -> dict:
        """The counts for fit.json."""
        return {"requested": self.requested, "accepted": self.accepted,
                "rejected_not_overdetermined": self.rejected, "failed": self.failed}


def prediction_interval(
    log_predictions: np.ndarray,
    residuals: np.ndarray,
    n_params: int,
    seed: int,
    level: float = LEVEL,
    draws: int = 20,
) -> np.ndarray:
    """(2, m) prediction interval of m losses: parameter uncertainty and the residual scatter.

    Each accepted refit's log prediction is moved by `draws` residuals of the full fit, drawn with
    replacement and inflated by sqrt(n / (n − P)) (fitted residuals understate new points'
    scatter); the interval is the percentiles of exp(log prediction − residual). What neither term
    holds, a law whose form is wrong beyond the data, only a backtest measures.

    Args:
      log_predictions: (A, m) log loss predicted by each accepted refit.
      residuals: (n,) log residuals (log fitted − log actual) of the full fit's points.
      n_params: the law's free constants P.
    """
    residuals = np.asarray(residuals, np.float64)
    n = residuals.size
    inflation = np.sqrt(n / (n - n_params)) if n > n_params else np.nan
    rng = np.random.default_rng(seed)
    log_predictions = np.asarray(log_predictions, np.float64)
    noise = -inflation * rng.choice(residuals, size=(draws, *log_predictions.shape))
    combined = (log_predictions[None] + noise).reshape(-1, *log_predictions.shape[1:])
    return np.exp(percentile_interval(combined, level))


def distinct_best(params: np.ndarray, objective: np.ndarray, k: int) -> np.ndarray:
    """Up to k lowest-objective rows of params (B, P) that differ from each other by > 1e-3."""
    chosen: list[np.ndarray] = []
    for i in np.argsort(objective):
        if not np.isfinite(objective[i]) or len(chosen) == k:
            break
        if all(np.max(np.abs(params[i] - c)) > 1e-3 for c in chosen):
            chosen.append(params[i])
    return np.stack(chosen)


def bootstrap_huber(
    law: optimize.LSELaw,
    seeds: np.ndarray,
    log_x: np.ndarray,
    log_y: np.ndarray,
    groups: np.ndarray,
    n_resamples: int,
    seed: int,
    *,
    requirement: Requirement,
    names: tuple[str, ...],
    decode: Callable[[np.ndarray], np.ndarray] = lambda p: p,
    delta: float = optimize.HUBER_DELTA,
) -> Bootstrap:
    """Refits of the over-determined resamples; `decode` maps raw rows (A, P) to `names` columns.

    Each accepted resample starts L-BFGS from every row of `seeds` (S, P) — the full fit's optimum
    and its best distinct local optima — instead of the full start grid: the resampled optimum lies
    near the full-data one, and this keeps 200 resamples to about a grid's cost.
    """
    if n_resamples == 0:
        return Bootstrap.none(names, "no bootstrap resamples requested (n_bootstrap = 0)")
    weights = resample_weights(groups, n_resamples, seed)
    ok = requirement.met(log_x, weights > 0)
    rejected = int((~ok).sum())
    shortfall = requirement.shortfall(log_x)
    if shortfall is not None:
        return Bootstrap.none(names, shortfall, n_resamples, rejected)
    weights = weights[ok]
    n_ok, n_seeds = len(weights), seeds.shape[0]
    if n_ok == 0:
        return Bootstrap.from_refits(names, np.empty((0, len(names))), n_resamples, rejected)
    starts = np.tile(seeds, (n_ok, 1))
    params, objective = optimize.minimize_huber(
        law, starts, log_x, log_y, np.repeat(weights, n_seeds, axis=0), delta=delta
    )
    params = params.reshape(n_ok, n_seeds, -1)
    objective = objective.reshape(n_ok, n_seeds)
    out = params[np.arange(n_ok), np.argmin(objective, axis=1)]
    out[~np.isfinite(objective.min(axis=1))] = np.nan
    return Bootstrap.from_refits(names, decode(out), n_resamples, rejected)
