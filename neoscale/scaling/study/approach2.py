"""fit.json's isoflop_approach2: Chinchilla's Approach 2 (IsoFLOP parabolas) on the main runs
grouped by budget_flops (neoscale.scaling.isoflop)."""

from __future__ import annotations

import pandas as pd

from neoscale.scaling import isoflop, results
from neoscale.scaling.study.entries import COMPUTE_AXIS, skipped, uncertainty


def entry(points: pd.DataFrame, n_bootstrap: int, seed: int) -> dict:
    # A cooldown branch ends at a fraction of its run's budget: it is on no IsoFLOP slice, whatever
    # budget_flops an older results table gave it.
    main = points[~results.is_branch(points)]
    with_budget = main[main["budget_flops"].notna() & (main["budget_flops"] > 0)]
    if with_budget.empty:
        return skipped("no main runs carry an IsoFLOP budget (budget_flops)")
    try:
        fit, boot = isoflop.fit_isoflop_bootstrap(
            *(with_budget[c].to_numpy() for c in ("budget_flops", "params_active", "tokens", "eval_loss")),
            groups=with_budget["run"].to_numpy(),
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
    except ValueError as e:
        return skipped(str(e))
    return {
        "status": "fitted",
        "form": "N_opt = k_n·C^a, D_opt = k_d·C^b from IsoFLOP parabolas",
        "compute_axis": COMPUTE_AXIS + ", the runs' budget_flops",
        "budgets": fit.budgets,
        "n_opt": fit.n_opt,
        "d_opt": fit.d_opt,
        "loss_opt": fit.loss_opt,
        "parabolas_ln_n": fit.parabolas,
        "constants": {"a": fit.a, "b": fit.b, "log_k_n": fit.log_k_n, "log_k_d": fit.log_k_d},
        **uncertainty(boot),
        "skipped_budgets": fit.skipped,
        "budget_snapping": {
            "labels": fit.labels,
            "budgets": int(fit.budgets.size + len(fit.skipped)),
            "rtol": isoflop.BUDGET_RTOL,
            "note": f"budget labels within {isoflop.BUDGET_RTOL:.0%} of a group's smallest are one "
            "budget, labelled by their geometric mean",
        },
    }
