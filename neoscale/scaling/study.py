"""fit_study: every scaling law a study's results support, with intervals and an honest
extrapolation check, as a JSON-serialisable dict (the runner writes it as fit.json); and
report_section, its markdown summary.

Data points are the final evaluation rows of finished runs (each run's and each cooldown
branch's last evaluation; never stable-phase losses). Laws:
- loss_vs_compute: L(C) = E + A·C^−α (and the pure power law) on the compute–loss Pareto
  frontier of the dense runs (or of the only expert count present);
- chinchilla_approach3: L(N, D) on the same runs' final points;
- isoflop_approach2: runs grouped by budget_flops;
- envelope_approach1: the per-step curves;
- moe: Clark et al.'s law and the Chinchilla form with an expert covariate, when the table has
  >= 2 expert counts.
Conventions: N = params_active (all parameters a token uses, embeddings included; = params_total
for dense models), D = tokens, C = the flops column (the runner's count, attention included);
Chinchilla's compute-optimal allocation uses C = 6·N·D.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from neoscale.scaling import bootstrap, chinchilla, envelope, isoflop, moe, power_law, results

CONVENTIONS = {
    "N": "params_active (parameters used per token, embeddings included)",
    "D": "tokens seen",
    "C": "flops column of the results (training FLOPs, attention included)",
    "allocation": "Chinchilla compute-optimal N_opt, D_opt use C = 6·N·D",
    "intervals": "bootstrap percentile 95% intervals, runs resampled with replacement",
    "loss": "eval_loss of each run's final evaluation",
}
EXTRAPOLATION_FACTORS = (10.0, 100.0)


def _clean(value):
    """JSON-safe: numpy scalars to Python, NaN/inf to None, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _intervals(names, samples: np.ndarray) -> dict:
    if samples.size == 0 or not np.isfinite(samples).any():
        return {}
    lo, hi = bootstrap.percentile_interval(samples)
    return {k: [lo[i], hi[i]] for i, k in enumerate(names)}


def _skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


def pareto_frontier(compute: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """(n,) bool: points with no other point at lower-or-equal compute and lower loss."""
    order = np.argsort(compute, kind="stable")
    keep = np.zeros(compute.size, bool)
    best = np.inf
    for i in order:
        if loss[i] < best:
            keep[i], best = True, loss[i]
    return keep


def _family(points: pd.DataFrame) -> tuple[pd.DataFrame, str]:
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


def _loss_vs_compute(points: pd.DataFrame, label: str, n_bootstrap: int, seed: int) -> dict:
    compute, loss = points["flops"].to_numpy(), points["eval_loss"].to_numpy()
    frontier = pareto_frontier(compute, loss)
    use = frontier if frontier.sum() >= 3 else np.ones_like(frontier)
    groups = points["run"].to_numpy()[use]
    fit, samples = power_law.fit_power_law_bootstrap(
        compute[use], loss[use], groups=groups, n_bootstrap=n_bootstrap, seed=seed
    )
    pure, pure_samples = power_law.fit_power_law_bootstrap(
        compute[use], loss[use], with_offset=False, groups=groups, n_bootstrap=n_bootstrap, seed=seed
    )
    grid = np.geomspace(compute.min(), compute.max() * max(EXTRAPOLATION_FACTORS), 60)
    band = {"compute": grid, "loss": fit.predict(grid)}
    if samples.size:
        curves = samples[:, :1] + samples[:, 1:2] * grid[None, :] ** -samples[:, 2:3]
        band["lower"], band["upper"] = bootstrap.percentile_interval(curves)
    predictions = []
    for factor in EXTRAPOLATION_FACTORS:
        c = compute.max() * factor
        entry = {"compute": c, "factor": factor, "loss": float(fit.predict(c))}
        if samples.size:
            entry["interval"] = list(
                bootstrap.percentile_interval(samples[:, 0] + samples[:, 1] * c ** -samples[:, 2])
            )
        predictions.append(entry)
    out = {
        "status": "fitted",
        "form": "L(C) = E + A·C^(−alpha)",
        "family": label,
        "points": int(use.sum()),
        "on_frontier": bool(frontier.sum() >= 3),
        "constants": fit.constants(),
        "intervals": _intervals(("E", "A", "alpha"), samples),
        "pure_power_law": {
            "form": "L(C) = A·C^(−alpha)",
            "constants": {"A": pure.A, "alpha": pure.alpha},
            "intervals": _intervals(("E", "A", "alpha"), pure_samples),
        },
        "frontier": band,
        "predictions": predictions,
    }
    out["pure_power_law"]["intervals"].pop("E", None)
    train, held = _largest_held_out(points)
    try:
        t_c, t_l = train["flops"].to_numpy(), train["eval_loss"].to_numpy()
        t_front = pareto_frontier(t_c, t_l)
        t_use = t_front if t_front.sum() >= 3 else np.ones_like(t_front)
        refit = power_law.fit_power_law(t_c[t_use], t_l[t_use])
        best = held.loc[held["eval_loss"].idxmin()]
        predicted = float(refit.predict(best["flops"]))
        out["extrapolation"] = {
            "held_out": f"largest size, N = {best['params_active']:.4g}",
            "compute": float(best["flops"]),
            "actual": float(best["eval_loss"]),
            "predicted": predicted,
            "relative_error": abs(predicted - best["eval_loss"]) / best["eval_loss"],
            "constants": refit.constants(),
        }
    except ValueError as e:
        out["extrapolation"] = _skipped(str(e))
    return out


def _chinchilla(points: pd.DataFrame, n_bootstrap: int, seed: int) -> dict:
    n, d, loss = (points[c].to_numpy() for c in ("params_active", "tokens", "eval_loss"))
    fit, samples = chinchilla.fit_chinchilla_bootstrap(
        n, d, loss, groups=points["run"].to_numpy(), n_bootstrap=n_bootstrap, seed=seed
    )
    out = {
        "status": "fitted",
        "form": "L(N, D) = E + A/N^alpha + B/D^beta",
        "points": fit.n_points,
        "constants": fit.constants(),
        "intervals": _intervals(chinchilla.CONSTANTS, samples),
        "allocation": {"a": fit.a, "b": fit.b, "G": fit.G, "form": "N_opt = G·(C/6)^a, D_opt = (C/6)^b / G"},
    }
    if samples.size:
        alloc_a = samples[:, 4] / (samples[:, 3] + samples[:, 4])
        out["allocation"]["intervals"] = {
            "a": list(bootstrap.percentile_interval(alloc_a)),
            "b": list(bootstrap.percentile_interval(1 - alloc_a)),
        }
    train, held = _largest_held_out(points)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refit = chinchilla.fit_chinchilla(
                *(train[c].to_numpy() for c in ("params_active", "tokens", "eval_loss"))
            )
        predicted = refit.predict(held["params_active"].to_numpy(), held["tokens"].to_numpy())
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
    with_budget = points[points["budget_flops"].notna() & (points["budget_flops"] > 0)]
    if with_budget.empty:
        return _skipped("no runs carry an IsoFLOP budget (budget_flops)")
    try:
        fit, samples = isoflop.fit_isoflop_bootstrap(
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
        "budgets": fit.budgets,
        "n_opt": fit.n_opt,
        "d_opt": fit.d_opt,
        "loss_opt": fit.loss_opt,
        "parabolas_ln_n": fit.parabolas,
        "constants": {"a": fit.a, "b": fit.b, "log_k_n": fit.log_k_n, "log_k_d": fit.log_k_d},
        "intervals": _intervals(("a", "b"), samples),
        "skipped_budgets": fit.skipped,
    }


def _envelope(points: pd.DataFrame, curves, n_bootstrap: int, seed: int) -> dict:
    if not curves:
        return _skipped("no training curves (runs/*/metrics.jsonl)")
    params = dict(zip(points["run"], points["params_active"], strict=True))
    family = {k: v for k, v in curves.items() if k in params}
    try:
        fit, samples = envelope.fit_envelope_bootstrap(family, params, n_bootstrap=n_bootstrap, seed=seed)
    except ValueError as e:
        return _skipped(str(e))
    return {
        "status": "fitted",
        "form": "N_opt = k_n·C^a, D_opt = k_d·C^b from the lower envelope of training curves",
        "compute": fit.compute,
        "loss": fit.loss,
        "n_opt": fit.n_opt,
        "d_opt": fit.d_opt,
        "constants": {"a": fit.a, "b": fit.b, "log_k_n": fit.log_k_n, "log_k_d": fit.log_k_d},
        "intervals": _intervals(("a", "b"), samples),
    }


def _moe(points: pd.DataFrame, n_bootstrap: int, seed: int) -> dict:
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
            fit = power_law.fit_power_law(c[use], loss_e[use])
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
        fit, samples = moe.fit_moe_chinchilla_bootstrap(
            n, d, experts, loss, groups=points["run"].to_numpy(), n_bootstrap=n_bootstrap, seed=seed
        )
        saving = {str(int(e)): fit.compute_saving(e) for e in counts}
        entry = {
            "form": "L(N, D, E) = E0 + A/(N^alpha·E^gamma) + B/D^beta (N active)",
            "constants": fit.constants(),
            "intervals": _intervals(("E0", "A", "B", "alpha", "beta", "gamma"), samples),
            "compute_saving": saving,
            "compute_saving_note": "times less compute (6·N_active·D) than dense to reach the "
            "same loss; the same at every loss in this form",
        }
        if samples.size:
            entry["compute_saving_intervals"] = {}
            for e in counts:
                per = []
                for row in samples[np.isfinite(samples).all(axis=1)]:
                    per.append(moe.MoEChinchillaFit(*row).compute_saving(e))
                entry["compute_saving_intervals"][str(int(e))] = list(
                    bootstrap.percentile_interval(np.array(per))
                )
        out["chinchilla_form"] = entry
    except ValueError as err:
        out["chinchilla_form"] = _skipped(str(err))
    return out


def fit_study(
    results_table: pd.DataFrame,
    *,
    curves: dict[str, pd.DataFrame] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> dict:
    """Every law the results support (see the module docstring); skipped laws give a reason."""
    if curves is not None and not isinstance(curves, Mapping):
        raise ValueError(
            "curves must map run name -> per-step DataFrame (see "
            "neoscale.scaling.load_curves), got " + type(curves).__name__
        )
    points, dropped = results.final_points(results_table)
    family, label = _family(points)
    sizes = np.unique(family["params_active"]) if len(family) else np.array([])
    laws: dict[str, dict] = {}
    if sizes.size >= 3:
        laws["loss_vs_compute"] = _loss_vs_compute(family, label, n_bootstrap, seed)
    else:
        laws["loss_vs_compute"] = _skipped(f"needs final rows of >= 3 distinct sizes, got {sizes.size}")
    n_tokens = np.unique(np.round(np.log10(family["tokens"]), 3)).size if len(family) else 0
    if len(family) >= 6 and sizes.size >= 2 and n_tokens >= 2:
        laws["chinchilla_approach3"] = _chinchilla(family, n_bootstrap, seed)
    else:
        laws["chinchilla_approach3"] = _skipped(
            f"needs >= 6 final points with >= 2 sizes and >= 2 token counts, got {len(family)} "
            f"points, {sizes.size} sizes, {n_tokens} token counts"
        )
    laws["isoflop_approach2"] = _isoflop(family, n_bootstrap, seed)
    laws["envelope_approach1"] = _envelope(family, curves, n_bootstrap, seed)
    laws["moe"] = _moe(points, n_bootstrap, seed) if len(points) else _skipped("no points")
    return _clean(
        {
            "conventions": CONVENTIONS,
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "data": {
                "final_points": len(points),
                "family": label,
                "sizes": sizes,
                "expert_counts": np.unique(points["num_experts"]) if len(points) else [],
                "dropped": dropped,
            },
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


def _constants_line(law: dict) -> str:
    intervals = law.get("intervals", {})
    return ", ".join(f"{k} = {_fmt(v, intervals.get(k))}" for k, v in law["constants"].items())


def report_section(fit: dict) -> str:
    """Markdown summary of a fit_study result (constants with 95% intervals, extrapolation)."""
    lines = [
        "## Scaling-law fits",
        "",
        f"{fit['data']['final_points']} final points ({fit['data']['family']} family "
        f"for the single-family laws); intervals are bootstrap 95% percentile intervals "
        f"over {fit['n_bootstrap']} resamples of runs.",
        "",
    ]
    for entry in fit["data"]["dropped"]:
        lines.append(f"- dropped run `{entry['run']}`: {entry['reason']}")
    titles = {
        "loss_vs_compute": "Loss against compute",
        "chinchilla_approach3": "Chinchilla Approach 3",
        "isoflop_approach2": "Approach 2 (IsoFLOP)",
        "envelope_approach1": "Approach 1 (envelope)",
        "moe": "Mixture of experts",
    }
    for key, title in titles.items():
        law = fit["laws"].get(key, _skipped("not computed"))
        lines += [f"### {title}", ""]
        if law["status"] != "fitted":
            lines += [f"Not fitted: {law['reason']}.", ""]
            continue
        if "constants" in law:
            lines.append(f"`{law['form']}`: {_constants_line(law)}")
        if key == "loss_vs_compute":
            pure = law["pure_power_law"]
            lines.append(f"\nPure power law `{pure['form']}`: {_constants_line(pure)}")
            for p in law["predictions"]:
                lines.append(
                    f"\n- predicted loss at {p['factor']:.0f}× the largest compute "
                    f"({p['compute']:.3g} FLOPs): {_fmt(p['loss'], p.get('interval'))}"
                )
        if key == "chinchilla_approach3":
            alloc = law["allocation"]
            lines.append(f"\nCompute-optimal: N_opt ∝ C^{alloc['a']:.3f}, D_opt ∝ C^{alloc['b']:.3f}")
        if key == "moe":
            for name in ("clark", "chinchilla_form"):
                sub = law.get(name, {})
                if sub.get("status") == "skipped":
                    lines.append(f"\n{name}: not fitted: {sub['reason']}.")
                elif sub:
                    lines.append(f"\n`{sub['form']}`: {_constants_line(sub)}")
            saving = law.get("chinchilla_form", {}).get("compute_saving", {})
            for e, s in saving.items():
                ci = law["chinchilla_form"].get("compute_saving_intervals", {}).get(e)
                lines.append(f"\n- {e} experts: {_fmt(s, ci)}× less compute than dense for the same loss")
        ext = law.get("extrapolation")
        if ext:
            if ext.get("status") == "skipped":
                lines.append(f"\nExtrapolation check not run: {ext['reason']}.")
            else:
                lines.append(
                    f"\nExtrapolation check (fit without the {ext['held_out']}): relative "
                    f"error {100 * ext['relative_error']:.2f}% on the held-out size."
                )
        lines.append("")
    return "\n".join(lines)
