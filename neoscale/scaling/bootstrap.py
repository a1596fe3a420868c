"""Bootstrap percentile intervals: resample runs with replacement, refit, take percentiles.

A resample is represented by integer point weights (how often each point's run was drawn), so
that every law refits with the same batched solver (`optimize.minimize_huber`).
"""

from __future__ import annotations

import numpy as np

from neoscale.scaling import optimize

LEVEL = 0.95


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
) -> np.ndarray:
    """(R, P) refitted parameters, one row per resample (NaN where the refit failed).

    Each resample starts L-BFGS from every row of `seeds` (S, P) — the full fit's optimum and its
    best distinct local optima — instead of the full start grid: the resampled optimum lies near
    the full-data one, and this keeps 200 resamples to about a grid's cost.
    """
    if n_resamples == 0:
        return np.empty((0, seeds.shape[1]))
    weights = resample_weights(groups, n_resamples, seed)
    n_seeds = seeds.shape[0]
    starts = np.tile(seeds, (n_resamples, 1))
    params, objective = optimize.minimize_huber(
        law, starts, log_x, log_y, np.repeat(weights, n_seeds, axis=0)
    )
    params = params.reshape(n_resamples, n_seeds, -1)
    objective = objective.reshape(n_resamples, n_seeds)
    best = np.argmin(objective, axis=1)
    out = params[np.arange(n_resamples), best]
    out[~np.isfinite(objective.min(axis=1))] = np.nan
    return out
