"""report.md's sections of the laws fitted on final points: each section has one layout (the
law's constants, its own lines, its rollout backtest and extrapolation check); each law adds its
own lines here (``*_lines``)."""

from __future__ import annotations

from collections.abc import Callable

from neoscale.report.format import (
    backtest_lines,
    bootstrap_line,
    constants_line,
    fmt,
    fmt_interval,
    form_note,
)
from neoscale.scaling.study.ladder import PLATEAU_RATIO
from neoscale.scaling.study.loss_vs_compute import form_to_read

LawLines = Callable[[dict], list[str | None]]


def law_section(title: str, own_lines: LawLines | None = None) -> LawLines:
    """A law's section: '### title', then 'Not fitted: why.' or its constants, ``own_lines``,
    its backtest and its extrapolation check. Lines may be None (left out of the report)."""

    def lines(law: dict) -> list[str | None]:
        out: list[str | None] = [f"### {title}", ""]
        if law["status"] != "fitted":
            return out + [f"Not fitted: {law['reason']}.", ""]
        out += _constants_lines(law)
        if own_lines is not None:
            out += own_lines(law)
        out += backtest_lines(law)
        out += _extrapolation_lines(law)
        return out + [""]

    return lines


def _constants_lines(law: dict) -> list[str | None]:
    """The law's form and constants with intervals, its bootstrap counts, and whether E is known."""
    if "constants" not in law:
        return []
    out = [f"`{law['form']}`: {constants_line(law)}", bootstrap_line(law)]
    if not law.get("irreducible_loss", {"identified": True})["identified"]:
        out.append(f"\n**{law['irreducible_loss']['note']}.**")
    elif law.get("irreducible_loss", {}).get("pinned"):
        out.append(f"\n{law['irreducible_loss']['note']}.")
    return out


def _extrapolation_lines(law: dict) -> list[str]:
    ext = law.get("extrapolation")
    if not ext:
        return []
    if ext.get("status") == "skipped":
        return [f"\nExtrapolation check not run: {ext['reason']}."]
    return [f"\nExtrapolation check (fit without the {ext['held_out']}): relative "
            f"error {100 * ext['relative_error']:.2f}% on the held-out size{form_note(ext)}."]


def loss_vs_compute_lines(law: dict) -> list[str]:
    """The pure power law, and the forecasts in the form to read first."""
    pure = law["pure_power_law"]
    lines = [f"\nPure power law `{pure['form']}`: {constants_line(pure)}"]
    read_pure = form_to_read(law) == "pure_power_law"
    for p in law["predictions"]:
        with_e, pure_text = (f"{fmt(f['loss'], f['interval'])} (mean law); 95% prediction "
                             f"interval {fmt_interval(f['prediction_interval'])}"
                             for f in (p, p["pure_power_law"]))
        lines.append(f"\n- predicted loss at {p['factor']:.0f}× the largest compute "
                     f"({p['compute']:.3g} FLOPs): "
                     + (f"pure power law (the form to read) {pure_text}; with E {with_e}"
                        if read_pure else f"{with_e}; pure power law {pure_text}"))
    return lines


def ladder_lines(law: dict) -> list[str]:
    """What the ladder's forms were fitted to, which runs were excluded, each form's constants
    with their bootstrap counts, the free-H and leave-one-out fits, the regime, the form to read
    (by the rule of scaling/study/law_to_read.py) and its forecasts: only what the backtest
    verified is claimed."""
    lines = [f"\nFitted to {law['what']}."]
    excluded = law.get("excluded") or []
    lines.append(f"\nExclusion rule (fixed before the fit): runs above {PLATEAU_RATIO}·H are left out. "
                 + ("Excluded: " + "; ".join(f"`{e['run']}` ({e['reason']})" for e in excluded)
                    if excluded else "No run excluded."))
    lines.append(f"\nThe forms, each fitted to the same {law['points']} runs:")
    for key, form in law["forms"].items():
        if form["status"] != "fitted":
            lines.append(f"- {key}: not fitted ({form['reason']})")
            continue
        named = ", ".join(f"`{d['run']}` ({100 * d['residual']:+.1f}%)" for d in form["down_weighted"])
        lines.append(f"- {key} `{form['form']}`: {constants_line(form)} ({_accepted(form)})"
                     + (f"; down-weighted by Huber: {named}" if named else ""))
    free = law.get("free_H") or {}
    if free.get("status") == "fitted":
        lines.append(f"\nWith H fitted too (`{free['form']}`): {constants_line(free)} ({_accepted(free)}).")
    regime = law.get("regime")
    if regime:
        reached = "reached" if regime["reached"] else "**not reached**"
        lines.append(f"\nRegime of the pure ladder law: {reached} ({regime['why']}).")
    loo = law.get("leave_one_out") or {}
    spans = [f"{key} {fmt_interval(v['forecast_10x_range'])}" for key, v in loo.items()
             if v.get("forecast_10x_range")]
    if spans:
        lines.append("\nLeave one size out, refit, forecast 10× the largest compute (range over the "
                     "sizes left out): " + "; ".join(spans) + ".")
    noise = law.get("seed_noise")
    lines.append(f"\nSeed noise: {100 * noise['relative_std']:.2f}% (median relative spread of "
                 f"{noise['sizes_replicated']} replicated sizes)." if noise else
                 "\nSeed noise: not measured (no replicate runs); differences below ~0.5% are not "
                 "resolved.")
    read = law.get("form_to_read")
    if read is None:
        return lines
    chosen = law["forms"][read]
    to_read = law.get("law_to_read") or {}
    errors = (to_read.get("backtest_errors") or {}).get(read)
    verified = (f"its rollout backtest on this study's sizes: mean |error| {100 * errors['mean_abs']:.2f}%, "
                f"mean signed {100 * errors['mean_signed']:+.2f}% over {errors['n']} predictions"
                if errors and to_read.get("verified") else
                "**unverified: no rollout backtest on these sizes**")
    lines.append(f"\n**Form to read: {read}** (`{chosen['form']}`): {to_read.get('why', '')}; "
                 f"{verified}.")
    for p in chosen["predictions"]:
        lines.append(f"\n- {read}: predicted loss at {p['factor']:.0f}× the largest compute "
                     f"({p['compute']:.3g} FLOPs), for the size trained there on "
                     f"{law['tokens_per_param']:.3g} tokens per parameter: "
                     f"{fmt(p['loss'], p['interval'])} (mean law); 95% prediction interval "
                     f"{fmt_interval(p['prediction_interval'])} ({_accepted(chosen)}); beyond the "
                     "backtest's distance the form is extrapolated unchecked")
    for t in chosen.get("targets", []):
        f = t["forecast"]
        lines.append(f"\n- {read}: forecast for size {t['size']} (N = {t['N']:.3g}, D = {t['D']:.3g}, "
                     f"C = {t['C']:.3g}), not trained yet: {fmt(f['loss'])}; 95% prediction interval "
                     f"{fmt_interval(f['prediction_interval'])} (kept in the study's forecasts.jsonl, "
                     "scored when the size is trained)")
    if read != "pure" and regime and not regime["reached"]:
        lines.append("\nThe pure ladder law: regime not reached; no forecast of it is printed.")
    return lines


def _accepted(law: dict) -> str:
    """'180 of 200 resamples accepted' (or why there is no interval)."""
    counts = law.get("bootstrap") or {}
    if not counts.get("requested"):
        return "no bootstrap"
    text = f"{counts['accepted']} of {counts['requested']} resamples accepted"
    return text if law.get("intervals") else f"{text}, no interval"


def approach3_lines(law: dict) -> list[str]:
    """The compute-optimal allocation on the study's axis and on 6·N·D, and the FLOPs per token."""
    lines = []
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
    return lines


def approach2_lines(law: dict) -> list[str]:
    """How many budget labels were snapped to one budget, when any were."""
    snapping = law.get("budget_snapping")
    if snapping and snapping["labels"] != snapping["budgets"]:
        return [f"\n{snapping['labels']} distinct budget labels were snapped to "
                f"{snapping['budgets']} budgets ({snapping['note']})."]
    return []


def moe_lines(law: dict) -> list[str | None]:
    """Clark et al.'s law, the Chinchilla form with experts, and each expert count's saving."""
    lines: list[str | None] = []
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
    return lines
