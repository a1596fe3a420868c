"""fit.json's loss_vs_compute: L(C) = E + A·C^−α (and the pure power law) on the compute-loss
Pareto frontier of one family, its forecasts, extrapolation check and rollout backtest; and
whether its E is identified."""

from __future__ import annotations

import numpy as np
import pandas as pd

from neoscale.scaling import power_law
from neoscale.scaling.points import frontier_points, largest_held_out, replicate_ids
from neoscale.scaling.study.entries import (
    COMPUTE_AXIS,
    EXTRAPOLATION_FACTORS,
    finite_prediction,
    forecast,
    free_constants,
    inputs_of,
    power_law_log,
    prediction_interval,
    skipped,
    uncertainty,
)


def entry(points: pd.DataFrame, label: str, n_bootstrap: int, seed: int, delta: float,
          pin_E: float | None = None) -> dict:
    compute, loss = points["flops"].to_numpy(), points["eval_loss"].to_numpy()
    use, on_frontier = frontier_points(compute, loss, replicate_ids(points))  # seeds together
    groups = points["parent"].to_numpy()[use]
    fit, boot = power_law.fit_power_law_bootstrap(
        compute[use], loss[use], groups=groups, n_bootstrap=n_bootstrap, seed=seed, delta=delta,
        fixed_E=pin_E,
    )
    if not fit.alpha > 0:
        return {**skipped(f"the fitted exponent alpha = {fit.alpha:.3g} is not positive: loss does "
                          "not fall with compute on these points"), "fitted_constants": fit.constants()}
    pure, pure_boot = power_law.fit_power_law_bootstrap(
        compute[use], loss[use], with_offset=False, groups=groups, n_bootstrap=n_bootstrap, seed=seed,
        delta=delta,
    )
    grid = np.geomspace(compute.min(), compute.max() * max(EXTRAPOLATION_FACTORS), 60)
    band = {"compute": grid, "loss": fit.predict(grid)}
    residuals = np.log(fit.predict(compute[use])) - np.log(loss[use])
    if boot.has_interval:
        band["lower"], band["upper"] = np.exp(boot.interval_of(power_law_log(grid)(boot.samples)))
        band["prediction_lower"], band["prediction_upper"] = prediction_interval(
            boot, power_law_log(grid), residuals, free_constants(3, pin_E), seed)
    pure_residuals = np.log(pure.predict(compute[use])) - np.log(loss[use])
    predictions = []
    for factor in EXTRAPOLATION_FACTORS:
        c = compute.max() * factor
        entry = forecast(fit, boot, residuals, free_constants(3, pin_E), c, seed)
        # The report reads the pure law when E is not identified: its forecast, with its own bands.
        entry["pure_power_law"] = forecast(pure, pure_boot, pure_residuals, 2, c, seed)
        predictions.append({"compute": c, "factor": factor, **entry})
    pure_uncertainty = uncertainty(pure_boot)
    if pure_uncertainty["intervals"]:
        pure_uncertainty["intervals"].pop("E")
    out = {
        "status": "fitted",
        "form": "L(C) = E + A·C^(−alpha)",
        "compute_axis": COMPUTE_AXIS,
        "family": label,
        "points": int(use.sum()),
        "on_frontier": on_frontier,
        "constants": fit.constants(),
        **uncertainty(boot, pinned=pin_E is not None),
        "E_pinned": pin_E is not None,
        "pure_power_law": {
            "form": "L(C) = A·C^(−alpha)",
            "constants": {"A": pure.A, "alpha": pure.alpha},
            **pure_uncertainty,
        },
        "frontier": band,
        "predictions": predictions,
        "inputs": inputs_of(points[use]),
    }
    train, held = largest_held_out(points)
    try:
        t_c, t_l = train["flops"].to_numpy(), train["eval_loss"].to_numpy()
        t_use, _ = frontier_points(t_c, t_l, replicate_ids(train))
        best = held.loc[held["eval_loss"].idxmin()]
        checks = {}
        for form, with_offset in (("with_E", True), ("pure_power_law", False)):
            refit = power_law.fit_power_law(t_c[t_use], t_l[t_use], with_offset=with_offset, delta=delta,
                                            fixed_E=pin_E)
            predicted = float(finite_prediction(refit.predict(best["flops"]),
                                                f"the refit without the largest size ({form})"))
            checks[form] = {"predicted": predicted, "constants": refit.constants(),
                            "relative_error": abs(predicted - best["eval_loss"]) / best["eval_loss"]}
        out["extrapolation"] = {
            "held_out": f"largest size, N = {best['params_active']:.4g}",
            "compute": float(best["flops"]),
            "actual": float(best["eval_loss"]),
            **checks["with_E"],
            "forms": checks,
        }
    except ValueError as e:
        out["extrapolation"] = skipped(str(e))
    return out



def backtest(delta: float, n_bootstrap: int, seed: int, pin_E: float | None):
    """fit_law for L(C)'s rollout: both forms, predicted at each held size's best point."""
    def fit_law(train):
        c, loss = train["flops"].to_numpy(), train["eval_loss"].to_numpy()
        use, _ = frontier_points(c, loss, replicate_ids(train))
        forms = {form: power_law.fit_power_law_bootstrap(
                     c[use], loss[use], with_offset=with_offset, groups=train["parent"].to_numpy()[use],
                     n_bootstrap=n_bootstrap, seed=seed, delta=delta, fixed_E=pin_E)
                 for form, with_offset in (("with_E", True), ("pure_power_law", False))}

        def predict(held):
            best = held.loc[[held["eval_loss"].idxmin()]]
            at = best["flops"].to_numpy()
            out = {"actual": best["eval_loss"].to_numpy(), "intervals": {}}
            for form, (f, boot) in forms.items():
                out[form] = f.predict(at)
                residuals = np.log(f.predict(c[use])) - np.log(loss[use])
                n_params = free_constants(3, pin_E) if form == "with_E" else 2
                out["intervals"][form] = prediction_interval(boot, power_law_log(at), residuals,
                                                             n_params, seed)
            return out
        return predict
    return fit_law



E_BOUND_TOLERANCE = 1e-2  # nats: an irreducible loss below this sits at its bound, E >= 0


def check_the_form_to_read(law: dict) -> None:
    """Points L(C)'s extrapolation check (``relative_error``, ``predicted``, ``form``) at the form
    the report tells the reader to use: the law with E when E is identified, else the pure power
    law. Both forms' checks stay under ``forms``; the held-out size is in neither fit."""
    ext = law.get("extrapolation") or {}
    if "forms" not in ext:
        return
    form = form_to_read(law)
    ext.update(ext["forms"][form], form=form)


def form_to_read(law: dict) -> str:
    """L(C)'s form the report tells the reader to use: with E when E is identified, else pure."""
    return "with_E" if law["irreducible_loss"]["identified"] else "pure_power_law"


def irreducible_loss(law: dict) -> dict:
    """Whether a law's E is identified: neither its estimate nor its interval's lower end sits at
    the bound E = 0. When it does, the data (too little curvature in log-log) cannot tell E from 0:
    the fit is effectively the pure power law, and E's interval says nothing."""
    estimate = float(law["constants"]["E"])
    if law.get("E_pinned"):
        return {"identified": True, "pinned": True,
                "note": f"E is pinned at {estimate:.4g} (given, not fitted: no interval)"}
    low = ((law.get("intervals") or {}).get("E") or [estimate])[0]
    identified = estimate > E_BOUND_TOLERANCE and low > E_BOUND_TOLERANCE
    note = ("E is identified" if identified else
            f"E is not identified: the fit put it at its bound 0 (E = {estimate:.3g}, interval from "
            f"{low:.3g}), so the data cannot tell an irreducible loss from none; read this law as "
            "the pure power law in the other terms, and do not quote E")
    return {"identified": identified, "note": note}
