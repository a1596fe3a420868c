"""fit.json's chinchilla_approach3: L(N, D) = E + A/N^α + B/D^β on the final points, its
compute-optimal allocation on the study's compute axis (and on 6·N·D), extrapolation check and
rollout backtest."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from neoscale.scaling import bootstrap, chinchilla
from neoscale.scaling.points import largest_held_out
from neoscale.scaling.study.entries import (
    COMPUTE_AXIS,
    finite_prediction,
    free_constants,
    prediction_interval,
    skipped,
    uncertainty,
)


def _chinchilla_log(n: np.ndarray, d: np.ndarray):
    """samples (A, 5) of (E, A, B, α, β) -> (A, m) log L at (n, d) (m,)."""
    return lambda s: np.log(s[:, :1] + s[:, 1:2] / n[None, :] ** s[:, 3:4]
                            + s[:, 2:3] / d[None, :] ** s[:, 4:5])


def backtest(delta: float, n_bootstrap: int, seed: int, pin_E: float | None):
    """fit_law for Approach 3's rollout: every point of the held size (L-BFGS from the coarse
    start grid: one refit per k, and its bootstrap)."""
    def fit_law(train):
        n, d, loss = (train[c].to_numpy(np.float64) for c in ("params_active", "tokens", "eval_loss"))
        refit, boot = chinchilla.fit_chinchilla_bootstrap(
            n, d, loss, groups=train["parent"].to_numpy(), n_bootstrap=n_bootstrap, seed=seed,
            starts=chinchilla.coarse_start_grid(), delta=delta, fixed_E=pin_E)
        residuals = np.log(refit.predict(n, d)) - np.log(loss)

        def predict(held):
            hn, hd = (held[c].to_numpy(np.float64) for c in ("params_active", "tokens"))
            return {"actual": held["eval_loss"].to_numpy(), "law": refit.predict(hn, hd),
                    "intervals": {"law": prediction_interval(boot, _chinchilla_log(hn, hd), residuals,
                                                             free_constants(5, pin_E), seed)}}
        return predict
    return fit_law


def _allocation(
    fit: chinchilla.ChinchillaFit, boot: bootstrap.Bootstrap, axis: chinchilla.ComputeAxis
) -> dict:
    """N_opt ∝ C^a, D_opt ∝ C^b on the compute axis C = k·N^s·D, with intervals when there are."""
    a, b = fit.allocation_exponents(axis)
    out = {
        "compute_axis": axis.label,
        "flops_per_token": {"form": "C/D = k·N^s", "k": axis.k, "s": axis.s,
                            "max_relative_error": axis.max_relative_error},
        "a": a,
        "b": b,
        "n_opt_at_1": float(fit.optimal_allocation(1.0, axis)[0]),
        "form": "N_opt = n_opt_at_1·C^a, D_opt = C/(k·N_opt^s)",
        "intervals": None,
    }
    if boot.has_interval:
        alpha, beta = boot.samples[:, 3], boot.samples[:, 4]
        a_samples = beta / (alpha + axis.s * beta)
        out["intervals"] = {"a": list(boot.interval_of(a_samples)),
                            "b": list(boot.interval_of(alpha / (alpha + axis.s * beta)))}
    return out


def entry(points: pd.DataFrame, n_bootstrap: int, seed: int, delta: float,
          pin_E: float | None = None) -> dict:
    n, d, loss, flops = (points[c].to_numpy() for c in ("params_active", "tokens", "eval_loss", "flops"))
    fit, boot = chinchilla.fit_chinchilla_bootstrap(
        n, d, loss, groups=points["parent"].to_numpy(), n_bootstrap=n_bootstrap, seed=seed, delta=delta,
        fixed_E=pin_E,
    )
    if (why := fit.domain_error()) is not None:
        return {**skipped(why), "fitted_constants": fit.constants()}
    axis = chinchilla.fit_compute_axis(n, d, flops, COMPUTE_AXIS)
    out = {
        "status": "fitted",
        "form": "L(N, D) = E + A/N^alpha + B/D^beta",
        "points": fit.n_points,
        "constants": fit.constants(),
        **uncertainty(boot, pinned=pin_E is not None),
        "E_pinned": pin_E is not None,
        "allocation": _allocation(fit, boot, axis),
        "allocation_6nd": _allocation(fit, boot, chinchilla.SIX_ND),
    }
    train, held = largest_held_out(points)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refit = chinchilla.fit_chinchilla(
                *(train[c].to_numpy() for c in ("params_active", "tokens", "eval_loss")), delta=delta,
                fixed_E=pin_E,
            )
        predicted = finite_prediction(
            refit.predict(held["params_active"].to_numpy(), held["tokens"].to_numpy()),
            "the refit without the largest size")
        actual = held["eval_loss"].to_numpy()
        error = np.abs(predicted - actual) / actual
        out["extrapolation"] = {
            "held_out": f"largest size, N = {held['params_active'].iloc[0]:.4g} ({len(held)} point(s))",
            "actual": actual,
            "predicted": predicted,
            "relative_error": float(error.mean()),
            "max_relative_error": float(error.max()),
            "constants": refit.constants(),
        }
    except ValueError as e:
        out["extrapolation"] = skipped(str(e))
    return out
