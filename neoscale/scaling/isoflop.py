"""Chinchilla Approach 2: IsoFLOP parabolas -> N_opt(C), D_opt(C).

For each compute budget, fit a parabola of loss against log N over the runs at that budget and
take its vertex as N_opt(C); D_opt(C) comes from the same runs' tokens (a line in log N, log D
evaluated at the vertex), so it follows the runner's own FLOP count rather than C = 6ND. Then
regress log N_opt and log D_opt on log C. Known bias: a grid that is wide or off-centre around
the true optimum moves the vertex.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from neoscale.scaling import checks


@dataclasses.dataclass(frozen=True)
class IsoFlopFit:
    """Per-budget minima and the power laws N_opt = k_n·C^a, D_opt = k_d·C^b."""

    budgets: np.ndarray  # (k,) compute of each budget used
    n_opt: np.ndarray  # (k,)
    d_opt: np.ndarray  # (k,)
    loss_opt: np.ndarray  # (k,) parabola value at the vertex
    parabolas: np.ndarray  # (k, 3) loss = p0·x² + p1·x + p2 with x = ln N
    a: float
    b: float
    log_k_n: float
    log_k_d: float
    skipped: dict  # budget -> reason it was not used

    def n_opt_at(self, compute):
        return np.exp(self.log_k_n) * np.asarray(compute, np.float64) ** self.a

    def d_opt_at(self, compute):
        return np.exp(self.log_k_d) * np.asarray(compute, np.float64) ** self.b


def budget_minimum(n, d, loss):
    """(n_opt, d_opt, loss_opt, parabola (3,)) for the runs of one budget; ValueError if none."""
    log_n, log_d = np.log(n), np.log(d)
    if np.unique(np.round(log_n, 6)).size < 3:
        raise ValueError("fewer than 3 distinct sizes")
    parabola = np.polyfit(log_n, loss, 2)
    if parabola[0] <= 0:
        raise ValueError("loss is not convex in log N (no minimum)")
    x_opt = -parabola[1] / (2 * parabola[0])
    slope, intercept = np.polyfit(log_n, log_d, 1)
    return (
        float(np.exp(x_opt)),
        float(np.exp(intercept + slope * x_opt)),
        float(np.polyval(parabola, x_opt)),
        parabola,
    )


def fit_isoflop(budget, n, d, loss) -> IsoFlopFit:
    """Approach 2 from runs labelled by budget (their target compute).

    Args:
      budget, n, d, loss: (runs,) budget label (FLOPs), parameters, tokens and final loss.
    Raises:
      ValueError: fewer than 2 budgets with a minimum (each needs >= 3 distinct sizes).
    """
    cols, _ = checks.clean_points(1, budget=budget, n=n, d=d, loss=loss)
    rows, skipped = [], {}
    for c in np.unique(cols["budget"]):
        at = cols["budget"] == c
        try:
            rows.append((c, *budget_minimum(cols["n"][at], cols["d"][at], cols["loss"][at])))
        except ValueError as e:
            skipped[float(c)] = str(e)
    if len(rows) < 2:
        raise ValueError(
            f"need >= 2 IsoFLOP budgets with >= 3 sizes and a minimum, got {len(rows)} (skipped: {skipped})"
        )
    budgets = np.array([r[0] for r in rows])
    n_opt, d_opt, loss_opt = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
    a, log_k_n = np.polyfit(np.log(budgets), np.log(n_opt), 1)
    b, log_k_d = np.polyfit(np.log(budgets), np.log(d_opt), 1)
    return IsoFlopFit(
        budgets=budgets,
        n_opt=n_opt,
        d_opt=d_opt,
        loss_opt=loss_opt,
        parabolas=np.stack([r[4] for r in rows]),
        a=float(a),
        b=float(b),
        log_k_n=float(log_k_n),
        log_k_d=float(log_k_d),
        skipped=skipped,
    )


def fit_isoflop_bootstrap(budget, n, d, loss, *, groups=None, n_bootstrap: int = 200, seed: int = 0):
    """(fit, samples (R, 2) of (a, b)): runs resampled with replacement within each budget."""
    fit = fit_isoflop(budget, n, d, loss)
    budget, n, d, loss = (np.asarray(v, np.float64) for v in (budget, n, d, loss))
    keep = ~np.isnan(budget + n + d + loss)
    groups = np.arange(budget.size) if groups is None else np.asarray(groups)
    budget, n, d, loss, groups = budget[keep], n[keep], d[keep], loss[keep], groups[keep]
    rng = np.random.default_rng(seed)
    samples = np.full((n_bootstrap, 2), np.nan)
    for r in range(n_bootstrap):
        take = []
        for c in np.unique(budget):
            labels = np.unique(groups[budget == c])
            for label in rng.choice(labels, labels.size):
                take.extend(np.flatnonzero((groups == label) & (budget == c)))
        take = np.array(take)
        try:
            refit = fit_isoflop(budget[take], n[take], d[take], loss[take])
        except ValueError:
            continue
        samples[r] = refit.a, refit.b
    return fit, samples
