"""report.md's sparsity section (fit.json's expert_multipliers: per token arm and variant, the
compute multiplier over dense with its interval, its trend, the published laws beside it, the
crossover tokens per parameter, E = 1 routed against dense) and its seed-noise section."""

from __future__ import annotations

from neoscale.report.format import fmt
from neoscale.scaling.study.sparsity import NARROW


def _interval_text(row: dict, result: dict | None = None) -> str:
    interval = row.get("interval")
    if not interval or None in interval:
        notes = {(result or {}).get(side, {}).get("interval_note") for side in ("A", "B")} - {None}
        why = f": {'; '.join(sorted(notes))}; more sizes per variant would give one" if notes else ""
        return f"{fmt(row['multiplier'], None)}x (no interval{why})"
    width = interval[1] / interval[0] if interval[0] > 0 else float("inf")
    return (f"{fmt(row['multiplier'], interval)}x (upper/lower {width:.2f}"
            f"{'' if width <= NARROW else ': wider than x/÷1.3'})")


def _width_text(w: dict | None) -> str | None:
    """Why a multiplier's interval is wide (or absent), and what would narrow it."""
    if not w or w.get("narrow"):
        return None
    parts = [f"the laws fall by s = {w['slope_A']:.3g} (dense) and {w['slope_B']:.3g} per e-fold "
             "of compute there"]
    if w.get("one_pair_factor"):
        parts.append(f"so the measured seed noise ({100 * w['seed_noise']:.2f}% of the loss) "
                     f"alone spans x/÷{w['one_pair_factor']:.3g} on one pair of runs")
    if w.get("runs_factor"):
        parts.append(f"at 1/sqrt(runs), about {w['runs_factor']:.1f}x the runs near this compute "
                     "(seeds or sizes) would bring it under x/÷1.3")
    elif w.get("ratio") is None:
        parts.append("more sizes per variant (resamples need 4 distinct computes on the frontier) "
                     "or more seeds would give one")
    return "  - why so wide: " + "; ".join(parts) + "."


def _published_text(published: list[dict]) -> str:
    parts = []
    for p in published:
        where = {True: "inside", False: "outside", None: "no interval"}[p["inside_interval"]]
        parts.append(f"{p['law']} {p['multiplier']:.3g}x ({where}"
                     + (f"; {p['note']}" if p.get("note") else "") + ")")
    return ("published at this compute (as 6·N_active·D) and allocation: " + ", ".join(parts))


def _comparison_lines(name: str, result: dict) -> list[str]:
    if result.get("status") == "skipped":
        return [f"- {name}: not compared ({result['reason']})"]
    row = result["at_shared_compute"]
    at_loss = f", read at the worse loss there, {row['loss']:.4g}" if "loss" in row else ""
    lines = [f"- {name}: {_interval_text(row, result)} at {row['compute']:.3g} FLOPs (the largest compute "
             f"both reach{at_loss}); its trend across the baseline's data: x"
             f"{fmt(result['trend'][0]['ratio'], result['trend'][0]['interval'])} "
             f"({result['trend'][0]['verdict']}); exponents: "
             f"{result['exponents']['verdict'].split(':')[0]}; resamples paired "
             f"{result.get('pairing', 'independently').split(':')[0]}."]
    if (why := _width_text(result.get("width"))) is not None:
        lines.append(why)
    if result.get("time_multiplier"):
        t = result["time_multiplier"]
        lines.append(f"  - on the wall clock: x{fmt(t['multiplier'], t['interval'])} (the compute "
                     f"multiplier over its step's {t['slowdown']:.2f}x time per FLOP; the interval "
                     "carries the compute multiplier's uncertainty only).")
    if result.get("published"):
        supported = [p["law"] for p in result["published"] if p["inside_interval"]]
        if all(p["inside_interval"] is None for p in result["published"]):
            above = [p["law"] for p in result["published"] if p["multiplier"] > row["multiplier"]]
            verdict = (f"no interval to judge them by; the measured point is below "
                       f"{', '.join(above) if above else 'none of them'}")
        else:
            verdict = f"the interval supports {', '.join(supported) if supported else 'none of them'}"
        lines.append(f"  - {_published_text(result['published'])}; {verdict}.")
    return lines


def _crossover_lines(crossover: dict) -> list[str]:
    lines = []
    for name, c in crossover.items():
        arms = ", ".join(f"{m:.3g}x at {r:g} tokens/param" for r, m in
                         zip(c["tokens_per_param"], c["multipliers"], strict=True))
        if c["bracketed"]:
            interval = c.get("interval")
            text = (f"{c['crossover']:.3g} tokens per parameter ({c['direction']})"
                    + (f", 95% interval [{interval[0]:.3g}, {interval[1]:.3g}] "
                       f"({100 * c['bracketed_fraction']:.0f}% of paired refits bracket it)"
                       if interval else ""))
        else:
            text = f"not bracketed: {name} {c['direction']}"
        lines.append(f"- {name} stops losing to dense at {text}; arms: {arms}.")
    return lines


def _routed_one_lines(r: dict | None) -> list[str]:
    if not r:
        return []
    if r["noise_band"] is None:
        verdict = "no seed noise measured to compare with"
    else:
        verdict = (f"{'inside' if r['inside_seed_noise'] else 'OUTSIDE'} the seed noise (mean "
                   f"{100 * r['mean_relative_difference']:+.3f}% against a 95% band of "
                   f"±{100 * r['noise_band']:.3f}% for {len(r['pairs'])} pairs differing only by "
                   f"seed; their rms difference would be {100 * r['seed_pair_rms']:.3f}%)")
    return [f"\nE = 1 routed against dense, run for run ({len(r['pairs'])} pairs of the same shape, "
            f"arm and seed): final losses differ by {100 * r['rms_relative_difference']:.3f}% rms, "
            f"at most {100 * r['max_abs_relative_difference']:.3f}%: {verdict}."]


def _cost_lines(cost: dict | None) -> list[str]:
    if not cost:
        return []
    out = ["\nWhat a routed step costs beside its FLOPs, against dense at the same shape and seed "
           f"({cost['what'].split(';')[0].split(', from')[0]}; this host's wall clock, "
           "benchmarks/RESULTS.md has the idle side-by-side figures):"]
    for name, v in cost["variants"].items():
        spread = [p["slowdown"] for p in v["pairs"]]
        out.append(f"- {name}: {v['slowdown']:.2f}x dense's time per FLOP at {v['at']} "
                   f"({min(spread):.2f}-{max(spread):.2f}x over {len(spread)} shapes of the "
                   f"{v['tokens_per_param']:g} tokens/param arm); {v['params_total_vs_dense']:.2f}x "
                   f"dense's parameters, training state {v['state_bytes'] / 2**20:.1f} MiB against "
                   f"{v['dense_state_bytes'] / 2**20:.1f} MiB.")
    return out


def lines(law: dict) -> list[str | None]:
    """The sparsity section: per token arm, each variant's multiplier over dense."""
    out: list[str | None] = ["### Sparsity: compute multipliers over dense", ""]
    if law["status"] != "fitted":
        return out + [f"Not fitted: {law['reason']}.", ""]
    out.append(f"How much less compute each variant needs than {law['baseline']} for the same loss "
               "(L(C) = E + A·C^(−α) on each variant's frontier, recomputed per resample; 95% "
               "bootstrap intervals, with seed noise where sizes were replicated). Published laws: "
               "neoscale/scaling/moe_laws.py (Krajewski's is fitted at E = 64; the joint law's "
               "printed constants do not reproduce its paper's headline numbers).")
    arms = law.get("arms") or {"": law}
    for arm, entry in arms.items():
        if arm:
            out.append(f"\n**{entry['tokens_per_param']:g} tokens per active parameter**"
                       + (f": not compared ({entry['reason']})" if entry.get("status") == "skipped"
                          else ""))
        for name, result in (entry.get("comparisons") or {}).items():
            out += _comparison_lines(name, result)
    if law.get("crossover"):
        out.append("")
        out += _crossover_lines(law["crossover"])
    out += _routed_one_lines(law.get("routed_one_vs_dense"))
    out += _cost_lines(law.get("cost"))
    return out + [""]


def seed_noise_lines(law: dict) -> list[str | None]:
    """The replicated runs' final-loss spread."""
    out: list[str | None] = ["### Seed noise", ""]
    if law["status"] != "fitted":
        return out + [f"Not measured: {law['reason']}.", ""]
    out.append(f"Replicate seeds ({law['what']}): pooled relative standard deviation "
               f"{100 * law['pooled_relative_std']:.2f}%, largest relative spread "
               f"{100 * law['max_relative_spread']:.2f}%.")
    for r in law["replicated"]:
        out.append(f"- {r['size']} ({r['variant']}, {r['tokens_per_param']:g} tokens/param), seeds "
                   f"{r['seeds']}: {', '.join(f'{v:.4f}' for v in r['losses'])}; spread "
                   f"{r['spread']:.4f} ({100 * r['relative_spread']:.2f}%)")
    return out + [""]
