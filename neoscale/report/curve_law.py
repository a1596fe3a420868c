"""report.md's section of the curve law (neoscale.scaling.curve_law)."""

from __future__ import annotations

from neoscale.scaling import curve_law


def _verdict_lines(summary: dict) -> list[str]:
    """Whether the law earns its place, and how its error moves with λ."""
    verdict, out = summary.get("verdict"), []
    if verdict:
        baseline = curve_law.BASELINES[verdict["best_baseline"]]
        if verdict["beats_baselines"]:
            out.append(f"It beats the best schedule-blind prediction ({baseline}: "
                       f"{100 * verdict['baseline_error']:.2f}%) by more than "
                       f"{100 * (1 - curve_law.EARNS_PLACE_RATIO):.0f}% on this study.")
        else:
            out.append(f"**It does not earn its place on this study**: {baseline} predicts the "
                       f"branches as well or better ({100 * verdict['baseline_error']:.2f}% against "
                       f"{100 * verdict['law_error']:.2f}%; the law must be "
                       f"{100 * (1 - curve_law.EARNS_PLACE_RATIO):.0f}% better). Its constants "
                       "are not identified by these curves; evaluate cooldowns more densely or "
                       "fit more steps before reading its schedule predictions.")
    sensitivity = summary.get("decay_sensitivity")
    if sensitivity:
        out.append("Mean branch error at other momentum decays λ: " + ", ".join(
            f"λ = {d}: {'n/a' if e is None else f'{100 * e:.2f}%'}" for d, e in sensitivity.items())
            + ".")
    return [*out, ""] if out else []


def lines(law: dict) -> list[str]:
    """Markdown lines for a report: the constants per size, each branch's prediction, the schedules."""
    lines = ["### Loss curves across learning-rate schedules", ""]
    if law.get("status") != "fitted":
        return lines + [f"Not fitted: {law.get('reason', 'not computed')}.", ""]
    lines += [f"`{law['form']}`: {law['what']}.", "",
              "| size | L0 | A | alpha | C | points | rms log residual |", "|---|---|---|---|---|---|---|"]
    for size, c in law["constants"].items():
        lines.append(f"| {size} | {c['L0']:.4g} | {c['A']:.4g} | {c['alpha']:.4g} | {c['C']:.4g} | "
                     f"{c['points']} | {c['rms_log_residual']:.2g} |")
    at_bound = [size for size, c in law["constants"].items() if c["L0"] < curve_law.L0_BOUND_TOLERANCE]
    if at_bound:
        lines.append(f"\nL0 sits at its bound 0 for {', '.join(at_bound)}: these curves do not identify "
                     "an asymptote; A and alpha describe the range of S1 fitted, not beyond it.")
    lines += [f"\nNot fitted or predicted: {what}: {why}." for what, why in law["skipped"].items()]
    branches = law["branch_predictions"]
    if branches:
        summary = law["summary"]
        against = ", ".join(f"{100 * base['mean_relative_error']:.2f}% for {base['what']}"
                            for base in summary["baselines"].values())
        lines += ["", f"Cooldown branches predicted from their own schedules (never fitted): mean "
                  f"relative error {100 * summary['mean_relative_error']:.2f}% (max "
                  f"{100 * summary['max_relative_error']:.2f}%), against {against}.", "",
                  *_verdict_lines(summary),
                  "| branch | fork step | steps | predicted | actual | error | main run at fork: "
                  "error | main run, same step: error |", "|---|---|---|---|---|---|---|---|"]
        for b in branches:
            base = b["baselines"]
            lines.append(f"| {b['run']} | {b['fork_step']} | {b['steps']} | {b['predicted']:.4f} | "
                         f"{b['actual']:.4f} | {100 * b['relative_error']:.2f}% | "
                         f"{100 * base['at_fork']['relative_error']:.2f}% | "
                         f"{100 * base['main_run_same_step']['relative_error']:.2f}% |")
    else:
        lines += ["", "No cooldown branch to predict."]
    lines += ["", "Final loss predicted for other schedules of each size's longest main run (same "
              "peak, warmup and length):", "",
              "| size | own schedule | own: predicted | own: actual | constant | cosine |",
              "|---|---|---|---|---|---|"]
    for size, p in law["schedules"].items():
        actual = "n/a" if p["own_actual"] is None else f"{p['own_actual']:.4f}"
        lines.append(f"| {size} | {p['own']} | {p['own_predicted']:.4f} | {actual} | "
                     f"{p['constant']:.4f} | {p['cosine']:.4f} |")
    return lines + [""]
