"""Which law and form the report tells its reader to use (fit.json's ``law_to_read``), by a rule
fixed here before any check ran, and whether a study is in the ladder's law's regime.

The rule (``choose``), over the ladder entry's forms (``ladder.FORMS``):
1. Eligible: the power law with E always; the M4 form (floor) when the largest size is off the
   plateau (regime condition (a): at large compute it is E + A·C^−α whatever H); the pure ladder
   law only in the regime ((a) and (b)): it has no floor, and its forecasts fall without bound.
2. Evidence: each form's mean |relative error| over every prediction of the rollout backtest on
   the study's own sizes (fit on the smallest k, predict each larger size); a form that could not
   predict every held size of the backtest is not eligible.
3. The best form and every form within the noise of it (the seed spread the study measured, else
   ``DEFAULT_NOISE``) are tied; of the tied, the one with the fewest constants, then the smallest
   error, is read.
4. Without a backtest (fewer than MIN_SIZES + 1 sizes after the exclusions) there is no evidence:
   the most general eligible form is read (floor in the regime, else the power law with E), and
   the report says its forecasts are unverified.

The regime (``regime``): the ladder's law describes a ladder that has left the context-free plateau
H and bends towards a power law. A study is in it when (a) its largest size's loss is at most
``REGIME_LOSS_RATIO``·H, and (b) the free-H fit agrees with the measured H: H inside the free-H
fit's 95% interval (its ends widened by ``INTERVAL_SLACK``), or, without an interval, within
``H_AGREEMENT`` of its estimate. Otherwise the report prints no forecast of the pure ladder law
("regime not reached"), and no M4 forecast either when (a) fails.
"""

from __future__ import annotations

import numpy as np

from neoscale.scaling.study.ladder import FORMS

DEFAULT_NOISE = 0.005  # no replicate seeds: within the 0.3-2% one seed or a 2x rate moved a small model
REGIME_LOSS_RATIO = 0.8  # the largest size at least 20% below H: the law's local slope >= α/5
H_AGREEMENT = 0.1  # free-H estimate within 10% of the measured H when it has no interval
INTERVAL_SLACK = 1e-3  # an interval of noise-free points is one value: compare to 0.1%


def regime(law: dict, context_free_loss: float) -> dict:
    """{"reached": bool, "why": text, ...}: conditions (a) and (b) of the module docstring."""
    ratio = law["largest"]["loss_over_H"]
    low_enough = ratio <= REGIME_LOSS_RATIO
    free = law.get("free_H") or {}
    if free.get("status") != "fitted":
        agrees, h_text = False, f"the free-H fit failed ({free.get('reason')})"
    else:
        h_free = free["constants"]["H"]
        interval = (free.get("intervals") or {}).get("H")
        if interval:
            agrees = (interval[0] * (1 - INTERVAL_SLACK) <= context_free_loss
                      <= interval[1] * (1 + INTERVAL_SLACK))
            h_text = (f"free-H fit H = {h_free:.4g} [{interval[0]:.4g}, {interval[1]:.4g}] "
                      f"{'holds' if agrees else 'does not hold'} the measured H = {context_free_loss:.4g}")
        else:
            agrees = abs(h_free / context_free_loss - 1) <= H_AGREEMENT
            h_text = (f"free-H fit H = {h_free:.4g} (no interval: {free.get('interval_note')}) is "
                      f"{'within' if agrees else 'not within'} {H_AGREEMENT:.0%} of the measured "
                      f"H = {context_free_loss:.4g}")
    size_text = (f"the largest size ({law['largest']['run']}) at L/H = {ratio:.3f} "
                 f"{'<=' if low_enough else '>'} {REGIME_LOSS_RATIO}")
    return {"reached": bool(low_enough and agrees), "off_plateau": bool(low_enough),
            "largest_loss_over_H": ratio,
            "free_H_agrees": bool(agrees), "why": f"{size_text}; {h_text}"}


def backtest_errors(backtest: dict | None) -> dict[str, dict]:
    """form -> {"mean_abs": mean |relative error|, "mean_signed", "n": predictions} over every
    prediction of a rollout backtest."""
    errors: dict[str, list[float]] = {}
    signed: dict[str, list[float]] = {}
    for r in (backtest or {}).get("rounds", []):
        for p in r.get("predictions", []):
            for form, value in p["relative_error"].items():
                errors.setdefault(form, []).append(value)
                signed.setdefault(form, []).append(p["signed_error"][form])
    return {form: {"mean_abs": float(np.mean(v)), "mean_signed": float(np.mean(signed[form])),
                   "n": len(v)} for form, v in errors.items()}


def choose(law: dict, regime_check: dict) -> dict:
    """The form to read of a fitted ladder entry (the rule of the module docstring)."""
    noise = (law.get("seed_noise") or {}).get("relative_std")
    tolerance = noise if noise is not None else DEFAULT_NOISE
    noise_text = (f"the measured seed spread {100 * tolerance:.2f}%" if noise is not None else
                  f"{100 * tolerance:.1f}% (no replicate seeds measured: an assumed noise)")
    fitted = [f for f in FORMS if law["forms"][f]["status"] == "fitted"]
    eligible = [f for f in fitted if f == "power_law" or (f == "floor" and regime_check["off_plateau"])
                or regime_check["reached"]]
    errors = backtest_errors(law.get("backtest"))
    most = max((e["n"] for e in errors.values()), default=0)
    complete = [f for f in eligible if f in errors and errors[f]["n"] == most and most > 0]
    regime_text = ("" if regime_check["reached"] else "the pure ladder law's regime is not reached, "
                   "so it is not eligible; " if regime_check["off_plateau"] else
                   "the largest size is not off the plateau, so neither ladder form is eligible; ")
    if not complete:
        general = [f for f in ("floor", "power_law") if f in eligible]
        if not general:
            return {"key": "ladder_law", "form": None, "backtest_errors": errors,
                    "why": regime_text + "no eligible form was fitted"}
        return {"key": "ladder_law", "form": general[0], "backtest_errors": errors,
                "tolerance": tolerance, "verified": False,
                "why": (f"{regime_text}no rollout backtest on these sizes (it needs more than "
                        "the fewest sizes a form is fitted on): the most general eligible form")}
    best = min(errors[f]["mean_abs"] for f in complete)
    tied = [f for f in complete if errors[f]["mean_abs"] <= best + tolerance]
    form = min(tied, key=lambda f: (FORMS[f][1], errors[f]["mean_abs"]))
    listed = ", ".join(f"{f} {100 * errors[f]['mean_abs']:.2f}%" for f in complete)
    return {"key": "ladder_law", "form": form, "backtest_errors": errors, "tolerance": tolerance,
            "verified": True,
            "why": (f"{regime_text}smallest mean |error| of the rollout backtest ({errors[form]['n']} "
                    f"predictions each: {listed}), ties within {noise_text} going to the form with "
                    f"fewer constants")}


def law_to_read(laws: dict, context_free_loss: float | None) -> dict:
    """fit.json's top-level ``law_to_read``: the ladder entry's chosen form when the ladder's law
    was fitted (its ``regime`` recorded on the entry), else L(C)'s form to read."""
    from neoscale.scaling.study.loss_vs_compute import form_to_read

    ladder = laws.get("ladder_law") or {}
    if ladder.get("status") == "fitted":
        ladder["regime"] = regime(ladder, context_free_loss)
        chosen = choose(ladder, ladder["regime"])
        if chosen["form"] is not None:
            ladder["form_to_read"], ladder["law_to_read"] = chosen["form"], chosen
            ext = ladder.get("extrapolation") or {}
            check = (ext.get("forms") or {}).get(chosen["form"], {})
            if "predicted" in check:
                ext.update(check, form=chosen["form"])
            elif ext.get("forms"):
                ext["read_form_unchecked"] = f"{chosen['form']}: {check.get('reason', 'not fitted')}"
            return chosen
    lvc = laws.get("loss_vs_compute") or {}
    if lvc.get("status") == "fitted" and "irreducible_loss" in lvc:
        form = form_to_read(lvc)
        return {"key": "loss_vs_compute", "form": form, "verified": False,
                "why": ("the ladder's law is not fitted here (" + (ladder.get("reason") or "no forms")
                        + "): L(C) on the frontier, with E if E is identified, else pure")}
    return {"key": None, "form": None, "why": "no law of loss against compute was fitted"}
