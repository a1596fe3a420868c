"""fit.json's moe (Clark et al.'s law and the Chinchilla form with an expert covariate) and
expert_multipliers (each variant's compute multiplier over dense, per token arm)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from neoscale.scaling import moe, multiplier, power_law
from neoscale.scaling.points import ROUTED_ONE, budget_tags, frontier_points, variant_labels
from neoscale.scaling.study.entries import FIT_ERRORS, skipped, uncertainty


def moe_entry(points: pd.DataFrame, n_bootstrap: int, seed: int, delta: float) -> dict:
    counts = np.unique(points["num_experts"])
    if counts.size < 2:
        return skipped(f"needs >= 2 distinct expert counts, got {counts.tolist()}")
    out = {"status": "fitted", "expert_counts": counts, "frontiers": {}}
    for e in counts:
        sub = points[points["num_experts"] == e]
        c, loss_e = sub["flops"].to_numpy(), sub["eval_loss"].to_numpy()
        use, _ = frontier_points(c, loss_e)
        try:
            fit = power_law.fit_power_law(c[use], loss_e[use], delta=delta)
            out["frontiers"][str(int(e))] = {"status": "fitted", "constants": fit.constants()}
        except ValueError as err:
            out["frontiers"][str(int(e))] = skipped(str(err))
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
        out["clark"] = skipped(str(err))
    try:
        fit, boot = moe.fit_moe_chinchilla_bootstrap(
            n, d, experts, loss, groups=points["parent"].to_numpy(), n_bootstrap=n_bootstrap, seed=seed,
            delta=delta,
        )
        saving = {str(int(e)): fit.compute_saving(e) for e in counts}
        entry = {
            "form": "L(N, D, E) = E0 + A/(N^alpha·E^gamma) + B/D^beta (N active)",
            "constants": fit.constants(),
            **uncertainty(boot),
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
        out["chinchilla_form"] = skipped(str(err))
    return out


MIN_ARM_SIZES = 3  # an arm needs the baseline at >= 3 sizes for its L(C)


def arm_ratio(points: pd.DataFrame) -> np.ndarray:
    """(n,) the token arm of each point: its run's planned tokens per parameter (the 'tpp' tag of
    a runner's run name), else its main run's tokens per active parameter (a cooldown branch: its
    parent's) to 2 significant digits."""
    tags = budget_tags(points)
    if tags is not None and all(t.startswith("tpp") for t in tags):  # the planned ratio itself
        return np.array([float(t[3:]) for t in tags])
    main = points.drop_duplicates("run").set_index("run")
    ratio = points["parent"].map(main["tokens"] / main["params_active"]).to_numpy(np.float64)
    own = (points["tokens"] / points["params_active"]).to_numpy(np.float64)
    ratio = np.where(np.isfinite(ratio), ratio, own)
    return np.array([float(f"{r:.2g}") for r in ratio])


def token_arms(points: pd.DataFrame) -> dict[float, pd.DataFrame] | None:
    """{tokens per parameter: its points} when the study has >= 2 token arms in which the baseline
    variant has >= MIN_ARM_SIZES sizes (e.g. tokens_per_param=3,35), else None (one comparison
    over every point, as for an IsoFLOP grid)."""
    ratios = arm_ratio(points)
    labels = variant_labels(points)
    baseline = _order(labels)[0]
    arms = {}
    for r in np.unique(ratios):
        sub = points[(ratios == r) & (labels == baseline)]
        if np.unique(sub["params_active"]).size >= MIN_ARM_SIZES:
            arms[float(r)] = points[ratios == r]
    return arms if len(arms) >= 2 else None


def _order(labels) -> list[str]:
    """Variants in report order: dense, one routed expert, then by expert count."""
    def key(label):
        return (0, 0) if label == "dense" else (1, 0) if label == ROUTED_ONE else (2, int(label.split()[0]))
    return sorted(set(labels), key=key)


def _compare_variants(points: pd.DataFrame, n_bootstrap: int, seed: int, delta: float) -> dict:
    """{baseline, comparisons}: each variant's multiplier over the first (``_order``), every
    bootstrap seeded ``seed`` so that variants sharing (shape, arm, seed) units pair by size."""
    labels = variant_labels(points)
    names = _order(labels)
    kw = {"n_bootstrap": n_bootstrap, "delta": delta, "seed": seed}
    with np.errstate(all="ignore"):
        try:
            baseline = multiplier.fit_variant(points[labels == names[0]], names[0], **kw)
        except FIT_ERRORS as error:  # every comparison says why; E = 1 vs dense still reported
            return {"baseline": names[0],
                    "comparisons": {name: skipped(f"the baseline: {error}") for name in names[1:]}}
        comparisons = {}
        for name in names[1:]:  # one at a time: a variant too small to fit is skipped, not the others
            try:
                variant = multiplier.fit_variant(points[labels == name], name, **kw)
                comparisons[name] = multiplier.compare_fits(baseline, variant)
            except FIT_ERRORS as error:
                comparisons[name] = skipped(str(error))
    return {"baseline": baseline.name, "comparisons": comparisons}


def multiplier_entry(points: pd.DataFrame, n_bootstrap: int, seed: int, delta: float) -> dict:
    """Does sparsity pay, and at what scale: each variant's compute multiplier over dense (the
    fewest experts without dense) at equal loss (neoscale.scaling.multiplier), with intervals; one
    entry per token arm when the study has several (``token_arms``), each beside the published
    MoE laws' predictions (``sparsity.published_lines``' inputs: sparsity.entry)."""
    out = {"status": "fitted", "what": multiplier.WHAT}
    arms = token_arms(points)
    if arms is None:
        return {**out, **_compare_variants(points, n_bootstrap, seed, delta)}
    out["arms"] = {}
    for ratio, sub in arms.items():
        try:
            out["arms"][f"tpp{ratio:g}"] = {"tokens_per_param": ratio,
                                            **_compare_variants(sub, n_bootstrap, seed, delta)}
        except FIT_ERRORS as error:
            out["arms"][f"tpp{ratio:g}"] = {"tokens_per_param": ratio, **skipped(str(error))}
    out["baseline"] = next((a["baseline"] for a in out["arms"].values() if "baseline" in a), "dense")
    return out
