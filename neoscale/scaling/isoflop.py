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

from neoscale.scaling import bootstrap, checks


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
    labels: int = 0  # distinct budget labels in the data, before snapping within BUDGET_RTOL

    def n_opt_at(self, compute):
        return np.exp(self.log_k_n) * np.asarray(compute, np.float64) ** self.a

    def d_opt_at(self, compute):
        return np.exp(self.log_k_d) * np.asarray(compute, np.float64) ** self.b


BUDGET_RTOL = 0.05  # budget labels within 5% of a group's smallest are one budget


def snap_budgets(budget, rtol: float = BUDGET_RTOL) -> tuple[np.ndarray, int]:
    """(snapped (runs,), distinct labels before): labels within a relative tolerance are one budget.

    Walking up the sorted labels, a group takes every label <= (1 + rtol) × its smallest (no
    chaining, so a group spans at most rtol) and is labelled by its geometric mean. A per-row
    6·N·D column or labels written with rounding then give the budgets that were planned, not one
    budget per distinct float. NaN labels stay NaN.
    """
    budget = np.asarray(budget, np.float64)
    out = np.full_like(budget, np.nan)
    labels = np.unique(budget[np.isfinite(budget)])
    i = 0
    while i < labels.size:
        group = labels[(labels >= labels[i]) & (labels <= labels[i] * (1 + rtol))]
        out[np.isin(budget, group)] = group[0] if group.size == 1 else np.exp(np.mean(np.log(group)))
        i += group.size
    return out, int(labels.size)


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


def _power_laws(budgets, n_opt, d_opt) -> tuple[float, float, float, float]:
    """(a, log_k_n, b, log_k_d): least-squares lines of log N_opt and log D_opt on log C."""
    a, log_k_n = np.polyfit(np.log(budgets), np.log(n_opt), 1)
    b, log_k_d = np.polyfit(np.log(budgets), np.log(d_opt), 1)
    return float(a), float(log_k_n), float(b), float(log_k_d)


def fit_isoflop(budget, n, d, loss, *, rtol: float = BUDGET_RTOL) -> IsoFlopFit:
    """Approach 2 from runs labelled by budget (their target compute).

    Args:
      budget, n, d, loss: (runs,) budget label (FLOPs), parameters, tokens and final loss.
      rtol: labels within this relative tolerance are one budget (`snap_budgets`).
    Raises:
      ValueError: fewer than 2 budgets with a minimum (each needs >= 3 distinct sizes).
    """
    budget, labels = snap_budgets(budget, rtol)
    cols, _ = checks.clean_points(1, budget=budget, n=n, d=d, loss=loss)
    rows, skipped = [], {}
    for c in np.unique(cols["budget"]):
        at = cols["budget"] == c
        try:
            rows.append((c, *budget_minimum(cols["n"][at], cols["d"][at], cols["loss"][at])))
        except ValueError as e:
            skipped[float(c)] = str(e)
    if len(rows) < 2:
        listed = "; ".join(f"{c:.3g}: {why}" for c, why in list(skipped.items())[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        raise ValueError(
            f"need >= 2 IsoFLOP budgets with >= 3 sizes and a minimum, got {len(rows)} of "
            f"{len(rows) + len(skipped)} budgets (labels within {rtol:.0%} snapped together; "
            f"skipped {listed}{more})"
        )
    budgets = np.array([r[0] for r in rows])
    n_opt, d_opt, loss_opt = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
    a, log_k_n, b, log_k_d = _power_laws(budgets, n_opt, d_opt)
    return IsoFlopFit(
        budgets=budgets,
        n_opt=n_opt,
        d_opt=d_opt,
        loss_opt=loss_opt,
        parabolas=np.stack([r[4] for r in rows]),
        a=a,
        b=b,
        log_k_n=log_k_n,
        log_k_d=log_k_d,
        skipped=skipped,
        labels=labels,
    )


PARABOLA_CONSTANTS = 3  # loss = p0·x² + p1·x + p2 in x = ln N
LINE_CONSTANTS = 2  # log N_opt = a·log C + log k_n


def _shortfall(distinct_sizes: dict[float, int], n_budgets: int) -> str | None:
    """Why the full data cannot give an interval (bootstrap's points <= constants + 1 rule)."""
    most = max(distinct_sizes.values())
    if most <= PARABOLA_CONSTANTS + 1:
        return (f"the budgets have only {most} distinct sizes at most: an interval needs at least "
                f"{PARABOLA_CONSTANTS + 2} in some budget, so that resampled parabolas stay "
                "over-determined")
    if n_budgets <= LINE_CONSTANTS + 1:
        return (f"{n_budgets} budgets for the 2 constants of the line through their minima: an "
                f"interval needs at least {LINE_CONSTANTS + 2}")
    return None


def fit_isoflop_bootstrap(
    budget, n, d, loss, *, groups=None, n_bootstrap: int = 200, seed: int = 0
) -> tuple[IsoFlopFit, bootstrap.Bootstrap]:
    """(fit, bootstrap of (a, b)): runs resampled with replacement within each budget of the fit.

    Only the budgets the full fit used are resampled. A budget with <= 4 distinct sizes cannot be
    resampled into an over-determined parabola: it keeps its full-data minimum in every refit (the
    interval then leaves out its uncertainty, and `Bootstrap.caveat` says so) instead of costing
    the whole interval. A resample in which a resampled budget has fewer than 4 distinct sizes is
    rejected, not refitted; a refit in which a budget's parabola has no minimum counts as failed
    (dropping that budget would change what is estimated). No interval when every budget has <= 4
    distinct sizes or there are <= 3 budgets (see bootstrap.Bootstrap).
    """
    fit = fit_isoflop(budget, n, d, loss)
    budget = snap_budgets(budget)[0]
    n, d, loss = (np.asarray(v, np.float64) for v in (n, d, loss))
    groups = np.arange(budget.size) if groups is None else np.asarray(groups)
    keep = ~np.isnan(budget + n + d + loss) & np.isin(budget, fit.budgets)
    budget, n, d, loss, groups = budget[keep], n[keep], d[keep], loss[keep], groups[keep]
    size_id = np.unique(np.round(np.log(n), 6), return_inverse=True)[1].ravel()
    members = {c: np.flatnonzero(budget == c) for c in fit.budgets}
    labels = {c: np.unique(groups[idx]) for c, idx in members.items()}
    distinct = {c: np.unique(size_id[idx]).size for c, idx in members.items()}
    thin = [c for c, k in distinct.items() if k <= PARABOLA_CONSTANTS + 1]
    thin = thin if len(thin) < len(members) else []  # all thin: no interval (_shortfall)
    names = ("a", "b")
    if n_bootstrap == 0:
        return fit, bootstrap.Bootstrap.none(names, "no bootstrap resamples requested (n_bootstrap = 0)")
    shortfall = _shortfall(distinct, fit.budgets.size)
    rng = np.random.default_rng(seed)
    refits, rejected = [], 0
    for _ in range(n_bootstrap):
        takes = {}
        for c, idx in members.items():
            if c in thin:
                takes[c] = idx
                continue
            drawn = rng.choice(labels[c], labels[c].size)
            takes[c] = np.concatenate([idx[groups[idx] == label] for label in drawn])
        if min(np.unique(size_id[takes[c]]).size for c in members if c not in thin) < PARABOLA_CONSTANTS + 1:
            rejected += 1
            continue
        if shortfall is not None:
            continue
        try:
            minima = [budget_minimum(n[t], d[t], loss[t])[:2] for t in takes.values()]
        except ValueError:
            refits.append((np.nan, np.nan))
            continue
        a, _, b, _ = _power_laws(fit.budgets, *np.array(minima).T)
        refits.append((a, b))
    if shortfall is not None:
        return fit, bootstrap.Bootstrap.none(names, shortfall, n_bootstrap, rejected)
    refits = np.array(refits, np.float64).reshape(-1, 2)
    boot = bootstrap.Bootstrap.from_refits(names, refits, n_bootstrap, rejected)
    if thin:
        listed = ", ".join(f"{c:.3g} ({distinct[c]} sizes)" for c in thin)
        boot = dataclasses.replace(boot, caveat=(
            f"budget(s) {listed} have <= {PARABOLA_CONSTANTS + 1} distinct sizes and keep their "
            "full-data minimum in every refit: the interval leaves out their uncertainty"))
    return fit, boot
