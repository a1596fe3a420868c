"""fit.json's ladder_law: the ladder's law L(C) = 1 / (1/H + C^α/A) on the main runs of one
tokens-per-parameter allocation (neoscale.scaling.ladder_law), its forecasts, extrapolation check
and rollout backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd

from neoscale.scaling import ladder_law, results
from neoscale.scaling.points import largest_held_out, size_ids
from neoscale.scaling.study.entries import (
    COMPUTE_AXIS,
    EXTRAPOLATION_FACTORS,
    finite_prediction,
    forecast,
    prediction_interval,
    skipped,
    uncertainty,
)

ALLOCATION_TOLERANCE = 1.1  # main runs within 10% of one tokens-per-parameter ratio are one ladder


def _ladder_runs(points: pd.DataFrame) -> pd.DataFrame:
    """The main runs (no cooldown branches), if they share one tokens-per-parameter ratio; else
    ValueError: the ladder's law follows one allocation."""
    main = points[~results.is_branch(points)]
    ratio = (main["tokens"] / main["params_active"]).to_numpy(np.float64)
    if ratio.size and ratio.max() > ALLOCATION_TOLERANCE * ratio.min():
        raise ValueError(f"the main runs train on {ratio.min():.3g} to {ratio.max():.3g} tokens per "
                         "parameter, not one allocation: the ladder's law predicts the next size of a "
                         "ladder trained on one ratio")
    return main


def _ladder_log(context_free_loss: float, compute: np.ndarray):
    """samples (A, 2) of (A, α) -> (A, m) log L at compute (m,)."""
    return lambda s: np.log(ladder_law.predict(s, context_free_loss, compute))


def _ladder_fit(main: pd.DataFrame, context_free_loss: float, n_bootstrap: int, seed: int,
                delta: float):
    """(fit, bootstrap, residuals) of the ladder's law on main runs."""
    c, loss = main["flops"].to_numpy(np.float64), main["eval_loss"].to_numpy(np.float64)
    fit, boot = ladder_law.fit_ladder_law_bootstrap(
        c, loss, context_free_loss, groups=main["run"].to_numpy(), n_bootstrap=n_bootstrap,
        seed=seed, delta=delta)
    below = loss < context_free_loss
    return fit, boot, np.log(fit.predict(c[below])) - np.log(loss[below])


def entry(points: pd.DataFrame, context_free_loss: float, n_bootstrap: int, seed: int,
          delta: float) -> dict:
    try:
        main = _ladder_runs(points)
    except ValueError as e:  # runs of several allocations: not a ladder, not a failed fit
        return skipped(str(e))
    sizes, _ = size_ids(main)
    if sizes.size < ladder_law.MIN_SIZES:
        return skipped(f"needs main runs of >= {ladder_law.MIN_SIZES} sizes, got {sizes.size} (fitted "
                       "on 3, the CPU demo's law missed its next sizes by 14-60%)")
    fit, boot, residuals = _ladder_fit(main, context_free_loss, n_bootstrap, seed, delta)
    predictions = []
    for factor in EXTRAPOLATION_FACTORS:
        c = float(main["flops"].max() * factor)
        predictions.append({"compute": c, "factor": factor, **forecast(
            fit, boot, residuals, 2, c, seed, _ladder_log(context_free_loss, [c]))})
    ratio = float(np.median(main["tokens"] / main["params_active"]))
    out = {
        "status": "fitted",
        "form": "L(C) = 1 / (1/H + C^alpha / A)",
        "what": (f"the loss of each size trained on {ratio:.3g} tokens per parameter (the main runs), "
                 f"H = {context_free_loss:.4g} nats: the held-out loss of the training split's token "
                 "frequencies (measured, not fitted)"),
        "compute_axis": COMPUTE_AXIS,
        "tokens_per_param": ratio,
        "points": fit.n_points,
        "dropped_at_or_above_H": fit.n_dropped,
        "constants": fit.constants(),
        **uncertainty(boot),
        "predictions": predictions,
    }
    train, held = largest_held_out(main)
    try:
        refit = ladder_law.fit_ladder_law(train["flops"], train["eval_loss"], context_free_loss,
                                          delta=delta)
        row = held.iloc[0]
        predicted = float(finite_prediction(refit.predict(row["flops"]),
                                            "the refit without the largest size"))
        out["extrapolation"] = {
            "held_out": f"largest size, N = {row['params_active']:.4g}",
            "compute": float(row["flops"]), "actual": float(row["eval_loss"]), "predicted": predicted,
            "relative_error": abs(predicted - row["eval_loss"]) / row["eval_loss"],
            "constants": refit.constants(),
        }
    except ValueError as e:
        out["extrapolation"] = skipped(str(e))
    return out


def backtest(context_free_loss: float, delta: float, n_bootstrap: int, seed: int):
    """fit_law for the ladder law's rollout: fitted on the smaller sizes' main runs, predicting
    each larger size's main run."""
    def fit_law(train):
        main = _ladder_runs(train)
        fit, boot, residuals = _ladder_fit(main, context_free_loss, n_bootstrap, seed, delta)

        def predict(held):
            row = _ladder_runs(held)
            at = row["flops"].to_numpy(np.float64)
            return {"actual": row["eval_loss"].to_numpy(), "law": fit.predict(at),
                    "intervals": {"law": prediction_interval(
                        boot, _ladder_log(context_free_loss, at), residuals, 2, seed)}}
        return predict
    return fit_law
