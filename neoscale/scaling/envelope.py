"""Chinchilla Approach 1: the lower envelope of training curves.

Every run's curve (loss against FLOPs, smoothed with a running median) is interpolated onto
log-spaced FLOP values; at each one the run with the lowest loss gives N_opt(C) (its parameters)
and D_opt(C) (its tokens at C). log N_opt and log D_opt are then regressed on log C.
The FLOP grid runs from the first point of the earliest curve to the end of the longest one: at
every grid value the envelope is the lowest of the curves defined there. Caveats: below the start
of the larger runs' curves (their first logged step costs more) only smaller runs compete, and
beyond the end of the shorter runs only longer ones, which biases N_opt downwards at the bottom
of the range and upwards at the top; and runs with a constant-LR (WSD) stable phase sit above a
cosine-matched curve before their cooldown. A cooldown branch's curve must start after its fork
(before it, it is its parent's): `neoscale.scaling.study` cuts it there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from neoscale.scaling import bootstrap


@dataclasses.dataclass(frozen=True)
class EnvelopeFit:
    """The envelope on a FLOP grid and the power laws N_opt = k_n·C^a, D_opt = k_d·C^b."""

    compute: np.ndarray  # (g,)
    loss: np.ndarray  # (g,) envelope loss
    run: np.ndarray  # (g,) winning run per grid point
    n_opt: np.ndarray  # (g,)
    d_opt: np.ndarray  # (g,)
    a: float
    b: float
    log_k_n: float
    log_k_d: float

    def n_opt_at(self, compute):
        return np.exp(self.log_k_n) * np.asarray(compute, np.float64) ** self.a

    def d_opt_at(self, compute):
        return np.exp(self.log_k_d) * np.asarray(compute, np.float64) ** self.b


def _smooth(loss: np.ndarray) -> np.ndarray:
    window = max(1, loss.size // 20)
    return pd.Series(loss).rolling(window, center=True, min_periods=1).median().to_numpy()


def fit_envelope(
    curves: Mapping[str, pd.DataFrame], params: Mapping[str, float], *, n_grid: int = 40
) -> EnvelopeFit:
    """Approach 1 from per-step curves.

    Args:
      curves: run -> DataFrame with columns flops, loss, tokens (one row per step).
      params: run -> parameter count N.
      n_grid: number of log-spaced FLOP values on the grid.
    Raises:
      ValueError: fewer than 2 usable curves, or fewer than 2 distinct winning sizes.
    """
    usable = {}
    for run, df in curves.items():
        if run not in params or not {"flops", "loss", "tokens"} <= set(df.columns):
            continue
        df = df[["flops", "loss", "tokens"]].dropna()
        df = df[(df.flops > 0) & (df.loss > 0) & (df.tokens > 0)].sort_values("flops")
        if len(df) >= 2:
            usable[run] = df
    if len(usable) < 2:
        raise ValueError(f"need >= 2 training curves with flops, loss and tokens, got {len(usable)}")
    lowest = min(df.flops.iloc[0] for df in usable.values())
    highest = max(df.flops.iloc[-1] for df in usable.values())
    grid = np.geomspace(lowest, highest, n_grid)
    runs = list(usable)
    losses = np.full((len(runs), n_grid), np.inf)
    tokens = np.full((len(runs), n_grid), np.nan)
    for i, run in enumerate(runs):
        df = usable[run]
        log_f = np.log(df.flops.to_numpy())
        inside = (grid >= df.flops.iloc[0]) & (grid <= df.flops.iloc[-1])
        losses[i, inside] = np.interp(np.log(grid[inside]), log_f, _smooth(df.loss.to_numpy()))
        tokens[i, inside] = np.exp(np.interp(np.log(grid[inside]), log_f, np.log(df.tokens.to_numpy())))
    best = np.argmin(losses, axis=0)
    covered = np.isfinite(losses.min(axis=0))
    grid, best = grid[covered], best[covered]
    n_opt = np.array([params[runs[i]] for i in best], np.float64)
    d_opt = tokens[best, np.flatnonzero(covered)]
    if np.unique(n_opt).size < 2:
        raise ValueError("the envelope is made of a single size: need runs of more sizes")
    a, log_k_n = np.polyfit(np.log(grid), np.log(n_opt), 1)
    b, log_k_d = np.polyfit(np.log(grid), np.log(d_opt), 1)
    return EnvelopeFit(
        compute=grid,
        loss=losses[best, np.flatnonzero(covered)],
        run=np.array([runs[i] for i in best]),
        n_opt=n_opt,
        d_opt=d_opt,
        a=float(a),
        b=float(b),
        log_k_n=float(log_k_n),
        log_k_d=float(log_k_d),
    )


LINE_CONSTANTS = 2  # log N_opt = a·log C + log k_n


def fit_envelope_bootstrap(
    curves, params, *, groups: Mapping[str, str] | None = None, n_bootstrap: int = 200, seed: int = 0
) -> tuple[EnvelopeFit, bootstrap.Bootstrap]:
    """(fit, bootstrap of (a, b)): runs resampled with replacement (a resample is a random subset
    of the runs, duplicates being no-ops).

    Args:
      groups: run -> the unit resampled (a cooldown branch goes with its parent run); default
        each run alone.
    A resample with fewer than 3 distinct sizes is rejected (the line through the envelope's
    sizes needs one more than its 2 constants); no interval with fewer than 4 sizes in all.
    """
    fit = fit_envelope(curves, params)
    names = ("a", "b")
    if n_bootstrap == 0:
        return fit, bootstrap.Bootstrap.none(names, "no bootstrap resamples requested (n_bootstrap = 0)")
    runs = [run for run in curves if run in params]
    unit = {run: (groups or {}).get(run, run) for run in runs}
    units = sorted(set(unit.values()))
    size = {run: float(np.round(np.log(params[run]), 6)) for run in runs}
    n_sizes = len(set(size.values()))
    shortfall = None
    if n_sizes <= LINE_CONSTANTS + 1:
        shortfall = (f"{n_sizes} sizes for the 2 constants of the line through the envelope: an "
                     f"interval needs at least {LINE_CONSTANTS + 2}")
    rng = np.random.default_rng(seed)
    refits, rejected = [], 0
    for _ in range(n_bootstrap):
        drawn = set(rng.choice(units, len(units)))
        chosen = [run for run in runs if unit[run] in drawn]
        if len({size[run] for run in chosen}) < LINE_CONSTANTS + 1:
            rejected += 1
            continue
        if shortfall is not None:
            continue
        try:
            refit = fit_envelope({k: curves[k] for k in chosen}, params)
        except ValueError:
            refits.append((np.nan, np.nan))
            continue
        refits.append((refit.a, refit.b))
    if shortfall is not None:
        return fit, bootstrap.Bootstrap.none(names, shortfall, n_bootstrap, rejected)
    refits = np.array(refits, np.float64).reshape(-1, 2)
    return fit, bootstrap.Bootstrap.from_refits(names, refits, n_bootstrap, rejected)
