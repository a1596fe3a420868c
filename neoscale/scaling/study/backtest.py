"""The rollout backtest: fit a law on the smallest k sizes, predict every larger one."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from neoscale.scaling.points import size_ids
from neoscale.scaling.study.entries import FIT_ERRORS, finite_prediction, skipped


def rollout(points: pd.DataFrame, min_sizes: int, fit_law) -> dict:
    """Rollout backtest: for each k the data allow, fit on the smallest k sizes and predict every
    larger one, with 95% prediction intervals; coverage counts the held points inside them.

    Args:
      min_sizes: the fewest sizes the law is fitted on.
      fit_law: train rows -> predict, where predict(held rows of one size) gives {"actual": the
        held points' losses it predicts (all of them, or the best), form: predicted losses,
        "intervals": {form: (2, m) prediction interval, or None}}.
    """
    sizes, ids = size_ids(points)
    rounds = []
    inside: dict[str, list[bool]] = {}
    for k in range(min_sizes, sizes.size):
        entry = {"k": k, "train_sizes": sizes[:k], "status": "fitted", "predictions": []}
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                predict = fit_law(points[ids < k])
                for j in range(k, sizes.size):
                    predicted = predict(points[ids == j])
                    for form, values in predicted.items():
                        if form not in ("actual", "intervals"):
                            finite_prediction(values, f"the fit on {k} sizes ({form})")
                    actual = np.asarray(predicted.pop("actual"), np.float64)
                    intervals = predicted.pop("intervals")
                    errors = {form: float(np.mean(np.abs(np.asarray(v) - actual) / actual))
                              for form, v in predicted.items()}
                    signed = {form: float(np.mean((np.asarray(v) - actual) / actual))
                              for form, v in predicted.items()}
                    compute_factor = (points.loc[ids == j, "flops"].max()
                                      / points.loc[ids < k, "flops"].max())
                    row = {"N": sizes[j], "factor": sizes[j] / sizes[k - 1],
                           "compute_factor": float(compute_factor), "actual": actual,
                           "predicted": predicted, "relative_error": errors, "signed_error": signed,
                           "prediction_interval": {}, "covered": {}}
                    for form, band in intervals.items():
                        if band is None:
                            continue
                        hit = (band[0] <= actual) & (actual <= band[1])
                        row["prediction_interval"][form] = band
                        row["covered"][form] = float(hit.mean())
                        inside.setdefault(form, []).extend(hit.tolist())
                    entry["predictions"].append(row)
        except FIT_ERRORS as e:
            entry = {"k": k, "train_sizes": sizes[:k], **skipped(str(e))}
        rounds.append(entry)
    if not rounds:
        return skipped(f"needs more than {min_sizes} sizes (the fewest the law is fitted on), got "
                       f"{sizes.size}")
    coverage = {form: {"inside": int(sum(hits)), "of": len(hits)} for form, hits in inside.items()}
    return {"status": "fitted", "min_sizes": min_sizes, "rounds": rounds, "coverage": coverage,
            "drift": _drift(rounds),
            "what": "fit on the smallest k sizes, predict every larger one; relative error = mean "
            "|predicted - actual| / actual over the held size's points; coverage = held points "
            "inside the 95% prediction interval (bootstrap refits of the k sizes plus their "
            "residual scatter); drift = the signed error against the distance in compute"}


def _drift(rounds: list[dict]) -> dict:
    """How the backtest's signed error grows with distance, per form: the least-squares slope
    through the origin of (predicted - actual) / actual against log2(held size's compute / the
    largest fitted compute), in relative error per doubling, and how many misses fall on each side.

    A law whose misses all fall on one side and grow with distance is limited by its form (the
    measured curve bends away from it), not by noise: its forecasts are biased by about this slope
    times the doublings beyond the data.
    """
    pairs: dict[str, list[tuple[float, float]]] = {}
    for r in rounds:
        for p in r.get("predictions", []):
            for form, error in p["signed_error"].items():
                pairs.setdefault(form, []).append((np.log2(p["compute_factor"]), error))
    out = {}
    for form, values in pairs.items():
        x, e = np.array(values).T
        far = x > 0.1  # held points at the fitted compute say nothing about distance
        slope = float(np.sum(x[far] * e[far]) / np.sum(x[far] ** 2)) if far.sum() >= 2 else None
        out[form] = {"per_doubling": slope, "over": int(np.sum(e > 0)), "under": int(np.sum(e < 0)),
                     "of": int(e.size)}
    return out



def backtest_form(law: dict) -> str:
    """The prediction form a law's backtest is read in: L(C)'s or the ladder's form to read, else
    the law."""
    if "pure_power_law" in law:
        return (law.get("extrapolation") or {}).get("form", "with_E")
    if isinstance(law.get("forms"), dict) and "pure" in law["forms"]:  # the ladder's forms
        return law.get("form_to_read") or "pure"
    return "law"
