"""Compute multipliers: how much compute variant B saves over variant A at equal loss.

Each variant's final runs get the loss-vs-compute law of fit.json's ``loss_vs_compute``,
L(C) = E + A·C^(−α), fitted on their compute–loss Pareto frontier (points.frontier_points: all
points when the frontier has fewer than 3) of one family (points.law_family) with
power_law.fit_power_law_bootstrap. The multiplier at loss L is

    m(L) = C_A(L) / C_B(L),   C_X(L) = (A_X / (L − E_X))^(1/α_X)   (> 1: B needs less compute),

and "across compute" reads it at the loss A reaches with compute C: m(C) = C / C_B(L_A(C)). The
headline, at the largest compute both variants reach, is read at the worse of their two losses
there (``at_worse_loss``), so that a variant that loses is never extrapolated below its data.
A loss at or below a law's E is never reached by that variant: m = 0 when B cannot reach it,
inf when A cannot. The 95% intervals come from a bootstrap of runs that recomputes each variant's
frontier on every resample (the frontier is part of the estimate) and refits L(C) there. When the
variants share seeds, i.e. have the same runs up to the experts (matched shapes, budgets and model
seeds: ``pair_key``), the resamples are paired by size: one draw of (shape, budget, seed) units
serves both variants, so what the pair shares (the data order, the attention and embeddings'
initialisation, a budget's luck) cancels in the ratio, and replicate seeds, drawn as their own
units, put the seed noise into the interval. Otherwise A's and B's runs are resampled
independently and the i-th accepted refit of A is paired with the i-th of B. Intervals here are
order-statistic percentiles (a multiplier can be 0 or inf in some refits, so they are kept rather
than dropped).

The multiplier is constant only when the exponents agree (and the E's): the interval of
α_B − α_A says whether the data can tell; ``trend`` gives m's change over A's data and beyond.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from neoscale.files import jsonable
from neoscale.scaling import bootstrap, optimize, power_law, results
from neoscale.scaling.points import budget_tags, frontier_points, law_family, replicate_ids

GRID_POINTS = 13  # compute values across A's data, and again from its largest compute to 100x
EXTRAPOLATION_FACTORS = (10.0, 100.0)
N_LOSSES = 4
WHAT = ("multiplier m = C_A(L) / C_B(L): the compute variant A needs to reach loss L over the "
        "compute variant B needs (> 1: B needs less); across compute, m(C) = C / C_B(L_A(C)) at the "
        "loss A's law reaches with compute C; 0: B never reaches that loss (it is below B's E), inf: "
        "A never does")


@dataclasses.dataclass(frozen=True)
class VariantFit:
    """One variant's L(C) on its frontier points (n,), with its bootstrap of (E, A, α)."""

    name: str
    family: str
    fit: power_law.PowerLawFit
    boot: bootstrap.Bootstrap
    compute: np.ndarray  # (n,) frontier compute
    loss: np.ndarray  # (n,) frontier loss
    sizes: int
    on_frontier: bool
    pair_labels: frozenset = frozenset()  # the resampling units (pair_key) of the variant's runs
    resample_ids: np.ndarray | None = None  # (accepted,) which resample each accepted refit is
    boot_seed: int = 0

    @property
    def samples(self) -> np.ndarray:
        """(k, 3) accepted refits (E, A, α)."""
        return self.boot.samples

    def constants(self) -> np.ndarray:
        """(1, 3) the full fit's (E, A, α)."""
        return np.array([[self.fit.E, self.fit.A, self.fit.alpha]])

    def summary(self) -> dict:
        return {"name": self.name, "family": self.family, "sizes": self.sizes,
                "points": int(self.compute.size), "on_frontier": self.on_frontier,
                "compute_range": [self.compute.min(), self.compute.max()],
                "loss_range": [self.loss.min(), self.loss.max()],
                "constants": self.fit.constants(), "intervals": self.boot.intervals(),
                "interval_note": self.boot.note, "bootstrap": self.boot.summary()}


def pair_key(points: pd.DataFrame) -> np.ndarray:
    """(n,) each point's resampling unit: its shape without the experts (d_model x layers x
    heads), its budget (the run name's tag, else tokens per active parameter) and its model seed,
    so that a dense run and the routed run of the same shape, budget and seed are one unit; a
    cooldown branch goes with its parent run (its parent's unit). Tables without shapes fall
    back to the parent run."""
    if not {"d_model", "num_layers", "num_heads"} <= set(points.columns):
        return points["parent"].astype(str).to_numpy()
    tags = budget_tags(points)
    if tags is None:  # not named by the runner: the main run's tokens per parameter
        main = points.drop_duplicates("run").set_index("run")
        ratio = points["parent"].map(main["tokens"] / main["params_active"]).to_numpy(np.float64)
        ratio = np.where(np.isfinite(ratio), ratio, (points["tokens"] / points["params_active"]))
        tags = np.array([f"tpp{r:.2g}" for r in ratio], dtype=object)
    seed = points["seed"].fillna(0).to_numpy() if "seed" in points else np.zeros(len(points))
    return np.array([f"w{int(d)}d{int(n)}h{int(h)}|{t}|seed{int(s)}" for d, n, h, t, s in
                     zip(points["d_model"], points["num_layers"], points["num_heads"], tags, seed,
                         strict=True)], dtype=object)


def frontier_bootstrap(compute: np.ndarray, loss: np.ndarray, groups: np.ndarray, n_resamples: int,
                       seed: int, delta: float = optimize.HUBER_DELTA,
                       replicates: np.ndarray | None = None
                       ) -> tuple[bootstrap.Bootstrap, np.ndarray]:
    """(bootstrap of (E, A, α), (accepted,) resample index of each accepted refit): each resample
    of units ``groups`` (n,) recomputes the compute-loss frontier of the points it drew
    (points.frontier_points, ``replicates`` its replicate ids) and refits L(C) = E + A·C^(−α) on
    it (weighted by the draws)."""
    law = power_law.SATURATING
    log_c, log_y = np.log(compute), np.log(loss)
    centre = float(log_c.mean())
    log_x = (log_c - centre)[:, None]
    requirement = bootstrap.Requirement(points=law.n_free + 1)
    use, _ = frontier_points(compute, loss, replicates)
    none = np.empty(0, int)
    if n_resamples == 0:
        return bootstrap.Bootstrap.none(power_law.NAMES, "no bootstrap resamples requested "
                                        "(n_bootstrap = 0)"), none
    if (shortfall := requirement.shortfall(log_x[use])) is not None:
        return bootstrap.Bootstrap.none(power_law.NAMES, shortfall, n_resamples), none
    starts = power_law._starts(log_c[use], loss[use], True)
    params, objective = optimize.minimize_huber(law, starts, log_x[use], log_y[use], delta=delta)
    seeds = bootstrap.distinct_best(params, objective, 3)
    weights = bootstrap.resample_weights(groups, n_resamples, seed)
    for row in weights:  # the frontier of what this resample drew
        present = row > 0
        keep, _ = frontier_points(compute[present], loss[present],
                                  None if replicates is None else replicates[present])
        mask = np.zeros_like(present)
        mask[np.nonzero(present)[0][keep]] = True
        row[~mask] = 0.0
    ok = requirement.met(log_x, weights > 0)
    ids = np.nonzero(ok)[0]
    if ids.size == 0:
        return bootstrap.Bootstrap.from_refits(power_law.NAMES, np.empty((0, 3)), n_resamples,
                                               int((~ok).sum())), none
    n_seeds = seeds.shape[0]
    raw, objective = optimize.minimize_huber(law, np.tile(seeds, (ids.size, 1)), log_x, log_y,
                                             np.repeat(weights[ids], n_seeds, axis=0), delta=delta)
    raw, objective = raw.reshape(ids.size, n_seeds, -1), objective.reshape(ids.size, n_seeds)
    best = raw[np.arange(ids.size), np.argmin(objective, axis=1)]
    best[~np.isfinite(objective.min(axis=1))] = np.nan
    refits = power_law._decode(best, centre, True)
    boot = bootstrap.Bootstrap.from_refits(power_law.NAMES, refits, n_resamples, int((~ok).sum()))
    return boot, ids[np.isfinite(refits).all(axis=1)]


def fit_variant(table: pd.DataFrame, name: str, *, n_bootstrap: int = 200, seed: int = 0,
                delta: float = optimize.HUBER_DELTA) -> VariantFit:
    """L(C) of one variant's results (a results table or final_points' frame); ValueError naming
    the variant when it has fewer than 3 sizes or its loss does not fall with compute. Its
    bootstrap (``frontier_bootstrap``) resamples ``pair_key`` units with ``seed``: variants with
    the same units and seed draw the same resamples (compare_fits pairs them)."""
    points, _ = results.final_points(table)
    if points.empty:
        raise ValueError(f"variant {name!r} has no finished runs with positive params, tokens, flops "
                         "and loss")
    family, label = law_family(points)
    sizes = np.unique(family["params_active"]).size
    if sizes < 3:
        raise ValueError(f"variant {name!r} has final runs of {sizes} distinct size(s) ({label}): "
                         "a loss-vs-compute law needs >= 3")
    compute, loss = family["flops"].to_numpy(), family["eval_loss"].to_numpy()
    replicates = replicate_ids(family)
    use, on_frontier = frontier_points(compute, loss, replicates)
    groups = pair_key(family)
    with np.errstate(all="ignore"):
        fit = power_law.fit_power_law(compute[use], loss[use], delta=delta)
        boot, ids = frontier_bootstrap(compute, loss, groups, n_bootstrap, seed, delta, replicates)
    if not fit.alpha > 0:
        raise ValueError(f"variant {name!r}: the fitted exponent alpha = {fit.alpha:.3g} is not "
                         "positive (its loss does not fall with compute)")
    return VariantFit(name, label, fit, boot, compute[use], loss[use], sizes, on_frontier,
                      frozenset(groups), ids, seed)


def loss_at(constants: np.ndarray, compute) -> np.ndarray:
    """(k, m) L = E + A·C^(−α) of constants (k, 3) at compute (m,)."""
    c = np.asarray(compute, np.float64)[None, :]
    return constants[:, :1] + constants[:, 1:2] * c ** -constants[:, 2:3]


def compute_for(constants: np.ndarray, loss) -> np.ndarray:
    """(k, m) compute C_X(L) = (A / (L − E))^(1/α) of constants (k, 3) at losses L (k, m) or (m,);
    inf where L <= E (never reached)."""
    loss = np.broadcast_to(np.asarray(loss, np.float64), (constants.shape[0], np.shape(loss)[-1]))
    gap = loss - constants[:, :1]
    with np.errstate(all="ignore"):
        out = (constants[:, 1:2] / gap) ** (1 / constants[:, 2:3])
    return np.where(gap > 0, out, np.inf)


def by_compute(a: np.ndarray, b: np.ndarray, compute) -> np.ndarray:
    """(k, m) m(C) = C / C_B(L_A(C)) for paired constants a, b (k, 3) at A's compute (m,)."""
    return np.asarray(compute, np.float64)[None, :] / compute_for(b, loss_at(a, compute))


def at_worse_loss(a: np.ndarray, b: np.ndarray, compute: float) -> tuple[np.ndarray, np.ndarray]:
    """((k,) m, (k,) the loss it is read at) for paired constants a, b (k, 3) at one compute C that
    both variants reached, at the worse of their two losses there, L* = max(L_A(C), L_B(C)): the
    variant that loses is read at its own law's value, the winner's law at a loss it reached
    with less compute, so neither law is asked about a loss lower than it reached at C (when B
    loses, m(C) = C / C_B(L_A(C)) would read B's law below its data and gives 0 as soon as a
    refit puts B's E above L_A). Equals m(C) when B wins or ties, C_A(L_B(C)) / C when B loses."""
    c = [float(compute)]
    worse = np.maximum(loss_at(a, c), loss_at(b, c))  # (k, 1)
    return by_loss(a, b, worse)[:, 0], worse[:, 0]


def by_loss(a: np.ndarray, b: np.ndarray, loss) -> np.ndarray:
    """(k, m) m(L) = C_A(L) / C_B(L); nan where neither law reaches L."""
    with np.errstate(invalid="ignore"):
        return compute_for(a, loss) / compute_for(b, loss)


def _interval(samples: np.ndarray) -> np.ndarray:
    """(2, ...) 95% percentile interval over axis 0 by order statistics: 0 and inf samples count
    (percentile_interval would drop them), nan ones (neither law reaches the loss) do not."""
    tail = 100 * (1 - bootstrap.LEVEL) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-nan column: a nan interval
        return np.nanpercentile(samples, [tail, 100 - tail], axis=0, method="inverted_cdf")


def _overlap(a: VariantFit, b: VariantFit) -> dict:
    low, high = max(a.loss.min(), b.loss.min()), min(a.loss.max(), b.loss.max())
    if low < high:
        return {"loss_range": [low, high], "note": None}
    return {"loss_range": None,
            "note": (f"the loss ranges do not overlap: {a.name!r} reached "
                     f"[{a.loss.min():.4g}, {a.loss.max():.4g}], {b.name!r} "
                     f"[{b.loss.min():.4g}, {b.loss.max():.4g}]; every multiplier extrapolates at "
                     "least one law beyond its data")}


def _entry(value: float, interval, **fields) -> dict:
    return {**fields, "multiplier": value,
            "interval": None if interval is None else [interval[0], interval[1]]}


def _paired_samples(a: VariantFit, b: VariantFit) -> tuple[np.ndarray, np.ndarray, str]:
    """(A's, B's samples (k, 3), how they were paired): the same resamples when both drew the same
    units with the same seed (by size), else the i-th accepted of each (independent)."""
    same = (a.pair_labels == b.pair_labels and a.boot_seed == b.boot_seed
            and a.resample_ids is not None and b.resample_ids is not None)
    if same:
        common, ia, ib = np.intersect1d(a.resample_ids, b.resample_ids, return_indices=True)
        return a.samples[ia], b.samples[ib], ("by size: the same resamples of (shape, tokens per "
                                              "parameter, seed) units for both variants")
    k = min(a.boot.accepted, b.boot.accepted)
    return a.samples[:k], b.samples[:k], ("unpaired: the variants' runs differ (shapes, budgets or "
                                          "seeds); the i-th accepted refit of each is paired")


def _trend(m_point: np.ndarray, m_samples: np.ndarray | None, i: int, j: int, grid, where: str) -> dict:
    """m(C_j) / m(C_i): > 1 the multiplier grows from grid[i] to grid[j]."""
    with np.errstate(all="ignore"):
        ratio = m_point[j] / m_point[i]
        band = None if m_samples is None else _interval(m_samples[:, j] / m_samples[:, i])
    if band is None:
        verdict = "no interval"
    else:
        verdict = "grows" if band[0] > 1 else "shrinks" if band[1] < 1 else "constant within the interval"
    return {"from_compute": grid[i], "to_compute": grid[j], "where": where, "ratio": ratio,
            "interval": None if band is None else list(band), "verdict": verdict}


def compare(table_a: pd.DataFrame, table_b: pd.DataFrame, *, names=("A", "B"), n_bootstrap: int = 200,
            seed: int = 0, delta: float = optimize.HUBER_DELTA) -> dict:
    """The compute multiplier of variant B over A (module docstring), JSON-serialisable.

    Both bootstraps use ``seed``: paired by size when the variants share units (module docstring)."""
    a = fit_variant(table_a, names[0], n_bootstrap=n_bootstrap, seed=seed, delta=delta)
    b = fit_variant(table_b, names[1], n_bootstrap=n_bootstrap, seed=seed, delta=delta)
    return compare_fits(a, b)


def compare_fits(a: VariantFit, b: VariantFit) -> dict:
    """compare() on two fitted variants (a baseline fitted once serves several comparisons)."""
    c_min, c_max = a.compute.min(), a.compute.max()
    grid = np.concatenate([np.geomspace(c_min, c_max, GRID_POINTS),
                           np.geomspace(c_max, c_max * max(EXTRAPOLATION_FACTORS), GRID_POINTS)[1:]])
    notes = [f"{v.name!r} has no interval: {v.boot.note}" for v in (a, b) if not v.boot.has_interval]
    sa, sb, pairing = _paired_samples(a, b)
    paired = len(sa)
    if not notes and paired < bootstrap.MIN_ACCEPTED:
        notes.append(f"only {paired} resamples accepted by both variants: an interval needs "
                     f"{bootstrap.MIN_ACCEPTED}")
    has_interval = not notes
    pa, pb = a.constants(), b.constants()
    m_point = by_compute(pa, pb, grid)[0]
    m_samples = by_compute(sa, sb, grid) if has_interval else None
    bands = _interval(m_samples) if has_interval else None
    loss_a = loss_at(pa, grid)[0]
    b_low, b_high = b.loss.min(), b.loss.max()
    compute_rows = []
    with np.errstate(divide="ignore"):
        compute_b = grid / m_point  # inf where B never reaches A's loss
    for i, c in enumerate(grid):
        compute_rows.append(_entry(
            m_point[i], None if bands is None else bands[:, i],
            compute=c, factor=c / c_max, loss=loss_a[i], compute_B=compute_b[i],
            extrapolates={"A": bool(c > c_max * (1 + 1e-9)),
                          "B": bool(not b_low * (1 - 1e-9) <= loss_a[i] <= b_high * (1 + 1e-9))}))
    headline = [dict(compute_rows[GRID_POINTS // 2], where=f"middle of {a.name}'s compute range (log scale)")]
    headline += [dict(row, where=f"{a.name}'s largest compute" if row["factor"] < 1.5 else
                      f"{row['factor']:.0f}x beyond {a.name}'s largest compute (extrapolated)")
                 for row in compute_rows[GRID_POINTS - 1:]
                 if np.isclose(row["factor"], (1.0, *EXTRAPOLATION_FACTORS), rtol=1e-6).any()]
    overlap = _overlap(a, b)
    if overlap["note"]:
        notes.append(overlap["note"])
    low, high = overlap["loss_range"] or (a.loss.min(), a.loss.max())
    losses = np.geomspace(low, high, N_LOSSES)
    ml_point = by_loss(pa, pb, losses)[0]
    ml_bands = _interval(by_loss(sa, sb, losses)) if has_interval else None
    loss_rows = [_entry(ml_point[i], None if ml_bands is None else ml_bands[:, i], loss=losses[i],
                        compute_A=compute_for(pa, losses[i:i + 1])[0, 0],
                        compute_B=compute_for(pb, losses[i:i + 1])[0, 0],
                        extrapolates={k: bool(not v.loss.min() * (1 - 1e-9) <= losses[i]
                                              <= v.loss.max() * (1 + 1e-9)) for k, v in (("A", a), ("B", b))})
                 for i in range(N_LOSSES)]
    unreachable = m_point == 0
    if unreachable.any():
        notes.append(f"{b.name!r} never reaches the loss {a.name!r}'s law gives beyond "
                     f"{grid[np.argmax(unreachable)]:.3g} FLOPs (below B's E = {b.fit.E:.4g}): "
                     "multiplier 0 there")
    diff = b.fit.alpha - a.fit.alpha
    diff_band = _interval(sb[:, 2] - sa[:, 2]) if has_interval else None
    if diff_band is None:
        constant, verdict = None, "unknown: no interval"
    elif diff_band[0] <= 0 <= diff_band[1]:
        constant, verdict = True, ("constant: the exponents agree within their interval (alpha_B − "
                                   "alpha_A contains 0), so the data cannot tell a multiplier that "
                                   "changes with scale from a constant one (different E's still bend "
                                   "it near the floor: see trend)")
    else:
        constant = False
        verdict = (f"{'grows' if diff > 0 else 'shrinks'} with compute: {b.name!r}'s loss falls "
                   f"{'faster' if diff > 0 else 'slower'} with compute (alpha_B − alpha_A excludes 0)")
    exponents = {"alpha_A": a.fit.alpha, "alpha_B": b.fit.alpha, "difference": diff,
                 "interval": None if diff_band is None else list(diff_band), "constant": constant,
                 "verdict": verdict}
    shared = min(c_max, b.compute.max())  # the largest compute both variants trained at
    shared_point, shared_loss = at_worse_loss(pa, pb, shared)
    shared_samples = at_worse_loss(sa, sb, shared)[0] if has_interval else None
    at_shared = _entry(shared_point[0], None if shared_samples is None else _interval(shared_samples),
                       compute=shared, loss=shared_loss[0],
                       compute_A=compute_for(pa, shared_loss[:, None])[0, 0],
                       compute_B=compute_for(pb, shared_loss[:, None])[0, 0],
                       where="the largest compute both variants reach, at the worse of their two "
                             "losses there (at_worse_loss)")
    last = len(grid) - 1
    trend = [_trend(m_point, m_samples, 0, GRID_POINTS - 1, grid, "across A's data"),
             _trend(m_point, m_samples, GRID_POINTS - 1, last, grid,
                    f"A's largest compute to {max(EXTRAPOLATION_FACTORS):.0f}x beyond (extrapolated)")]
    return jsonable({
        "what": WHAT,
        "law": "L(C) = E + A·C^(−alpha) on each variant's compute–loss Pareto frontier",
        "A": a.summary(), "B": b.summary(),
        "level": bootstrap.LEVEL,
        "paired_resamples": paired if has_interval else 0,
        "pairing": pairing,
        "headline": headline,
        "at_shared_compute": at_shared,
        # paired refits' multipliers there, for what combines comparisons (token arms' crossover):
        # fit.json drops them (sparsity.finish)
        "shared_samples": shared_samples,
        "by_compute": compute_rows,
        "by_loss": loss_rows,
        "exponents": exponents,
        "trend": trend,
        "overlap": overlap,
        "notes": notes,
    })


def compare_groups(tables: Mapping[str, pd.DataFrame], baseline: str, *, n_bootstrap: int = 200,
                   seed: int = 0, delta: float = optimize.HUBER_DELTA) -> dict[str, dict]:
    """Each group's comparison with the baseline group (the baseline fitted once; group i's
    bootstrap seeded ``seed`` too, so that variants of the same runs pair by size): {name:
    compare_fits() result}."""
    kw = {"n_bootstrap": n_bootstrap, "delta": delta}
    base = fit_variant(tables[baseline], baseline, seed=seed, **kw)
    others = [name for name in tables if name != baseline]
    return {name: compare_fits(base, fit_variant(tables[name], name, seed=seed, **kw))
            for name in others}


def summary_line(result: dict) -> dict:
    """The CLI's short summary of one comparison: the headline multipliers and the verdict."""
    def fmt(row):
        text = f"{row['multiplier']:.3g}" if row["multiplier"] is not None else "n/a"
        return text + (f" [{row['interval'][0]:.3g}, {row['interval'][1]:.3g}]"
                       if row["interval"] and None not in row["interval"] else "")
    keys = ["at_mid_compute", "at_largest_compute"] + [f"x{f:.0f}" for f in EXTRAPOLATION_FACTORS]
    out = {key: fmt(row) for key, row in zip(keys, result["headline"], strict=True)}
    out["scale"] = result["exponents"]["verdict"].split(":")[0]
    out["trend_in_data"] = result["trend"][0]["verdict"]
    if result["notes"]:
        out["notes"] = result["notes"]
    return out
