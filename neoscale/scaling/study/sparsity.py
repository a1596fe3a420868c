"""The sparsity study's summaries: fit.json's seed_noise (replicate seeds' spread), and what
``finish`` adds to expert_multipliers: each comparison's published-law predictions at its compute
(on the laws' 6·N_active·D axis) and allocation, the tokens per parameter at which routed experts
stop losing to dense (from the token arms), E = 1 routed against dense beside the seed
noise, and what each variant costs beside its FLOPs: wall-clock per FLOP and training-state memory
against dense at the same shape, turning each compute multiplier into a time multiplier."""

from __future__ import annotations

import numpy as np
import pandas as pd

from neoscale.scaling import bootstrap, moe_laws, results
from neoscale.scaling.multiplier import pair_key
from neoscale.scaling.points import ROUTED_ONE, replicate_ids, variant_labels
from neoscale.scaling.study.entries import skipped
from neoscale.scaling.study.experts import arm_ratio

NOISE_WHAT = ("final held-out loss of each run trained with several model seeds (same shape, "
              "tokens and data; the data seed is shared): spread = max − min, relative = spread / "
              "mean; pooled: the within-run standard deviation over every replicated run, relative "
              "to its mean loss")


def seed_noise_entry(points: pd.DataFrame) -> dict:
    """Replicate seeds' spread of the final loss, per replicated run (main runs only)."""
    main = points[~results.is_branch(points)].reset_index(drop=True)
    ids = replicate_ids(main)
    if ids is None:
        return skipped("no seed column: the study predates replicate seeds")
    rows, residuals = [], []
    labels, ratios = variant_labels(main), arm_ratio(main)
    for i in np.unique(ids):
        sub = main[ids == i]
        if sub["seed"].nunique() < 2:
            continue
        loss = sub["eval_loss"].to_numpy(np.float64)
        first = int(np.nonzero(ids == i)[0][0])
        rows.append({"size": str(sub["size"].iloc[0]), "variant": labels[first],
                     "tokens_per_param": float(ratios[first]),
                     "seeds": [int(s) for s in sub["seed"]], "losses": loss.tolist(),
                     "mean": float(loss.mean()), "spread": float(np.ptp(loss)),
                     "relative_spread": float(np.ptp(loss) / loss.mean()),
                     "std": float(loss.std(ddof=1))})
        residuals += list((loss - loss.mean()) / loss.mean())
    if not rows:
        return skipped("no run was trained with more than one seed (--seeds=K or "
                       "config.replicates='size:K,...')")
    dof = len(residuals) - len(rows)
    return {"status": "fitted", "what": NOISE_WHAT, "replicated": rows,
            "max_relative_spread": max(r["relative_spread"] for r in rows),
            "pooled_relative_std": float(np.sqrt(np.sum(np.square(residuals)) / dof))}


def _experts_of(name: str) -> int | None:
    return None if name in ("dense", ROUTED_ONE) else int(name.split()[0])


def _published(comparison: dict, experts: int, tokens_per_param: float, to_6nd: float) -> list[dict]:
    """Each law's prediction at the comparison's shared compute (converted to the laws' 6·N·D by
    ``to_6nd``, the arm's median 6·N·D / flops) and the arm's allocation, and whether the measured
    interval holds it."""
    row = comparison["at_shared_compute"]
    interval = row.get("interval")
    out = []
    for p in moe_laws.predictions(experts, row["compute"] * to_6nd, tokens_per_param):
        inside = None if not interval or None in interval else bool(interval[0] <= p["multiplier"]
                                                                    <= interval[1])
        out.append({**p, "inside_interval": inside})
    return out


def _crossover(arms: list[tuple[float, dict]]) -> dict:
    """Tokens per parameter where the multiplier crosses 1 (log-linear between the arms around the
    change), from each arm's multiplier at its shared compute, with an interval over the arms'
    refits (the i-th of each arm together; a refit that does not bracket 1 counts as below the
    lowest arm or above the highest)."""
    ratios = np.array([r for r, _ in arms])
    m = np.array([c["at_shared_compute"]["multiplier"] for _, c in arms], np.float64)
    samples = [c.get("shared_samples") for _, c in arms]

    def cross(values: np.ndarray) -> float:
        log_m = np.log(np.maximum(values, 1e-300))
        for i in range(len(values) - 1):
            if log_m[i] < 0 <= log_m[i + 1] or log_m[i] >= 0 > log_m[i + 1]:
                t = -log_m[i] / (log_m[i + 1] - log_m[i])
                return float(np.exp(np.log(ratios[i]) + t * np.log(ratios[i + 1] / ratios[i])))
        return 0.0 if log_m[0] >= 0 else np.inf  # wins everywhere: stops losing below the arms

    point = cross(m)
    out = {"tokens_per_param": ratios.tolist(), "multipliers": m.tolist(),
           "computes": [c["at_shared_compute"]["compute"] for _, c in arms]}
    if 0 < point < np.inf:
        direction = "loses below, wins above" if m[0] < 1 else "wins below, loses above"
        out.update(bracketed=True, crossover=point, direction=direction)
    else:
        out.update(bracketed=False, crossover=None,
                   direction="wins in every arm" if point == 0 else "loses in every arm")
    if all(s is not None and len(s) for s in samples):
        k = min(len(s) for s in samples)
        values = np.array([cross(np.array([s[i] for s in samples], np.float64)) for i in range(k)])
        out["bracketed_fraction"] = float(np.mean((values > 0) & np.isfinite(values)))
        tail = 100 * (1 - bootstrap.LEVEL) / 2
        out["interval"] = np.percentile(values, [tail, 100 - tail], method="inverted_cdf").tolist()
    return out


def _routed_one(points: pd.DataFrame, noise: dict) -> dict | None:
    """E = 1 routed against dense run for run (same shape, arm and seed): relative differences of
    the final loss, and whether they lie within the measured seed spread."""
    main = points[~results.is_branch(points)].reset_index(drop=True)
    labels = variant_labels(main)
    if not ((labels == "dense").any() and (labels == ROUTED_ONE).any()):
        return None
    keys = pd.Series(pair_key(main))
    dense = dict(zip(keys[labels == "dense"], main["eval_loss"][labels == "dense"], strict=True))
    pairs = [{"run": str(main["run"][i]), "dense": float(dense[k]),
              "routed": float(main["eval_loss"][i]),
              "relative_difference": float(main["eval_loss"][i] / dense[k] - 1)}
             for i, k in enumerate(keys) if labels[i] == ROUTED_ONE and k in dense]
    if not pairs:
        return None
    diffs = np.array([p["relative_difference"] for p in pairs])
    pooled = noise.get("pooled_relative_std") if noise.get("status") == "fitted" else None
    # Two runs that differ only by seed differ by sqrt(2)·σ: the mean of n such differences lies
    # within 1.96·sqrt(2)·σ/sqrt(n) of 0 in 95% of studies; E = 1 routed is "inside the seed noise"
    # when its mean difference from dense is.
    band = None if pooled is None else float(1.96 * np.sqrt(2) * pooled / np.sqrt(diffs.size))
    return {"pairs": pairs, "max_abs_relative_difference": float(np.abs(diffs).max()),
            "mean_relative_difference": float(diffs.mean()),
            "rms_relative_difference": float(np.sqrt(np.mean(diffs ** 2))),
            "seed_pair_rms": None if pooled is None else float(np.sqrt(2) * pooled),
            "noise_band": band,
            "inside_seed_noise": None if band is None else bool(abs(diffs.mean()) <= band)}


STATE_BYTES_PER_PARAM = 16  # float32 parameters, gradients and two AdamW moments
COST_WHAT = ("wall-clock and memory of each variant against dense at the same shape, seed and "
             "token arm (pair_key), from the runs' own wall_seconds (compilation and evaluations "
             "included, so the longest arm's pairs are used) and total parameters; slowdown = "
             "(variant seconds per training FLOP) / (dense's); time multiplier = compute "
             "multiplier / slowdown; state = 16 bytes per parameter (float32 weights, gradients, "
             "two AdamW moments) on one device")


def _cost(points: pd.DataFrame) -> dict | None:
    """Per routed variant: its slowdown per FLOP and memory price against dense, from the pairs of
    the longest token arm (per pair, and at the largest shape, the headline), or None when the
    table has no dense runs or no wall-clock column."""
    main = points[~results.is_branch(points)].reset_index(drop=True)
    labels = variant_labels(main)
    if "wall_seconds" not in main or not (labels == "dense").any():
        return None
    keys = pd.Series(pair_key(main))
    ratios = arm_ratio(main)
    longest = ratios == ratios.max()
    dense = {k: i for i, k in enumerate(keys) if labels[i] == "dense" and longest[i]}
    seconds_per_flop = (main["wall_seconds"] / main["flops"]).to_numpy(np.float64)
    out = {}
    for name in np.unique(labels[labels != "dense"]):
        pairs = []
        for i in np.nonzero((labels == name) & longest)[0]:
            j = dense.get(keys[i])
            if j is None or not np.isfinite(seconds_per_flop[[i, j]]).all():
                continue
            pairs.append({"run": str(main["run"][i]), "dense_run": str(main["run"][j]),
                          "dense_flops": float(main["flops"][j]),
                          "slowdown": float(seconds_per_flop[i] / seconds_per_flop[j]),
                          "params_total_vs_dense": float(main["params_total"][i]
                                                         / main["params_total"][j]),
                          "state_bytes": int(STATE_BYTES_PER_PARAM * main["params_total"][i]),
                          "dense_state_bytes": int(STATE_BYTES_PER_PARAM * main["params_total"][j])})
        if pairs:
            top = max(p["dense_flops"] for p in pairs)
            at_top = [p for p in pairs if p["dense_flops"] == top]
            out[str(name)] = {"pairs": pairs, "tokens_per_param": float(ratios.max()),
                              "slowdown": float(np.mean([p["slowdown"] for p in at_top])),
                              "at": at_top[0]["run"],
                              "params_total_vs_dense": at_top[0]["params_total_vs_dense"],
                              "state_bytes": at_top[0]["state_bytes"],
                              "dense_state_bytes": at_top[0]["dense_state_bytes"]}
    return {"what": COST_WHAT, "variants": out} if out else None


NARROW = 1.69  # upper / lower of an interval narrower than x/÷1.3 (issue 30's bar)
WIDTH_WHAT = ("why the multiplier's interval is as wide as it is: a relative loss error sigma (the "
              "pooled seed noise) moves the compute at which a variant reaches a loss by a factor "
              "exp(sigma / s), s = −d ln L / d ln C of its law at the shared compute; one pair of "
              "runs' seed luck alone spans x/÷exp(1.96·sigma·sqrt(1/s_A² + 1/s_B²)) (95%). If the "
              "interval's log-width shrinks as 1/sqrt(runs) (seeds or sizes near the top), "
              "(ln ratio / ln 1.69)² times the runs give upper/lower <= 1.69")


def local_slope(constants: dict, compute: float) -> float:
    """−d ln L / d ln C of L = E + A·C^(−alpha) at ``compute``."""
    reducible = constants["A"] * compute ** -constants["alpha"]
    return float(constants["alpha"] * reducible / (constants["E"] + reducible))


def _width(comparison: dict, noise: dict) -> dict:
    """How wide the multiplier's interval at the shared compute is, why, and what would narrow it
    (WIDTH_WHAT)."""
    row = comparison["at_shared_compute"]
    interval = row.get("interval")
    ratio = (interval[1] / interval[0] if interval and None not in interval and interval[0] > 0
             else None)
    slopes = {side: local_slope(comparison[side]["constants"], row["compute"]) for side in "AB"}
    sigma = noise.get("pooled_relative_std") if noise.get("status") == "fitted" else None
    one_pair = (float(np.exp(1.96 * sigma * np.hypot(1 / slopes["A"], 1 / slopes["B"])))
                if sigma is not None and min(slopes.values()) > 0 else None)
    runs_factor = (float((np.log(ratio) / np.log(NARROW)) ** 2)
                   if ratio is not None and np.isfinite(ratio) and ratio > NARROW else None)
    return {"what": WIDTH_WHAT, "ratio": ratio, "narrow": None if ratio is None else ratio <= NARROW,
            "slope_A": slopes["A"], "slope_B": slopes["B"], "seed_noise": sigma,
            "one_pair_factor": one_pair, "runs_factor": runs_factor}


def finish(entry: dict, points: pd.DataFrame, noise: dict) -> dict:
    """expert_multipliers with the published laws beside each comparison, the crossover per
    expert count across token arms, and E = 1 routed against dense (the samples kept for the
    crossover are dropped)."""
    if entry.get("status") != "fitted":
        return entry
    arms = entry.get("arms") or {"": {"tokens_per_param": None, **entry}}
    by_experts: dict[str, list[tuple[float, dict]]] = {}
    ratios = arm_ratio(points)
    for arm in arms.values():
        ratio = arm.get("tokens_per_param")
        in_arm = points[ratios == ratio] if ratio is not None else points
        to_6nd = float(np.median(6 * in_arm["params_active"] * in_arm["tokens"] / in_arm["flops"]))
        for name, comparison in (arm.get("comparisons") or {}).items():
            experts = _experts_of(name)
            if comparison.get("status") == "skipped":
                continue
            comparison["width"] = _width(comparison, noise or {})
            if experts is not None and ratio is not None:
                comparison["published"] = _published(comparison, experts, ratio, to_6nd)
                by_experts.setdefault(name, []).append((ratio, comparison))
    entry["crossover"] = {name: _crossover(sorted(rows, key=lambda r: r[0]))
                          for name, rows in by_experts.items() if len(rows) >= 2}
    for arm in arms.values():
        for comparison in (arm.get("comparisons") or {}).values():
            comparison.pop("shared_samples", None)
    entry["routed_one_vs_dense"] = _routed_one(points, noise)
    entry["cost"] = _cost(points)
    for arm in arms.values():  # each FLOP multiplier as a time multiplier
        for name, comparison in (arm.get("comparisons") or {}).items():
            variant = (entry["cost"] or {}).get("variants", {}).get(name)
            if variant and comparison.get("status") != "skipped":
                row = comparison["at_shared_compute"]
                comparison["time_multiplier"] = {
                    "multiplier": row["multiplier"] / variant["slowdown"],
                    "interval": ([v / variant["slowdown"] for v in row["interval"]]
                                 if row.get("interval") and None not in row["interval"] else None),
                    "slowdown": variant["slowdown"]}
    return entry
