"""fit_study: every scaling law a study's results support, with intervals and an honest
extrapolation check, as a JSON-serialisable dict (the runner writes it as fit.json; its markdown:
neoscale.report.fits_section). Each law's entry is built by its own module here (entries.py holds
what they share, backtest.py the rollout backtest).

Data points are the final evaluation rows of finished runs (each run's and each cooldown
branch's last evaluation; never stable-phase losses). Laws:
- loss_vs_compute: L(C) = E + A·C^−α (and the pure power law) on the compute–loss Pareto
  frontier of the dense runs (or of the only expert count present);
- ladder_law: the ladder's law L(C) = 1 / (1/H + C^α/A) on the main runs of one tokens-per-
  parameter allocation, H the held-out set's context-free loss (ladder_law.py): what the next size
  of the ladder will reach; beside it the floored M4 form and E + A·C^−α on the same runs, and
  ``law_to_read`` (law_to_read.py): the form the report tells its reader to use, by backtest;
- chinchilla_approach3: L(N, D) on the same runs' final points;
- isoflop_approach2: main runs grouped by budget_flops (cooldown branches belong to no budget);
- envelope_approach1: the per-step curves (a branch's only after its fork);
- moe: Clark et al.'s law and the Chinchilla form with an expert covariate, when the table has
  >= 2 expert counts;
- seed_noise: the final-loss spread of runs trained with replicate seeds (sparsity.py);
- expert_multipliers: each variant's (E = 1 routed, E experts) compute multiplier over dense, per
  token arm, beside the published MoE laws (experts.py, sparsity.py);
- curve_law: the LR-annealing law of the whole loss curve per size (curve_law.py), on every
  evaluation of the main runs and their schedules; it predicts the cooldown branches' final losses.
Conventions (CONVENTIONS, written into fit.json): N = params_active (all parameters a token uses,
embeddings included; = params_total for dense models), D = tokens, C = the flops column (for a
study run here: neoscale.accounting's default "neoscale" convention). Every law that speaks of
compute uses that one axis: Approach 3's allocation is converted to it through the runs' own
FLOPs per token, fitted as k·N^s (chinchilla.fit_compute_axis); its 6·N·D allocation is given
beside it for comparison with published exponents. Bootstrap units are runs, a cooldown branch
going with its parent; a law without an interval says why (bootstrap.Bootstrap).
"""


from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from neoscale.files import jsonable
from neoscale.scaling import bootstrap, curve_law, ladder_law, optimize, power_law, results
from neoscale.scaling.points import law_family, variant_labels
from neoscale.scaling.study import (
    approach1,
    approach2,
    approach3,
    experts,
    ladder,
    law_to_read,
    loss_vs_compute,
    sparsity,
)
from neoscale.scaling.study.backtest import rollout
from neoscale.scaling.study.entries import (
    COMPUTE_AXIS,
    COMPUTE_LABEL,
    CONVENTIONS,
    guarded,
    skipped,
)
from neoscale.scaling.study.loss_vs_compute import check_the_form_to_read, irreducible_loss


def fit_study(
    results_table: pd.DataFrame,
    *,
    curves: dict[str, pd.DataFrame] | None = None,
    schedules: Mapping[str, curve_law.Schedule] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    delta: float = optimize.HUBER_DELTA,
    backtest: bool = True,
    pin_E: float | None = None,
    context_free_loss: float | None = None,
    forecast_targets: Sequence[Mapping] = (),
) -> dict:
    """Every law the results support (see the module docstring); skipped laws give a reason.

    backtest: the rollout backtest of L(C) and Approach 3 (`rollout`: one refit per k and law).

    schedules: run -> learning-rate schedule (``curve_law.load_schedules(workdir)``): adds the
    curve law (``curve_law.fit_curve_law``: every evaluation of the main runs, not only final rows).

    delta: Huber's δ on log-loss residuals of the L-BFGS laws (inf: squared error, as some
    published fits used).

    pin_E: the irreducible loss of this evaluation set, when the study cannot identify it (its E
    sits at the bound 0, see irreducible_loss): L(C) with E and Approach 3 (and their backtests)
    fit the other constants with E fixed. The MoE laws still fit their own E.

    context_free_loss: H of the ladder's law, the held-out loss of the training split's token
    frequencies (``PreparedData.context_free_loss``; a study's plan.json records it); without it
    the ladder's law is skipped.

    forecast_targets: sizes planned but not trained, {run, size, N, D, C} each: every form of the
    ladder entry forecasts their loss at their C (``runner.forecasts`` keeps them in the ledger).
    """
    if curves is not None and not isinstance(curves, Mapping):
        raise ValueError(
            "curves must map run name -> per-step DataFrame (see "
            "neoscale.scaling.load_curves), got " + type(curves).__name__
        )
    points, dropped = results.final_points(results_table)
    family, label = law_family(points)
    if pin_E is not None and len(family):
        power_law.check_pinned_E(pin_E, family["eval_loss"].to_numpy())  # bad input, not a law's failure
    sizes = np.unique(family["params_active"]) if len(family) else np.array([])
    laws: dict[str, dict] = {}
    if sizes.size >= 3:
        laws["loss_vs_compute"] = guarded(loss_vs_compute.entry, family, label, n_bootstrap, seed, delta,
                                          pin_E)
    else:
        laws["loss_vs_compute"] = skipped(f"needs final rows of >= 3 distinct sizes, got {sizes.size}")
    if context_free_loss is None:
        laws["ladder_law"] = skipped("no context-free loss H of the held-out set was given (a study "
                                     "records it in plan.json; neoscale.fit --context_free_loss=H)")
    else:
        ladder_law.check_context_free_loss(context_free_loss)  # bad input, not a law's failure
        laws["ladder_law"] = guarded(ladder.entry, family, context_free_loss, n_bootstrap, seed, delta,
                                     [dict(t) for t in forecast_targets])
    n_tokens = np.unique(np.round(np.log10(family["tokens"]), 3)).size if len(family) else 0
    if len(family) >= 6 and sizes.size >= 3 and n_tokens >= 3:
        laws["chinchilla_approach3"] = guarded(approach3.entry, family, n_bootstrap, seed, delta, pin_E)
    else:
        laws["chinchilla_approach3"] = skipped(
            f"needs >= 6 final points with >= 3 sizes and >= 3 token counts, got {len(family)} "
            f"points, {sizes.size} sizes, {n_tokens} token counts"
        )
    if backtest:
        for key, min_sizes, predictor in (("loss_vs_compute", 3, loss_vs_compute.backtest),
                                          ("chinchilla_approach3", 3, approach3.backtest)):
            if laws[key]["status"] == "fitted":
                laws[key]["backtest"] = rollout(family, min_sizes,
                                                predictor(delta, n_bootstrap, seed, pin_E))
        if laws["ladder_law"]["status"] == "fitted":  # every form, on the runs the rule keeps
            runs, _ = ladder.exclusions(ladder.ladder_runs(family), context_free_loss)
            laws["ladder_law"]["backtest"] = rollout(
                runs, ladder_law.MIN_SIZES,
                ladder.backtest(context_free_loss, delta, n_bootstrap, seed))
    laws["isoflop_approach2"] = guarded(approach2.entry, family, n_bootstrap, seed)
    laws["envelope_approach1"] = guarded(approach1.entry, family, curves, n_bootstrap, seed)
    laws["moe"] = (guarded(experts.moe_entry, points, n_bootstrap, seed, delta) if len(points)
                   else skipped("no points"))
    laws["seed_noise"] = (guarded(sparsity.seed_noise_entry, points) if len(points)
                          else skipped("no points"))
    if len(points) and np.unique(variant_labels(points)).size >= 2:
        laws["expert_multipliers"] = sparsity.finish(
            guarded(experts.multiplier_entry, points, n_bootstrap, seed, delta), points,
            laws["seed_noise"])
    if schedules is not None:
        laws["curve_law"] = (guarded(curve_law.fit_curve_law, results_table, schedules, delta) if schedules
                             else skipped("no learning-rate schedules (runs/<run>/config.json)"))
    for law in laws.values():
        if "E" in (law.get("constants") or {}):
            law["irreducible_loss"] = irreducible_loss(law)
    check_the_form_to_read(laws["loss_vs_compute"])
    to_read = law_to_read.law_to_read(laws, context_free_loss)
    data = {
        "final_points": len(points),
        "cooldown_branches": int(results.is_branch(points).sum()) if len(points) else 0,
        "family": label,
        "sizes": sizes,
        "expert_counts": np.unique(points["num_experts"]) if len(points) else [],
        "dropped": dropped,
    }
    if "epochs" in points and points["epochs"].notna().any():
        data["epochs"] = dict(zip(points["run"], points["epochs"], strict=True))
        data["max_epochs"] = float(points["epochs"].max())
    return jsonable(
        {
            "conventions": CONVENTIONS,
            "compute_axis": COMPUTE_AXIS,
            "compute_label": COMPUTE_LABEL,
            "n_bootstrap": n_bootstrap,
            "bootstrap_min_accepted": bootstrap.MIN_ACCEPTED,
            "seed": seed,
            "objective": {"loss": "huber" if math.isfinite(delta) else "mse", "delta": delta,
                          "on": "log-loss residuals"},
            "pinned_E": pin_E,
            "context_free_loss": context_free_loss,
            "data": data,
            "law_to_read": to_read,
            "laws": laws,
        }
    )
