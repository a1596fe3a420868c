"""fit.json's moe (Clark et al.'s law and the Chinchilla form with an expert covariate) and
compute_multiplier (each expert count's compute multiplier over the fewest experts)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from neoscale.scaling import moe, multiplier, power_law
from neoscale.scaling.points import frontier_points
from neoscale.scaling.study.entries import FIT_ERRORS, skipped, uncertainty


def moe_entry(points: pd.DataFrame, n_bootstrap: int, seed: int, delta: float) -> dict:
    counts = np.unique(points["num_experts"])
    if counts.size < 2:
        return skipped(f"needs >= 2 distinct expert counts, got {counts.tolist()}")
    out = {"status": "fitted", "expert_counts": counts, "frontiers": {}}
    for e in counts:
        sub = points[points["num_experts"] == e]
        c, loss_e = sub["flops"].to_numpy(), sub["eval_loss"].to_numpy()
        use, _ = frontier_points(c, loss_e)
        try:
            fit = power_law.fit_power_law(c[use], loss_e[use], delta=delta)
            out["frontiers"][str(int(e))] = {"status": "fitted", "constants": fit.constants()}
        except ValueError as err:
            out["frontiers"][str(int(e))] = skipped(str(err))
    n, d, experts, loss = (
        points[c].to_numpy() for c in ("params_active", "tokens", "num_experts", "eval_loss")
    )
    try:
        clark = moe.fit_clark(n, experts, loss)
        out["clark"] = {
            "form": "log10 L = a·log10 N + b·log10 Ê + c·log10 N·log10 Ê + d",
            "constants": clark.constants(),
            "effective_params": {str(int(e)): clark.effective_params(n.max(), e) for e in counts},
        }
    except ValueError as err:
        out["clark"] = skipped(str(err))
    try:
        fit, boot = moe.fit_moe_chinchilla_bootstrap(
            n, d, experts, loss, groups=points["parent"].to_numpy(), n_bootstrap=n_bootstrap, seed=seed,
            delta=delta,
        )
        saving = {str(int(e)): fit.compute_saving(e) for e in counts}
        entry = {
            "form": "L(N, D, E) = E0 + A/(N^alpha·E^gamma) + B/D^beta (N active)",
            "constants": fit.constants(),
            **uncertainty(boot),
            "compute_saving": saving,
            "compute_saving_note": "times less compute than dense to reach the same loss, on the "
            "axis C = 6·N_active·D (not the flops column); the same at every loss in this form",
            "compute_saving_intervals": None,
        }
        if boot.has_interval:
            entry["compute_saving_intervals"] = {
                str(int(e)): list(boot.interval_of(
                    np.array([moe.MoEChinchillaFit(*row).compute_saving(e) for row in boot.samples])))
                for e in counts
            }
        out["chinchilla_form"] = entry
    except ValueError as err:
        out["chinchilla_form"] = skipped(str(err))
    return out


def multiplier_entry(points: pd.DataFrame, n_bootstrap: int, seed: int, delta: float) -> dict:
    """Does sparsity pay, and at what scale: each expert count's compute multiplier over the fewest
    experts (dense when present) at equal loss (neoscale.scaling.multiplier), with intervals."""
    counts = sorted(int(e) for e in np.unique(points["num_experts"]))
    names = {e: "dense" if e == 1 else f"{e} experts" for e in counts}
    kw = {"n_bootstrap": n_bootstrap, "delta": delta}
    with np.errstate(all="ignore"):
        baseline = multiplier.fit_variant(points[points["num_experts"] == counts[0]], names[counts[0]],
                                          seed=seed, **kw)
        comparisons = {}
        for e in counts[1:]:  # one at a time: a count too small to fit is skipped, not the others
            try:
                variant = multiplier.fit_variant(points[points["num_experts"] == e], names[e],
                                                 seed=seed + 1, **kw)
                comparisons[names[e]] = multiplier.compare_fits(baseline, variant)
            except FIT_ERRORS as error:
                comparisons[names[e]] = skipped(str(error))
    return {"status": "fitted", "baseline": baseline.name, "what": multiplier.WHAT,
            "comparisons": comparisons}
