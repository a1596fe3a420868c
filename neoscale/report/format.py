"""Markdown pieces the report's law sections share: numbers with intervals, constants,
bootstrap counts, the extrapolation check's form and the rollout backtest."""

from __future__ import annotations

import numpy as np

from neoscale.scaling.study.backtest import backtest_form


def fmt(value, interval=None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.4g}"
    if interval and None not in interval:
        text += f" [{interval[0]:.4g}, {interval[1]:.4g}]"
    return text


def fmt_interval(interval) -> str:
    return "n/a" if not interval or None in interval else f"[{interval[0]:.4g}, {interval[1]:.4g}]"



def form_note(ext: dict) -> str:
    """', for the pure power law, the form to read (with E: 2.70%)' when both forms were checked."""
    forms = ext.get("forms")
    if not forms:
        return ""
    if ext["form"] not in ("with_E", "pure_power_law"):  # the ladder's forms
        others = ", ".join(f"{k}: {100 * v['relative_error']:.2f}%" for k, v in forms.items()
                           if k != ext["form"] and "relative_error" in v)
        others = f" ({others})" if others else ""
        if ext.get("read_form_unchecked"):
            return (f" for the {ext['form']} form{others}; the form to read was not checked "
                    f"({ext['read_form_unchecked']})")
        return f" for the form to read, {ext['form']}{others}"
    if ext["form"] == "with_E":
        return f" for the law with E (pure power law: {100 * forms['pure_power_law']['relative_error']:.2f}%)"
    return (f" for the pure power law, the form to read since E is not identified (with E: "
            f"{100 * forms['with_E']['relative_error']:.2f}%)")


def constants_line(law: dict) -> str:
    intervals = law.get("intervals") or {}
    return ", ".join(f"{k} = {fmt(v, intervals.get(k))}" for k, v in law["constants"].items())


def bootstrap_line(law: dict) -> str | None:
    """'Intervals: 180 of 200 resamples refitted, ...' or why there are none (None: no bootstrap)."""
    counts = law.get("bootstrap")
    if not counts:
        return None
    tally = (f"{counts['accepted']} of {counts['requested']} resamples refitted, "
             f"{counts['rejected_not_overdetermined']} rejected as not over-determined, "
             f"{counts['failed']} failed")
    if law.get("intervals") is None:
        return f"\nNo interval: {law.get('interval_note')} ({tally})."
    caveat = f" Caveat: {law['interval_caveat']}." if law.get("interval_caveat") else ""
    return f"\nIntervals: {tally}.{caveat}"



def backtest_lines(law: dict) -> list[str]:
    """'Rollout backtest ...' and one line per k, for a law with a fitted backtest."""
    backtest = law.get("backtest") or {}
    if backtest.get("status") != "fitted":
        return [f"\nRollout backtest not run: {backtest['reason']}."] if backtest else []
    form = backtest_form(law)
    names = {"law": "", "with_E": " (law with E)", "pure_power_law": " (pure power law)"}
    named = names.get(form, f" (form to read: {form})")
    lines = [f"\nRollout backtest{named}: fitted on the smallest k sizes, relative error on each larger "
             "size:"]
    for r in backtest["rounds"]:
        head = f"- k = {r['k']} (up to N = {r['train_sizes'][-1]:.3g})"
        if r["status"] != "fitted":
            lines.append(f"{head}: not fitted ({r['reason']})")
            continue
        errors = ", ".join(f"N = {p['N']:.3g}: {100 * p['relative_error'][form]:.2f}%"
                           f"{coverage_mark(p, form)}" for p in r["predictions"])
        lines.append(f"{head}: {errors}")
    drift = (backtest.get("drift") or {}).get(form)
    if drift and drift["per_doubling"] is not None:
        lines.append(drift_line(drift))
    coverage = (backtest.get("coverage") or {}).get(form)
    if coverage:
        lines.append(f"\n{coverage['inside']} of {coverage['of']} held-out points lie inside their 95% "
                     "prediction interval (✓ inside, ✗ outside): "
                     + ("the bands cover what the law could not predict here." if
                        coverage["inside"] >= 0.9 * coverage["of"] else
                        "**the bands are too narrow for this extrapolation: the law's form, not its "
                        "noise, limits it; trust predictions beyond the data less than their bands say.**"))
    return lines


def drift_line(drift: dict) -> str:
    """The backtest's signed error against distance, and whether its misses are systematic."""
    slope = 100 * drift["per_doubling"]
    at = ", ".join(f"{slope * np.log2(f):+.1f}% at {f}×" for f in (10, 100))
    line = (f"\nSigned error against distance: {slope:+.2f}% per doubling of compute beyond the "
            f"fitted sizes (least squares through the origin; {at} if it keeps growing so); the law "
            f"predicted too high at {drift['over']} and too low at {drift['under']} of "
            f"{drift['of']} held-size predictions.")
    one_sided = max(drift["over"], drift["under"]) == drift["of"] and drift["of"] >= 3
    if one_sided and abs(slope) >= 0.5:
        side = ("pessimistic: larger models beat it" if slope > 0 else
                "optimistic: larger models fall short of it")
        line += (f" **Every miss is on one side and grows with distance: the law is {side}, so "
                 "the measured curve bends away from its form and its forecasts carry that bias.**")
    return line



def coverage_mark(prediction: dict, form: str) -> str:
    """' [lo, hi] ✓' (one point: its prediction interval, ✓ if the actual is inside), ' (2/3 inside
    their bands)' (several points of the held size), or '' without an interval."""
    band = (prediction.get("prediction_interval") or {}).get(form)
    if band is None:
        return ""
    low, high = np.atleast_1d(band[0]), np.atleast_1d(band[1])
    if low.size > 1:
        return f" ({round(prediction['covered'][form] * low.size)}/{low.size} inside their bands)"
    return f" [{low[0]:.4g}, {high[0]:.4g}] {'✓' if prediction['covered'][form] == 1 else '✗'}"
