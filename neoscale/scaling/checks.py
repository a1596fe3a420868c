"""Input checks shared by every fit: clear ValueErrors, NaN rows reported and dropped."""

from __future__ import annotations

import warnings

import numpy as np


def clean_points(min_points: int, **columns) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Validated float64 columns with NaN rows dropped, and the (rows,) mask of rows kept.

    Raises ValueError for ragged columns, infinite or non-positive values, or fewer than
    `min_points` rows left (the number of fitted constants). Rows with a NaN in any column are
    dropped with a warning, never fitted.
    """
    arrays = {k: np.asarray(v, np.float64).ravel() for k, v in columns.items()}
    lengths = {k: a.size for k, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"columns have different lengths {lengths}: pass one value per run")
    nan = np.zeros(next(iter(lengths.values())), bool)
    for a in arrays.values():
        nan |= np.isnan(a)
    n_dropped = int(nan.sum())
    if n_dropped:
        warnings.warn(f"dropped {n_dropped} row(s) with NaN values before fitting", stacklevel=3)
    arrays = {k: a[~nan] for k, a in arrays.items()}
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} has infinite values: remove those rows")
        if np.any(a <= 0):
            raise ValueError(f"{name} must be positive, got min {a.min():g}: remove those rows")
    n = next(iter(arrays.values())).size
    if n < min_points:
        raise ValueError(f"need at least {min_points} points to fit {min_points} constants, got {n}")
    return arrays, ~nan


def require_distinct(name: str, values: np.ndarray, minimum: int = 2) -> None:
    """ValueError unless `values` takes at least `minimum` distinct values (3 s.f.)."""
    distinct = np.unique(np.round(np.log10(values), 3)).size
    if distinct < minimum:
        raise ValueError(
            f"need at least {minimum} distinct {name} values, got {distinct}: "
            f"the law's constants in {name} are not determined by fewer"
        )
