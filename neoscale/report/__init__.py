"""report.md's fits section."""

from __future__ import annotations

from neoscale.report import curve_law
from neoscale.report.format import (
    backtest_lines,
    bootstrap_line,
    constants_line,
    fmt,
    fmt_interval,
    form_note,
)
from neoscale.scaling.study.entries import skipped
from neoscale.scaling.study.loss_vs_compute import form_to_read


def multiplier_lines(law: dict) -> list[str]:
    """One line per compared expert count: its multiplier at the headline computes, the verdict."""
    lines = [f"\nHow much less compute each variant needs than {law['baseline']} for the same loss "
             "(L(C) on each variant's frontier; 95% paired-bootstrap intervals):"]
    for name, result in law["comparisons"].items():
        if result.get("status") == "skipped":
            lines.append(f"- {name}: not compared ({result['reason']})")
            continue
        at = "; ".join(f"{row['where']}: {fmt(row['multiplier'], row.get('interval'))}x"
                       for row in result["headline"])
        lines.append(f"- {name}: {at}. Scale: {result['exponents']['verdict']}.")
    return lines



def fits_section(fit: dict) -> str:
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
        law = fit["laws"].get(key, skipped("not computed"))
        lines += [f"### {title}", ""]
        if law["status"] != "fitted":
            lines += [f"Not fitted: {law['reason']}.", ""]
            continue
        if "constants" in law:
            lines.append(f"`{law['form']}`: {constants_line(law)}")
            lines.append(bootstrap_line(law))
            if not law.get("irreducible_loss", {"identified": True})["identified"]:
                lines.append(f"\n**{law['irreducible_loss']['note']}.**")
            elif law.get("irreducible_loss", {}).get("pinned"):
                lines.append(f"\n{law['irreducible_loss']['note']}.")
        if key == "loss_vs_compute":
            pure = law["pure_power_law"]
            lines.append(f"\nPure power law `{pure['form']}`: {constants_line(pure)}")
            read_pure = form_to_read(law) == "pure_power_law"
            for p in law["predictions"]:
                with_e, pure_text = (f"{fmt(f['loss'], f['interval'])} (mean law); 95% prediction "
                                     f"interval {fmt_interval(f['prediction_interval'])}"
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
                             f"{fmt(p['loss'], p['interval'])} (mean law); 95% prediction interval "
                             f"{fmt_interval(p['prediction_interval'])}")
        snapping = law.get("budget_snapping")
        if snapping and snapping["labels"] != snapping["budgets"]:
            lines.append(f"\n{snapping['labels']} distinct budget labels were snapped to "
                         f"{snapping['budgets']} budgets ({snapping['note']}).")
        if key == "chinchilla_approach3":
            for name, alloc in (("", law["allocation"]), (" (6·N·D)", law["allocation_6nd"])):
                ci = alloc.get("intervals") or {}
                lines.append(
                    f"\nCompute-optimal{name}: N_opt ∝ C^{fmt(alloc['a'], ci.get('a'))}, "
                    f"D_opt ∝ C^{fmt(alloc['b'], ci.get('b'))} on {alloc['compute_axis']}"
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
                    lines.append(f"\n`{sub['form']}`: {constants_line(sub)}")
                    lines.append(bootstrap_line(sub))
            saving = law.get("chinchilla_form", {}).get("compute_saving", {})
            for e, s in saving.items():
                if e == "1":
                    continue
                ci = (law["chinchilla_form"].get("compute_saving_intervals") or {}).get(e)
                lines.append(
                    f"\n- {e} experts: {fmt(s, ci)}× less compute (6·N_active·D) than dense "
                    "for the same loss"
                )
        if key == "compute_multiplier":
            lines += multiplier_lines(law)
        lines += backtest_lines(law)
        ext = law.get("extrapolation")
        if ext:
            if ext.get("status") == "skipped":
                lines.append(f"\nExtrapolation check not run: {ext['reason']}.")
            else:
                lines.append(
                    f"\nExtrapolation check (fit without the {ext['held_out']}): relative "
                    f"error {100 * ext['relative_error']:.2f}% on the held-out size{form_note(ext)}."
                )
        lines.append("")
    if "curve_law" in fit["laws"]:
        lines += curve_law.lines(fit["laws"]["curve_law"])
    return "\n".join(line for line in lines if line is not None)
