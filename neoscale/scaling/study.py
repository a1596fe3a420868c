"""fit_study: every scaling law a study's results support, with intervals and an honest
extrapolation check, as a JSON-serialisable dict (the runner writes it as fit.json); and
report_section, its markdown summary.

Data points are the final evaluation rows of finished runs (each run's and each cooldown
branch's last evaluation; never stable-phase losses). Laws:
- loss_vs_compute: L(C) = E + A·C^−α (and the pure power law) on the compute–loss Pareto
  frontier of the dense runs (or of the only expert count present);
- ladder_law: the ladder's law L(C) = 1 / (1/H + C^α/A) on the main runs of one tokens-per-
  parameter allocation, H the held-out set's context-free loss (ladder_law.py): what the next size
  of the ladder will reach;
- chinchilla_approach3: L(N, D) on the same runs' final points;
- isoflop_approach2: main runs grouped by budget_flops (cooldown branches belong to no budget);
- envelope_approach1: the per-step curves (a branch's only after its fork);
- moe: Clark et al.'s law and the Chinchilla form with an expert covariate, when the table has
  >= 2 expert counts;
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
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from neoscale.files import jsonable
from neoscale.scaling import (
    bootstrap,
    chinchilla,
    curve_law,
    envelope,
    isoflop,
    ladder_law,
    moe,
    optimize,
    power_law,
    results,
)

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


def _uncertainty(boot: bootstrap.Bootstrap, pinned: bool = False) -> dict:
    """fit.json entries of a bootstrap: intervals (None without one), the note why, the counts.
    pinned: E was pinned, not fitted: it has no interval."""
    out = {"intervals": boot.intervals(), "interval_note": boot.note, "bootstrap": boot.summary()}
    if pinned and out["intervals"]:
        out["intervals"].pop("E")
    if boot.caveat and boot.has_interval:
        out["interval_caveat"] = boot.caveat
    return out


def _prediction_interval(boot: bootstrap.Bootstrap, log_predict, residuals: np.ndarray,
                         n_params: int, seed: int) -> np.ndarray | None:
    """(2, m) prediction interval (bootstrap.prediction_interval) of a law at m points, or None
    without a bootstrap interval. log_predict: accepted samples (A, P) -> log losses (A, m)."""
    if not boot.has_interval:
        return None
    with np.errstate(all="ignore"):
        return bootstrap.prediction_interval(log_predict(boot.samples), residuals, n_params, seed)


def _free(n_params: int, pin_E: float | None) -> int:
    """A law's free constants: n_params less a pinned E."""
    return n_params - (pin_E is not None)


def _power_law_log(compute: np.ndarray):
    """samples (A, 3) of (E, A, α) -> (A, m) log L at compute (m,)."""
    compute = np.asarray(compute, np.float64)
    return lambda s: np.log(s[:, :1] + s[:, 1:2] * compute[None, :] ** -s[:, 2:3])


def _skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


# What a law's fit raises on a degenerate point set (a fractional power of a negative number, a
# singular system, a value outside a law's domain): that law is reported not fitted, the others kept.
FIT_ERRORS = (ValueError, TypeError, ArithmeticError, np.linalg.LinAlgError)


def _guarded(fit_law, *args) -> dict:
    """fit_law(*args), or the law marked failed (status "failed", not "skipped": the law raised,
    which a refit must not mistake for too few points) with the error as its reason."""
    try:
        with np.errstate(all="ignore"):
            return fit_law(*args)
    except FIT_ERRORS as e:
        return {"status": "failed", "reason": f"the fit failed on these points ({type(e).__name__}: {e})"}


def pareto_frontier(compute: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """(n,) bool: points with no other point at lower-or-equal compute and lower loss (of points
    tied in compute, only the lowest loss)."""
    order = np.lexsort((loss, compute))
    keep = np.zeros(compute.size, bool)
    best = np.inf
    for i in order:
        if loss[i] < best:
            keep[i], best = True, loss[i]
    return keep


def law_family(points: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Dense runs if any, else the expert count with most runs."""
    experts = points["num_experts"]
    chosen = 1 if (experts == 1).any() else experts.value_counts().idxmax()
    label = "dense" if chosen == 1 else f"{int(chosen)} experts"
    return points[experts == chosen].reset_index(drop=True), label


def _size_key(points: pd.DataFrame) -> np.ndarray:
    return points["params_active"].to_numpy()


def _largest_held_out(points: pd.DataFrame):
    """(train, held) split: held-out rows are those of the largest parameter count."""
    n = _size_key(points)
    held = np.isclose(n, n.max(), rtol=1e-3)
    return points[~held], points[held]


def _forecast(fit, boot: bootstrap.Bootstrap, residuals: np.ndarray, n_params: int, compute: float,
              seed: int, log_at=None) -> dict:
    """One law's loss at ``compute`` with its mean-law and 95% prediction intervals (or None).
    log_at: the law's samples -> log loss at [compute] (default: L(C)'s E + A·C^-α)."""
    out = {"loss": float(fit.predict(compute)), "interval": None, "prediction_interval": None}
    if boot.has_interval:
        log_at = log_at or _power_law_log([compute])
        out["interval"] = list(np.exp(boot.interval_of(log_at(boot.samples)[:, 0])))
        out["prediction_interval"] = list(
            _prediction_interval(boot, log_at, residuals, n_params, seed)[:, 0])
    return out


def _loss_vs_compute(points: pd.DataFrame, label: str, n_bootstrap: int, seed: int, delta: float,
                     pin_E: float | None = None) -> dict:
    compute, loss = points["flops"].to_numpy(), points["eval_loss"].to_numpy()
    frontier = pareto_frontier(compute, loss)
    use = frontier if frontier.sum() >= 3 else np.ones_like(frontier)
    groups = points["parent"].to_numpy()[use]
    fit, boot = power_law.fit_power_law_bootstrap(
        compute[use], loss[use], groups=groups, n_bootstrap=n_bootstrap, seed=seed, delta=delta,
        fixed_E=pin_E,
    )
    if not fit.alpha > 0:
        return {**_skipped(f"the fitted exponent alpha = {fit.alpha:.3g} is not positive: loss does "
                           "not fall with compute on these points"), "fitted_constants": fit.constants()}
    pure, pure_boot = power_law.fit_power_law_bootstrap(
        compute[use], loss[use], with_offset=False, groups=groups, n_bootstrap=n_bootstrap, seed=seed,
        delta=delta,
    )
    grid = np.geomspace(compute.min(), compute.max() * max(EXTRAPOLATION_FACTORS), 60)
    band = {"compute": grid, "loss": fit.predict(grid)}
    residuals = np.log(fit.predict(compute[use])) - np.log(loss[use])
    if boot.has_interval:
        band["lower"], band["upper"] = np.exp(boot.interval_of(_power_law_log(grid)(boot.samples)))
        band["prediction_lower"], band["prediction_upper"] = _prediction_interval(
            boot, _power_law_log(grid), residuals, _free(3, pin_E), seed)
    pure_residuals = np.log(pure.predict(compute[use])) - np.log(loss[use])
    predictions = []
    for factor in EXTRAPOLATION_FACTORS:
        c = compute.max() * factor
        entry = _forecast(fit, boot, residuals, _free(3, pin_E), c, seed)
        # The report reads the pure law when E is not identified: its forecast, with its own bands.
        entry["pure_power_law"] = _forecast(pure, pure_boot, pure_residuals, 2, c, seed)
        predictions.append({"compute": c, "factor": factor, **entry})
    pure_uncertainty = _uncertainty(pure_boot)
    if pure_uncertainty["intervals"]:
        pure_uncertainty["intervals"].pop("E")
    out = {
        "status": "fitted",
        "form": "L(C) = E + A·C^(−alpha)",
        "compute_axis": COMPUTE_AXIS,
        "family": label,
        "points": int(use.sum()),
        "on_frontier": bool(frontier.sum() >= 3),
        "constants": fit.constants(),
        **_uncertainty(boot, pinned=pin_E is not None),
        "E_pinned": pin_E is not None,
        "pure_power_law": {
            "form": "L(C) = A·C^(−alpha)",
            "constants": {"A": pure.A, "alpha": pure.alpha},
            **pure_uncertainty,
        },
        "frontier": band,
        "predictions": predictions,
    }
    train, held = _largest_held_out(points)
    try:
        t_c, t_l = train["flops"].to_numpy(), train["eval_loss"].to_numpy()
        t_front = pareto_frontier(t_c, t_l)
        t_use = t_front if t_front.sum() >= 3 else np.ones_like(t_front)
        best = held.loc[held["eval_loss"].idxmin()]
        checks = {}
        for form, with_offset in (("with_E", True), ("pure_power_law", False)):
            refit = power_law.fit_power_law(t_c[t_use], t_l[t_use], with_offset=with_offset, delta=delta,
                                            fixed_E=pin_E)
            predicted = float(_finite_prediction(refit.predict(best["flops"]),
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
        out["extrapolation"] = _skipped(str(e))
    return out


def _finite_prediction(predicted, what: str):
    """``predicted`` if every value is finite, else ValueError: a refit on too few points can end
    at A = inf, and its check is then skipped with this reason instead of reporting NaN."""
    if not np.all(np.isfinite(predicted)):
        raise ValueError(f"{what} has no finite prediction (its refit on these few points diverged)")
    return predicted


def _size_ids(points: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(distinct sizes ascending (S,), size index of each point (n,)); sizes within 1e-3 are one."""
    n = _size_key(points)
    keys, ids = np.unique(np.round(np.log(n), 3), return_inverse=True)
    return np.array([n[ids == i].min() for i in range(keys.size)]), ids.ravel()


def _rollout(points: pd.DataFrame, min_sizes: int, fit_law) -> dict:
    """Rollout backtest: for each k the data allow, fit on the smallest k sizes and predict every
    larger one, with 95% prediction intervals; coverage counts the held points inside them.

    Args:
      min_sizes: the fewest sizes the law is fitted on.
      fit_law: train rows -> predict, where predict(held rows of one size) gives {"actual": the
        held points' losses it predicts (all of them, or the best), form: predicted losses,
        "intervals": {form: (2, m) prediction interval, or None}}.
    """
    sizes, ids = _size_ids(points)
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
                            _finite_prediction(values, f"the fit on {k} sizes ({form})")
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
            entry = {"k": k, "train_sizes": sizes[:k], **_skipped(str(e))}
        rounds.append(entry)
    if not rounds:
        return _skipped(f"needs more than {min_sizes} sizes (the fewest the law is fitted on), got "
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


def _loss_vs_compute_backtest(delta: float, n_bootstrap: int, seed: int, pin_E: float | None):
    """fit_law for L(C)'s rollout: both forms, predicted at each held size's best point."""
    def fit_law(train):
        c, loss = train["flops"].to_numpy(), train["eval_loss"].to_numpy()
        front = pareto_frontier(c, loss)
        use = front if front.sum() >= 3 else np.ones_like(front)
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
                n_params = _free(3, pin_E) if form == "with_E" else 2
                out["intervals"][form] = _prediction_interval(boot, _power_law_log(at), residuals,
                                                              n_params, seed)
            return out
        return predict
    return fit_law


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


def _ladder(points: pd.DataFrame, context_free_loss: float, n_bootstrap: int, seed: int,
            delta: float) -> dict:
    try:
        main = _ladder_runs(points)
    except ValueError as e:  # runs of several allocations: not a ladder, not a failed fit
        return _skipped(str(e))
    sizes, _ = _size_ids(main)
    if sizes.size < ladder_law.MIN_SIZES:
        return _skipped(f"needs main runs of >= {ladder_law.MIN_SIZES} sizes, got {sizes.size} (fitted "
                        "on 3, the CPU demo's law missed its next sizes by 14-60%)")
    fit, boot, residuals = _ladder_fit(main, context_free_loss, n_bootstrap, seed, delta)
    predictions = []
    for factor in EXTRAPOLATION_FACTORS:
        c = float(main["flops"].max() * factor)
        predictions.append({"compute": c, "factor": factor, **_forecast(
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
        **_uncertainty(boot),
        "predictions": predictions,
    }
    train, held = _largest_held_out(main)
    try:
        refit = ladder_law.fit_ladder_law(train["flops"], train["eval_loss"], context_free_loss,
                                          delta=delta)
        row = held.iloc[0]
        predicted = float(_finite_prediction(refit.predict(row["flops"]),
                                             "the refit without the largest size"))
        out["extrapolation"] = {
            "held_out": f"largest size, N = {row['params_active']:.4g}",
            "compute": float(row["flops"]), "actual": float(row["eval_loss"]), "predicted": predicted,
            "relative_error": abs(predicted - row["eval_loss"]) / row["eval_loss"],
            "constants": refit.constants(),
        }
    except ValueError as e:
        out["extrapolation"] = _skipped(str(e))
    return out


def _ladder_backtest(context_free_loss: float, delta: float, n_bootstrap: int, seed: int):
    """fit_law for the ladder law's rollout: fitted on the smaller sizes' main runs, predicting
    each larger size's main run."""
    def fit_law(train):
        main = _ladder_runs(train)
        fit, boot, residuals = _ladder_fit(main, context_free_loss, n_bootstrap, seed, delta)

        def predict(held):
            row = _ladder_runs(held)
            at = row["flops"].to_numpy(np.float64)
            return {"actual": row["eval_loss"].to_numpy(), "law": fit.predict(at),
                    "intervals": {"law": _prediction_interval(
                        boot, _ladder_log(context_free_loss, at), residuals, 2, seed)}}
        return predict
    return fit_law


def _chinchilla_log(n: np.ndarray, d: np.ndarray):
    """samples (A, 5) of (E, A, B, α, β) -> (A, m) log L at (n, d) (m,)."""
    return lambda s: np.log(s[:, :1] + s[:, 1:2] / n[None, :] ** s[:, 3:4]
                            + s[:, 2:3] / d[None, :] ** s[:, 4:5])


def _chinchilla_backtest(delta: float, n_bootstrap: int, seed: int, pin_E: float | None):
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
                    "intervals": {"law": _prediction_interval(boot, _chinchilla_log(hn, hd), residuals,
                                                              _free(5, pin_E), seed)}}
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


def _chinchilla(points: pd.DataFrame, n_bootstrap: int, seed: int, delta: float,
                pin_E: float | None = None) -> dict:
    n, d, loss, flops = (points[c].to_numpy() for c in ("params_active", "tokens", "eval_loss", "flops"))
    fit, boot = chinchilla.fit_chinchilla_bootstrap(
        n, d, loss, groups=points["parent"].to_numpy(), n_bootstrap=n_bootstrap, seed=seed, delta=delta,
        fixed_E=pin_E,
    )
    if (why := fit.domain_error()) is not None:
        return {**_skipped(why), "fitted_constants": fit.constants()}
    axis = chinchilla.fit_compute_axis(n, d, flops, COMPUTE_AXIS)
    out = {
        "status": "fitted",
        "form": "L(N, D) = E + A/N^alpha + B/D^beta",
        "points": fit.n_points,
        "constants": fit.constants(),
        **_uncertainty(boot, pinned=pin_E is not None),
        "E_pinned": pin_E is not None,
        "allocation": _allocation(fit, boot, axis),
        "allocation_6nd": _allocation(fit, boot, chinchilla.SIX_ND),
    }
    train, held = _largest_held_out(points)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refit = chinchilla.fit_chinchilla(
                *(train[c].to_numpy() for c in ("params_active", "tokens", "eval_loss")), delta=delta,
                fixed_E=pin_E,
            )
        predicted = _finite_prediction(
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
        out["extrapolation"] = _skipped(str(e))
    return out


def _isoflop(points: pd.DataFrame, n_bootstrap: int, seed: int) -> dict:
    # A cooldown branch ends at a fraction of its run's budget: it is on no IsoFLOP slice, whatever
    # budget_flops an older results table gave it.
    main = points[~results.is_branch(points)]
    with_budget = main[main["budget_flops"].notna() & (main["budget_flops"] > 0)]
    if with_budget.empty:
        return _skipped("no main runs carry an IsoFLOP budget (budget_flops)")
    try:
        fit, boot = isoflop.fit_isoflop_bootstrap(
            *(with_budget[c].to_numpy() for c in ("budget_flops", "params_active", "tokens", "eval_loss")),
            groups=with_budget["run"].to_numpy(),
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
    except ValueError as e:
        return _skipped(str(e))
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
        **_uncertainty(boot),
        "skipped_budgets": fit.skipped,
        "budget_snapping": {
            "labels": fit.labels,
            "budgets": int(fit.budgets.size + len(fit.skipped)),
            "rtol": isoflop.BUDGET_RTOL,
            "note": f"budget labels within {isoflop.BUDGET_RTOL:.0%} of a group's smallest are one "
            "budget, labelled by their geometric mean",
        },
    }


def _envelope(points: pd.DataFrame, curves, n_bootstrap: int, seed: int) -> dict:
    if not curves:
        return _skipped("no training curves (runs/*/metrics.jsonl)")
    params = dict(zip(points["run"], points["params_active"], strict=True))
    parents = dict(zip(points["run"], points["parent"], strict=True))
    family = _after_fork({k: v for k, v in curves.items() if k in params}, points)
    try:
        fit, boot = envelope.fit_envelope_bootstrap(
            family, params, groups=parents, n_bootstrap=n_bootstrap, seed=seed
        )
    except ValueError as e:
        return _skipped(str(e))
    return {
        "status": "fitted",
        "form": "N_opt = k_n·C^a, D_opt = k_d·C^b from the lower envelope of training curves",
        "compute_axis": COMPUTE_AXIS + ", the curves' flops",
        "compute": fit.compute,
        "loss": fit.loss,
        "n_opt": fit.n_opt,
        "d_opt": fit.d_opt,
        "constants": {"a": fit.a, "b": fit.b, "log_k_n": fit.log_k_n, "log_k_d": fit.log_k_d},
        **_uncertainty(boot),
    }


def _after_fork(curves: dict[str, pd.DataFrame], points: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Curves with every cooldown branch's rows at or before its fork_step removed (there the
    branch is its parent run, which has its own curve)."""
    forks = points.loc[points["fork_step"].notna(), ["run", "fork_step"]]
    out = dict(curves)
    for run, fork in zip(forks["run"], forks["fork_step"], strict=True):
        if run in out and "step" in out[run].columns:
            out[run] = out[run][out[run]["step"] > fork]
    return out


def _moe(points: pd.DataFrame, n_bootstrap: int, seed: int, delta: float) -> dict:
    counts = np.unique(points["num_experts"])
    if counts.size < 2:
        return _skipped(f"needs >= 2 distinct expert counts, got {counts.tolist()}")
    out = {"status": "fitted", "expert_counts": counts, "frontiers": {}}
    for e in counts:
        sub = points[points["num_experts"] == e]
        c, loss_e = sub["flops"].to_numpy(), sub["eval_loss"].to_numpy()
        front = pareto_frontier(c, loss_e)
        use = front if front.sum() >= 3 else np.ones_like(front)
        try:
            fit = power_law.fit_power_law(c[use], loss_e[use], delta=delta)
            out["frontiers"][str(int(e))] = {"status": "fitted", "constants": fit.constants()}
        except ValueError as err:
            out["frontiers"][str(int(e))] = _skipped(str(err))
    n, d, experts, loss = (
        points[c].to_numpy() for c in ("params_active", "tokens", "num_experts", "eval_loss")
    )
    try:
        clark = moe.fit_clark(n, experts, loss)
        out["clark"] = {
            "form": "log10 L = a·log10 N + b·log10 Ê + c·log10 N·log10 Ê + d",
            "constants": clark.constants(),
            "effective_params": {str(int(e)): clark.effective_params(n.max(), e) for e in counts},
        }
    except ValueError as err:
        out["clark"] = _skipped(str(err))
    try:
        fit, boot = moe.fit_moe_chinchilla_bootstrap(
            n, d, experts, loss, groups=points["parent"].to_numpy(), n_bootstrap=n_bootstrap, seed=seed,
            delta=delta,
        )
        saving = {str(int(e)): fit.compute_saving(e) for e in counts}
        entry = {
            "form": "L(N, D, E) = E0 + A/(N^alpha·E^gamma) + B/D^beta (N active)",
            "constants": fit.constants(),
            **_uncertainty(boot),
            "compute_saving": saving,
            "compute_saving_note": "times less compute than dense to reach the same loss, on the "
            "axis C = 6·N_active·D (not the flops column); the same at every loss in this form",
            "compute_saving_intervals": None,
        }
        if boot.has_interval:
            entry["compute_saving_intervals"] = {
                str(int(e)): list(boot.interval_of(
                    np.array([moe.MoEChinchillaFit(*row).compute_saving(e) for row in boot.samples])))
                for e in counts
            }
        out["chinchilla_form"] = entry
    except ValueError as err:
        out["chinchilla_form"] = _skipped(str(err))
    return out


def _expert_multipliers(points: pd.DataFrame, n_bootstrap: int, seed: int, delta: float) -> dict:
    """Does sparsity pay, and at what scale: each expert count's compute multiplier over the fewest
    experts (dense when present) at equal loss (neoscale.scaling.multiplier), with intervals."""
    from neoscale.scaling import multiplier  # it builds on this module

    counts = sorted(int(e) for e in np.unique(points["num_experts"]))
    names = {e: "dense" if e == 1 else f"{e} experts" for e in counts}
    kw = {"n_bootstrap": n_bootstrap, "delta": delta}
    with np.errstate(all="ignore"):
        baseline = multiplier.fit_variant(points[points["num_experts"] == counts[0]], names[counts[0]],
                                          seed=seed, **kw)
        comparisons = {}
        for e in counts[1:]:  # one at a time: a count too small to fit is skipped, not the others
            try:
                variant = multiplier.fit_variant(points[points["num_experts"] == e], names[e],
                                                 seed=seed + 1, **kw)
                comparisons[names[e]] = multiplier.compare_fits(baseline, variant)
            except FIT_ERRORS as error:
                comparisons[names[e]] = _skipped(str(error))
    return {"status": "fitted", "baseline": baseline.name, "what": multiplier.WHAT,
            "comparisons": comparisons}


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
) -> dict:
    """Every law the results support (see the module docstring); skipped laws give a reason.

    backtest: the rollout backtest of L(C) and Approach 3 (`_rollout`: one refit per k and law).

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
        laws["loss_vs_compute"] = _guarded(_loss_vs_compute, family, label, n_bootstrap, seed, delta,
                                           pin_E)
    else:
        laws["loss_vs_compute"] = _skipped(f"needs final rows of >= 3 distinct sizes, got {sizes.size}")
    if context_free_loss is None:
        laws["ladder_law"] = _skipped("no context-free loss H of the held-out set was given (a study "
                                      "records it in plan.json; neoscale.fit --context_free_loss=H)")
    else:
        ladder_law.check_context_free_loss(context_free_loss)  # bad input, not a law's failure
        laws["ladder_law"] = _guarded(_ladder, family, context_free_loss, n_bootstrap, seed, delta)
    n_tokens = np.unique(np.round(np.log10(family["tokens"]), 3)).size if len(family) else 0
    if len(family) >= 6 and sizes.size >= 3 and n_tokens >= 3:
        laws["chinchilla_approach3"] = _guarded(_chinchilla, family, n_bootstrap, seed, delta, pin_E)
    else:
        laws["chinchilla_approach3"] = _skipped(
            f"needs >= 6 final points with >= 3 sizes and >= 3 token counts, got {len(family)} "
            f"points, {sizes.size} sizes, {n_tokens} token counts"
        )
    if backtest:
        for key, min_sizes, predictor in (("loss_vs_compute", 3, _loss_vs_compute_backtest),
                                          ("chinchilla_approach3", 3, _chinchilla_backtest)):
            if laws[key]["status"] == "fitted":
                laws[key]["backtest"] = _rollout(family, min_sizes,
                                                 predictor(delta, n_bootstrap, seed, pin_E))
        if laws["ladder_law"]["status"] == "fitted":
            laws["ladder_law"]["backtest"] = _rollout(
                family, ladder_law.MIN_SIZES,
                _ladder_backtest(context_free_loss, delta, n_bootstrap, seed))
    laws["isoflop_approach2"] = _guarded(_isoflop, family, n_bootstrap, seed)
    laws["envelope_approach1"] = _guarded(_envelope, family, curves, n_bootstrap, seed)
    laws["moe"] = _guarded(_moe, points, n_bootstrap, seed, delta) if len(points) else _skipped("no points")
    if len(points) and np.unique(points["num_experts"]).size >= 2:
        laws["compute_multiplier"] = _guarded(_expert_multipliers, points, n_bootstrap, seed, delta)
    if schedules is not None:
        laws["curve_law"] = (_guarded(curve_law.fit_curve_law, results_table, schedules, delta) if schedules
                             else _skipped("no learning-rate schedules (runs/<run>/config.json)"))
    for law in laws.values():
        if "E" in (law.get("constants") or {}):
            law["irreducible_loss"] = irreducible_loss(law)
    _check_the_form_to_read(laws["loss_vs_compute"])
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
            "laws": laws,
        }
    )


def _fmt(value, interval=None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.4g}"
    if interval and None not in interval:
        text += f" [{interval[0]:.4g}, {interval[1]:.4g}]"
    return text


def _fmt_interval(interval) -> str:
    return "n/a" if not interval or None in interval else f"[{interval[0]:.4g}, {interval[1]:.4g}]"


E_BOUND_TOLERANCE = 1e-2  # nats: an irreducible loss below this sits at its bound, E >= 0


def _check_the_form_to_read(law: dict) -> None:
    """Points L(C)'s extrapolation check (``relative_error``, ``predicted``, ``form``) at the form
    the report tells the reader to use: the law with E when E is identified, else the pure power
    law. Both forms' checks stay under ``forms``; the held-out size is in neither fit."""
    ext = law.get("extrapolation") or {}
    if "forms" not in ext:
        return
    form = _form_to_read(law)
    ext.update(ext["forms"][form], form=form)


def _form_to_read(law: dict) -> str:
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


def _form_note(ext: dict) -> str:
    """', for the pure power law, the form to read (with E: 2.70%)' when both forms were checked."""
    forms = ext.get("forms")
    if not forms:
        return ""
    if ext["form"] == "with_E":
        return f" for the law with E (pure power law: {100 * forms['pure_power_law']['relative_error']:.2f}%)"
    return (f" for the pure power law, the form to read since E is not identified (with E: "
            f"{100 * forms['with_E']['relative_error']:.2f}%)")


def _constants_line(law: dict) -> str:
    intervals = law.get("intervals") or {}
    return ", ".join(f"{k} = {_fmt(v, intervals.get(k))}" for k, v in law["constants"].items())


def _bootstrap_line(law: dict) -> str | None:
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


def backtest_form(law: dict) -> str:
    """The prediction form a law's backtest is read in: L(C)'s form to read, else the law."""
    return (law.get("extrapolation") or {}).get("form", "with_E") if "pure_power_law" in law else "law"


def _backtest_lines(law: dict) -> list[str]:
    """'Rollout backtest ...' and one line per k, for a law with a fitted backtest."""
    backtest = law.get("backtest") or {}
    if backtest.get("status") != "fitted":
        return [f"\nRollout backtest not run: {backtest['reason']}."] if backtest else []
    form = backtest_form(law)
    named = "" if form == "law" else f" ({'law with E' if form == 'with_E' else 'pure power law'})"
    lines = [f"\nRollout backtest{named}: fitted on the smallest k sizes, relative error on each larger "
             "size:"]
    for r in backtest["rounds"]:
        head = f"- k = {r['k']} (up to N = {r['train_sizes'][-1]:.3g})"
        if r["status"] != "fitted":
            lines.append(f"{head}: not fitted ({r['reason']})")
            continue
        errors = ", ".join(f"N = {p['N']:.3g}: {100 * p['relative_error'][form]:.2f}%"
                           f"{_coverage_mark(p, form)}" for p in r["predictions"])
        lines.append(f"{head}: {errors}")
    drift = (backtest.get("drift") or {}).get(form)
    if drift and drift["per_doubling"] is not None:
        lines.append(_drift_line(drift))
    coverage = (backtest.get("coverage") or {}).get(form)
    if coverage:
        lines.append(f"\n{coverage['inside']} of {coverage['of']} held-out points lie inside their 95% "
                     "prediction interval (✓ inside, ✗ outside): "
                     + ("the bands cover what the law could not predict here." if
                        coverage["inside"] >= 0.9 * coverage["of"] else
                        "**the bands are too narrow for this extrapolation: the law's form, not its "
                        "noise, limits it; trust predictions beyond the data less than their bands say.**"))
    return lines


def _drift_line(drift: dict) -> str:
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


def _multiplier_lines(law: dict) -> list[str]:
    """One line per compared expert count: its multiplier at the headline computes, the verdict."""
    lines = [f"\nHow much less compute each variant needs than {law['baseline']} for the same loss "
             "(L(C) on each variant's frontier; 95% paired-bootstrap intervals):"]
    for name, result in law["comparisons"].items():
        if result.get("status") == "skipped":
            lines.append(f"- {name}: not compared ({result['reason']})")
            continue
        at = "; ".join(f"{row['where']}: {_fmt(row['multiplier'], row.get('interval'))}x"
                       for row in result["headline"])
        lines.append(f"- {name}: {at}. Scale: {result['exponents']['verdict']}.")
    return lines


def _coverage_mark(prediction: dict, form: str) -> str:
    """' [lo, hi] ✓' (one point: its prediction interval, ✓ if the actual is inside), ' (2/3 inside
    their bands)' (several points of the held size), or '' without an interval."""
    band = (prediction.get("prediction_interval") or {}).get(form)
    if band is None:
        return ""
    low, high = np.atleast_1d(band[0]), np.atleast_1d(band[1])
    if low.size > 1:
        return f" ({round(prediction['covered'][form] * low.size)}/{low.size} inside their bands)"
    return f" [{low[0]:.4g}, {high[0]:.4g}] {'✓' if prediction['covered'][form] == 1 else '✗'}"


def report_section(fit: dict) -> str:
    """Markdown summary of a fit_study result (constants with 95% intervals, extrapolation)."""
    lines = [
        "## Scaling-law fits",
        "",
        f"{fit['data']['final_points']} final points ({fit['data']['family']} family "
        f"for the single-family laws, {fit['data'].get('cooldown_branches', 0)} of them cooldown "
        f"branches); intervals are bootstrap 95% percentile intervals over {fit['n_bootstrap']} "
        f"resamples of runs (a branch with its parent), counting only resamples that "
        f"over-determine the law; a law with no more distinct points than its constants + 1 "
        f"gets none.",
        "",
        f"Compute axis of every law: {fit.get('compute_axis', 'the flops column')}.",
        "",
    ]
    objective = fit.get("objective")
    if objective:
        how = (f"Huber (δ = {objective['delta']:g})" if objective["loss"] == "huber" else "squared error")
        lines += [f"Objective of the L-BFGS laws: sum of {how} on log-loss residuals.", ""]
    for entry in fit["data"]["dropped"]:
        lines.append(f"- dropped run `{entry['run']}`: {entry['reason']}")
    titles = {
        "loss_vs_compute": "Loss against compute",
        "ladder_law": "The ladder's law (the next size at the study's own tokens per parameter)",
        "chinchilla_approach3": "Chinchilla Approach 3",
        "isoflop_approach2": "Approach 2 (IsoFLOP)",
        "envelope_approach1": "Approach 1 (envelope)",
        "moe": "Mixture of experts",
        "compute_multiplier": "Compute multiplier of experts over dense",
    }
    for key, title in titles.items():
        if key == "compute_multiplier" and key not in fit["laws"]:
            continue  # a study of one expert count has nothing to compare
        law = fit["laws"].get(key, _skipped("not computed"))
        lines += [f"### {title}", ""]
        if law["status"] != "fitted":
            lines += [f"Not fitted: {law['reason']}.", ""]
            continue
        if "constants" in law:
            lines.append(f"`{law['form']}`: {_constants_line(law)}")
            lines.append(_bootstrap_line(law))
            if not law.get("irreducible_loss", {"identified": True})["identified"]:
                lines.append(f"\n**{law['irreducible_loss']['note']}.**")
            elif law.get("irreducible_loss", {}).get("pinned"):
                lines.append(f"\n{law['irreducible_loss']['note']}.")
        if key == "loss_vs_compute":
            pure = law["pure_power_law"]
            lines.append(f"\nPure power law `{pure['form']}`: {_constants_line(pure)}")
            read_pure = _form_to_read(law) == "pure_power_law"
            for p in law["predictions"]:
                with_e, pure_text = (f"{_fmt(f['loss'], f['interval'])} (mean law); 95% prediction "
                                     f"interval {_fmt_interval(f['prediction_interval'])}"
                                     for f in (p, p["pure_power_law"]))
                lines.append(f"\n- predicted loss at {p['factor']:.0f}× the largest compute "
                             f"({p['compute']:.3g} FLOPs): "
                             + (f"pure power law (the form to read) {pure_text}; with E {with_e}"
                                if read_pure else f"{with_e}; pure power law {pure_text}"))
        if key == "ladder_law":
            lines.append(f"\nFitted to {law['what']}.")
            for p in law["predictions"]:
                lines.append(f"\n- predicted loss at {p['factor']:.0f}× the largest compute "
                             f"({p['compute']:.3g} FLOPs), for the size trained there on "
                             f"{law['tokens_per_param']:.3g} tokens per parameter: "
                             f"{_fmt(p['loss'], p['interval'])} (mean law); 95% prediction interval "
                             f"{_fmt_interval(p['prediction_interval'])}")
        snapping = law.get("budget_snapping")
        if snapping and snapping["labels"] != snapping["budgets"]:
            lines.append(f"\n{snapping['labels']} distinct budget labels were snapped to "
                         f"{snapping['budgets']} budgets ({snapping['note']}).")
        if key == "chinchilla_approach3":
            for name, alloc in (("", law["allocation"]), (" (6·N·D)", law["allocation_6nd"])):
                ci = alloc.get("intervals") or {}
                lines.append(
                    f"\nCompute-optimal{name}: N_opt ∝ C^{_fmt(alloc['a'], ci.get('a'))}, "
                    f"D_opt ∝ C^{_fmt(alloc['b'], ci.get('b'))} on {alloc['compute_axis']}"
                )
            per_token = law["allocation"]["flops_per_token"]
            lines.append(
                f"\nThe runs' FLOPs per token, fitted as k·N^s: k = {per_token['k']:.4g}, "
                f"s = {per_token['s']:.4f} (max error {100 * per_token['max_relative_error']:.1f}%)."
            )
        if key == "moe":
            for name in ("clark", "chinchilla_form"):
                sub = law.get(name, {})
                if sub.get("status") == "skipped":
                    lines.append(f"\n{name}: not fitted: {sub['reason']}.")
                elif sub:
                    lines.append(f"\n`{sub['form']}`: {_constants_line(sub)}")
                    lines.append(_bootstrap_line(sub))
            saving = law.get("chinchilla_form", {}).get("compute_saving", {})
            for e, s in saving.items():
                if e == "1":
                    continue
                ci = (law["chinchilla_form"].get("compute_saving_intervals") or {}).get(e)
                lines.append(
                    f"\n- {e} experts: {_fmt(s, ci)}× less compute (6·N_active·D) than dense "
                    "for the same loss"
                )
        if key == "compute_multiplier":
            lines += _multiplier_lines(law)
        lines += _backtest_lines(law)
        ext = law.get("extrapolation")
        if ext:
            if ext.get("status") == "skipped":
                lines.append(f"\nExtrapolation check not run: {ext['reason']}.")
            else:
                lines.append(
                    f"\nExtrapolation check (fit without the {ext['held_out']}): relative "
                    f"error {100 * ext['relative_error']:.2f}% on the held-out size{_form_note(ext)}."
                )
        lines.append("")
    if "curve_law" in fit["laws"]:
        lines += curve_law.report_lines(fit["laws"]["curve_law"])
    return "\n".join(line for line in lines if line is not None)
