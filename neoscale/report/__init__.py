"""report.md's scaling-law fits: one section per law of fit.json, in the order of ``SECTIONS``.

Where a law lives (the rule for every law): its mathematics in ``neoscale/scaling/<law>.py``; its
fit.json entry in ``neoscale/scaling/study/`` (the curve law, fitted on whole curves, builds its
entry in ``scaling/curve_law.fit_curve_law``); its report lines here, in ``neoscale/report/``;
its figure in ``neoscale/plots.py``. The page itself (plan, final losses, figures, failures) is
written by one module, ``neoscale/runner/report.py``, which takes this section from
``fits_section``.

Lines on the whole fit (the law to read, the forecasts scored from the study's ledger) are in
``forecasts.py``, placed before and after the laws' sections.

Adding a section (a sparsity law, downstream-task fits, ...): write a module here with
``lines(law: dict) -> list[str]`` (or a ``laws.law_section(title, own_lines)`` for the common
layout) and register it in ``SECTIONS``, the one place that names the sections.
"""

from __future__ import annotations

import dataclasses

from neoscale.report import curve_law, forecasts, laws, sparsity
from neoscale.scaling.study.entries import skipped


@dataclasses.dataclass(frozen=True)
class Section:
    """One law's part of the fits section."""

    key: str  # the law's key in fit.json's "laws"
    lines: laws.LawLines  # fit.json's entry -> markdown lines (None lines are left out)
    always: bool = True  # when the fit lacks the law: True: 'Not fitted: not computed.'; False: omitted


SECTIONS: tuple[Section, ...] = (
    Section("loss_vs_compute", laws.law_section("Loss against compute", laws.loss_vs_compute_lines)),
    Section("ladder_law", laws.law_section(
        "The ladder's law (the next size at the study's own tokens per parameter)", laws.ladder_lines)),
    Section("chinchilla_approach3", laws.law_section("Chinchilla Approach 3", laws.approach3_lines)),
    Section("isoflop_approach2", laws.law_section("Approach 2 (IsoFLOP)", laws.approach2_lines)),
    Section("envelope_approach1", laws.law_section("Approach 1 (envelope)")),
    Section("moe", laws.law_section("Mixture of experts", laws.moe_lines)),
    Section("seed_noise", sparsity.seed_noise_lines, always=False),
    # a study of one variant has nothing to compare
    Section("expert_multipliers", sparsity.lines, always=False),
    Section("curve_law", curve_law.lines, always=False),
)


def _preamble(fit: dict) -> list[str]:
    """The points, the bootstrap, the compute axis, the objective and the dropped runs."""
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
    return lines


def fits_section(fit: dict) -> str:
    """Markdown summary of a fit_study result (constants with 95% intervals, extrapolation)."""
    lines = _preamble(fit) + [""] + forecasts.law_to_read_lines(fit)
    for section in SECTIONS:
        if section.key in fit["laws"] or section.always:
            lines += section.lines(fit["laws"].get(section.key, skipped("not computed")))
    lines += forecasts.scored_lines(fit)
    return "\n".join(line for line in lines if line is not None)


__all__ = ["SECTIONS", "Section", "fits_section"]
