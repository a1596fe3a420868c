"""What every law's fit.json entry shares: the compute axis and conventions, skipped and
guarded fits, bootstrap intervals, prediction intervals and forecasts."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from neoscale.scaling import bootstrap

COMPUTE_LABEL = "training compute C (FLOPs of results.csv: neoscale.accounting, 'neoscale')"  # figures
COMPUTE_AXIS = ("C = training FLOPs of the results' flops column (studies run by neoscale: "
                "neoscale.accounting, convention 'neoscale')")
CONVENTIONS = {
    "N": "params_active (parameters used per token, embeddings included)",
    "D": "tokens seen",
    "C": COMPUTE_AXIS,
    "allocation": "Approach 3's N_opt(C), D_opt(C) on the same C, through the runs' FLOPs per token "
    "fitted as k·N^s; allocation_6nd gives them for C = 6·N·D",
    "intervals": "bootstrap percentile 95% intervals over resampled runs (a cooldown branch with its "
    "parent); resamples that cannot over-determine a law are rejected and counted; no interval when "
    "points <= constants + 1",
    "loss": "eval_loss of each run's final evaluation",
}
EXTRAPOLATION_FACTORS = (10.0, 100.0)


def uncertainty(boot: bootstrap.Bootstrap, pinned: bool = False) -> dict:
    """fit.json entries of a bootstrap: intervals (None without one), the note why, the counts.
    pinned: E was pinned, not fitted: it has no interval."""
    out = {"intervals": boot.intervals(), "interval_note": boot.note, "bootstrap": boot.summary()}
    if pinned and out["intervals"]:
        out["intervals"].pop("E")
    if boot.caveat and boot.has_interval:
        out["interval_caveat"] = boot.caveat
    return out


def prediction_interval(boot: bootstrap.Bootstrap, log_predict, residuals: np.ndarray,
                        n_params: int, seed: int) -> np.ndarray | None:
    """(2, m) prediction interval (bootstrap.prediction_interval) of a law at m points, or None
    without a bootstrap interval. log_predict: accepted samples (A, P) -> log losses (A, m)."""
    if not boot.has_interval:
        return None
    with np.errstate(all="ignore"):
        return bootstrap.prediction_interval(log_predict(boot.samples), residuals, n_params, seed)


def free_constants(n_params: int, pin_E: float | None) -> int:
    """A law's free constants: n_params less a pinned E."""
    return n_params - (pin_E is not None)


def power_law_log(compute: np.ndarray):
    """samples (A, 3) of (E, A, α) -> (A, m) log L at compute (m,)."""
    compute = np.asarray(compute, np.float64)
    return lambda s: np.log(s[:, :1] + s[:, 1:2] * compute[None, :] ** -s[:, 2:3])


def skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


# What a law's fit raises on a degenerate point set (a fractional power of a negative number, a
# singular system, a value outside a law's domain): that law is reported not fitted, the others kept.
FIT_ERRORS = (ValueError, TypeError, ArithmeticError, np.linalg.LinAlgError)


def guarded(fit_law, *args) -> dict:
    """fit_law(*args), or the law marked failed (status "failed", not "skipped": the law raised,
    which a refit must not mistake for too few points) with the error as its reason."""
    try:
        with np.errstate(all="ignore"):
            return fit_law(*args)
    except FIT_ERRORS as e:
        return {"status": "failed", "reason": f"the fit failed on these points ({type(e).__name__}: {e})"}



def forecast(fit, boot: bootstrap.Bootstrap, residuals: np.ndarray, n_params: int, compute: float,
             seed: int, log_at=None) -> dict:
    """One law's loss at ``compute`` with its mean-law and 95% prediction intervals (or None).
    log_at: the law's samples -> log loss at [compute] (default: L(C)'s E + A·C^-α)."""
    out = {"loss": float(fit.predict(compute)), "interval": None, "prediction_interval": None}
    if boot.has_interval:
        log_at = log_at or power_law_log([compute])
        out["interval"] = list(np.exp(boot.interval_of(log_at(boot.samples)[:, 0])))
        out["prediction_interval"] = list(
            prediction_interval(boot, log_at, residuals, n_params, seed)[:, 0])
    return out



def finite_prediction(predicted, what: str):
    """``predicted`` if every value is finite, else ValueError: a refit on too few points can end
    at A = inf, and its check is then skipped with this reason instead of reporting NaN."""
    if not np.all(np.isfinite(predicted)):
        raise ValueError(f"{what} has no finite prediction (its refit on these few points diverged)")
    return predicted


def inputs_of(runs: pd.DataFrame) -> dict:
    """What a fit was fitted to: its runs, sorted, and a sha256 (16 hex) of their points (each
    run's name, FLOPs and loss): a refit on unchanged points has the same hash."""
    rows = sorted(f"{r}|{c:.9e}|{loss:.9e}" for r, c, loss in
                  zip(runs["run"].astype(str), runs["flops"], runs["eval_loss"], strict=True))
    return {"runs": sorted(runs["run"].astype(str)),
            "hash": hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]}
