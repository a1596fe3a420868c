"""fit.json's ladder_law: the loss of each size of one tokens-per-parameter allocation (the main
runs) in three forms on the same points (``FORMS``): the ladder's law L(C) = 1 / (1/H + C^α/A)
(``pure``), Alabdulmohsin et al.'s M4 with a fitted floor E (``floor``), and the power law with
an irreducible loss E + A·C^−α (``power_law``); their forecasts, extrapolation checks, rollout
backtests and leave-one-out refits, the free-H fit, and which runs were excluded and why. Which
form the report tells its reader to use is decided in ``law_to_read.py``, by a rule fixed there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from neoscale.scaling import ladder_law, power_law, results
from neoscale.scaling.points import largest_held_out, size_ids
from neoscale.scaling.study.entries import (
    COMPUTE_AXIS,
    EXTRAPOLATION_FACTORS,
    FIT_ERRORS,
    finite_prediction,
    forecast,
    inputs_of,
    power_law_log,
    prediction_interval,
    skipped,
    uncertainty,
)

ALLOCATION_TOLERANCE = 1.1  # main runs within 10% of one tokens-per-parameter ratio are one ladder
# The exclusion rule, fixed before any fit: a run whose loss is above this share of H sits on the
# plateau's shoulder, where the law's local slope α·(1 − L/H) is under a tenth of α and the
# transition from the context-free guess, not scale, sets the loss. Such runs are excluded from
# every form's fit and listed by name (no silent Huber discard). Written knowing that the CPU demo's
# smallest size sits at 0.92 of H: the demo is not a blind check of this threshold.
PLATEAU_RATIO = 0.9
FORMS = {  # form key -> (formula, constants)
    "pure": (ladder_law.FORMS["pure"][0], 2),
    "floor": (ladder_law.FORMS["floor"][0], 3),
    "power_law": ("L(C) = E + A·C^(−alpha)", 3),
}
OUTLIER = 0.02  # |log residual| above which a fitted point is named as down-weighted by Huber


def ladder_runs(points: pd.DataFrame) -> pd.DataFrame:
    """The main runs (no cooldown branches), if they share one tokens-per-parameter ratio; else
    ValueError: the ladder's law follows one allocation."""
    main = points[~results.is_branch(points)]
    ratio = (main["tokens"] / main["params_active"]).to_numpy(np.float64)
    if ratio.size and ratio.max() > ALLOCATION_TOLERANCE * ratio.min():
        raise ValueError(f"the main runs train on {ratio.min():.3g} to {ratio.max():.3g} tokens per "
                         "parameter, not one allocation: the ladder's law predicts the next size of a "
                         "ladder trained on one ratio")
    return main


def exclusions(main: pd.DataFrame, context_free_loss: float) -> tuple[pd.DataFrame, list[dict]]:
    """(the runs every form is fitted on, the excluded runs with their reason): ``PLATEAU_RATIO``."""
    ratio = main["eval_loss"].to_numpy(np.float64) / context_free_loss
    out = ~(ratio <= PLATEAU_RATIO)
    excluded = [{"run": str(row["run"]), "loss": float(row["eval_loss"]), "loss_over_H": float(r),
                 "reason": f"L/H = {r:.3f} > {PLATEAU_RATIO} (on the plateau's shoulder: excluded by "
                 "the rule fixed before the fit)"}
                for (_, row), r in zip(main[out].iterrows(), ratio[out], strict=True)]
    return main[~out], excluded


def form_log(form: str, context_free_loss: float, compute):
    """samples of a form's constants (S, P) -> (S, m) log L at compute (m,)."""
    if form == "power_law":
        return power_law_log(compute)
    return lambda s: np.log(ladder_law.predict(s, context_free_loss, compute, form))


def fit_form(runs: pd.DataFrame, context_free_loss: float, form: str, n_bootstrap: int, seed: int,
             delta: float):
    """(fit, bootstrap, log residuals (n,)) of one form on runs (columns flops, eval_loss, run)."""
    c, loss = runs["flops"].to_numpy(np.float64), runs["eval_loss"].to_numpy(np.float64)
    groups = runs["run"].to_numpy()
    if form == "power_law":
        fit, boot = power_law.fit_power_law_bootstrap(c, loss, groups=groups, n_bootstrap=n_bootstrap,
                                                      seed=seed, delta=delta)
    else:
        fit, boot = ladder_law.fit_ladder_law_bootstrap(
            c, loss, context_free_loss, groups=groups, n_bootstrap=n_bootstrap, seed=seed, delta=delta,
            form=form)
    keep = np.isfinite(loss) & (loss > 0)
    return fit, boot, np.log(fit.predict(c[keep])) - np.log(loss[keep])


def _form_entry(runs: pd.DataFrame, context_free_loss: float, form: str, n_bootstrap: int, seed: int,
                delta: float, targets: Sequence[dict] = ()) -> dict:
    """One form's constants, intervals (with the bootstrap's counts), forecasts at 10x and 100x
    and at each named target's C (``targets``: {run, size, N, D, C} of sizes planned, not
    trained), and the runs Huber down-weighted."""
    try:
        fit, boot, residuals = fit_form(runs, context_free_loss, form, n_bootstrap, seed, delta)
    except FIT_ERRORS as e:
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    largest = float(runs["flops"].max())
    predictions = [{"compute": largest * factor, "factor": factor, **forecast(
        fit, boot, residuals, FORMS[form][1], largest * factor, seed,
        form_log(form, context_free_loss, [largest * factor]))} for factor in EXTRAPOLATION_FACTORS]
    named = [{**t, "forecast": forecast(fit, boot, residuals, FORMS[form][1], t["C"], seed,
                                        form_log(form, context_free_loss, [t["C"]]))}
             for t in targets]
    names = runs["run"].to_numpy()[np.isfinite(runs["eval_loss"].to_numpy(np.float64))]
    return {"status": "fitted", "form": FORMS[form][0], "constants": fit.constants(),
            **uncertainty(boot), "predictions": predictions, "targets": named,
            "down_weighted": [{"run": str(n), "residual": float(r)}
                              for n, r in zip(names, residuals, strict=True) if abs(r) > OUTLIER]}


def _free_h(runs: pd.DataFrame, context_free_loss: float, n_bootstrap: int, seed: int,
            delta: float) -> dict:
    """The harmonic sum with H fitted: what the data say H is, beside the measured one."""
    try:
        fit, boot, _ = fit_form(runs, context_free_loss, "free_H", n_bootstrap, seed, delta)
    except FIT_ERRORS as e:
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    return {"status": "fitted", "form": ladder_law.FORMS["free_H"][0], "constants": fit.constants(),
            **uncertainty(boot)}


def _leave_one_out(runs: pd.DataFrame, context_free_loss: float, delta: float) -> dict:
    """Per form, each size left out in turn: the refit's 10x forecast (of the full data's largest
    compute) and its exponent; how much one size moves the law."""
    sizes, ids = size_ids(runs)
    at = float(runs["flops"].max()) * EXTRAPOLATION_FACTORS[0]
    out = {}
    for form in FORMS:
        refits = []
        for i in range(sizes.size):
            try:
                fit, _, _ = fit_form(runs[ids != i], context_free_loss, form, 0, 0, delta)
                refits.append({"left_out_N": float(sizes[i]), "alpha": float(fit.alpha),
                               "forecast_10x": float(finite_prediction(fit.predict(at), "refit"))})
            except FIT_ERRORS as e:
                refits.append({"left_out_N": float(sizes[i]), "failed": str(e)})
        values = [r["forecast_10x"] for r in refits if "forecast_10x" in r]
        out[form] = {"refits": refits, "forecast_10x_range": [min(values), max(values)] if values
                     else None}
    return out


def _seed_noise(runs: pd.DataFrame) -> dict | None:
    """Replicates (runs of one size on the same tokens: seeds): the median over replicated sizes
    of their losses' relative standard deviation; None without any."""
    key = np.round(np.log(runs[["params_active", "tokens"]].to_numpy(np.float64)), 3)
    _, ids = np.unique(key, axis=0, return_inverse=True)
    loss = runs["eval_loss"].to_numpy(np.float64)
    spreads = [float(np.std(loss[ids.ravel() == i], ddof=1) / np.mean(loss[ids.ravel() == i]))
               for i in np.unique(ids) if (ids.ravel() == i).sum() >= 2]
    if not spreads:
        return None
    return {"relative_std": float(np.median(spreads)), "sizes_replicated": len(spreads)}


def entry(points: pd.DataFrame, context_free_loss: float, n_bootstrap: int, seed: int,
          delta: float, targets: Sequence[dict] = ()) -> dict:
    try:
        main = ladder_runs(points)
    except ValueError as e:  # runs of several allocations: not a ladder, not a failed fit
        return skipped(str(e))
    ratio = float(np.median(main["tokens"] / main["params_active"]))
    what = (f"the loss of each size trained on {ratio:.3g} tokens per parameter (the main runs), "
            f"H = {context_free_loss:.4g} nats: the held-out loss of the training split's token "
            "frequencies (measured, not fitted)")
    return {**forms_entry(main, context_free_loss, n_bootstrap, seed, delta, targets), "what": what,
            "tokens_per_param": ratio}


def forms_entry(main: pd.DataFrame, context_free_loss: float, n_bootstrap: int, seed: int,
                delta: float, targets: Sequence[dict] = ()) -> dict:
    """Every form on one ladder's runs (columns run, params_active, flops, eval_loss), after the
    exclusion rule; the top-level constants and predictions are the pure form's (the ladder's law)."""
    runs, excluded = exclusions(main, context_free_loss)
    sizes, _ = size_ids(runs) if len(runs) else (np.array([]), None)
    if sizes.size < ladder_law.MIN_SIZES:
        return {**skipped(f"needs main runs of >= {ladder_law.MIN_SIZES} sizes below "
                          f"{PLATEAU_RATIO}·H, got {sizes.size} (fitted on 3, the CPU demo's law "
                          "missed its next sizes by 14-60%)"), "excluded": excluded}
    forms = {form: _form_entry(runs, context_free_loss, form, n_bootstrap, seed, delta, targets)
             for form in FORMS}
    pure = forms["pure"]
    if pure["status"] != "fitted":
        raise ValueError(pure["reason"])
    largest = runs.loc[runs["flops"].idxmax()]
    out = {
        "status": "fitted",
        "form": FORMS["pure"][0],
        "compute_axis": COMPUTE_AXIS,
        "points": int(len(runs)),
        "excluded": excluded,
        "constants": pure["constants"],
        **{k: pure[k] for k in ("intervals", "interval_note", "bootstrap")},
        "predictions": pure["predictions"],
        "forms": forms,
        "free_H": _free_h(runs, context_free_loss, n_bootstrap, seed, delta),
        "largest": {"run": str(largest["run"]), "loss_over_H": float(largest["eval_loss"]
                                                                       / context_free_loss)},
        "leave_one_out": _leave_one_out(runs, context_free_loss, delta),
        "seed_noise": _seed_noise(runs),
        "inputs": {**inputs_of(runs), "sizes": [float(s) for s in sizes]},
    }
    out["extrapolation"] = _extrapolation(runs, context_free_loss, delta)
    return out


def _extrapolation(runs: pd.DataFrame, context_free_loss: float, delta: float) -> dict:
    """Each form refitted without the largest size, predicting it (its best main run)."""
    train, held = largest_held_out(runs)
    row = held.loc[held["eval_loss"].idxmin()]
    checks = {}
    for form in FORMS:
        try:
            fit, _, _ = fit_form(train, context_free_loss, form, 0, 0, delta)
            predicted = float(finite_prediction(fit.predict(row["flops"]),
                                                f"the refit without the largest size ({form})"))
            checks[form] = {"predicted": predicted, "constants": fit.constants(),
                            "relative_error": abs(predicted - row["eval_loss"]) / row["eval_loss"],
                            "signed_error": (predicted - row["eval_loss"]) / row["eval_loss"]}
        except FIT_ERRORS as e:
            checks[form] = skipped(str(e))
    if "predicted" not in checks["pure"]:
        return skipped(checks["pure"]["reason"])
    return {"held_out": f"largest size, N = {row['params_active']:.4g}", "compute": float(row["flops"]),
            "actual": float(row["eval_loss"]), **checks["pure"], "form": "pure", "forms": checks}


def backtest(context_free_loss: float, delta: float, n_bootstrap: int, seed: int):
    """fit_law for the rollout of every form: fitted on the smaller sizes' runs, predicting each
    larger size's runs; a form whose fit fails on a round predicts nothing there."""
    def fit_law(train):
        fitted = {}
        for form in FORMS:
            try:
                fitted[form] = fit_form(train, context_free_loss, form, n_bootstrap, seed, delta)
            except FIT_ERRORS:
                continue
        if not fitted:
            raise ValueError("no form could be fitted on these sizes")

        def predict(held):
            at = held["flops"].to_numpy(np.float64)
            out = {"actual": held["eval_loss"].to_numpy(), "intervals": {}}
            for form, (fit, boot, residuals) in fitted.items():
                out[form] = fit.predict(at)
                if not np.all(np.isfinite(out[form])):  # a refit on few sizes that diverged
                    del out[form]
                    continue
                out["intervals"][form] = prediction_interval(
                    boot, form_log(form, context_free_loss, at), residuals, FORMS[form][1], seed)
            return out
        return predict
    return fit_law
