"""Scaling-law fits with uncertainty: Kaplan-style L(C), Chinchilla approaches 1–3, MoE laws.

Where a law lives (one rule for every law):
- its mathematics (form, fit, bootstrap) in ``scaling/<law>.py`` (power_law, ladder_law,
  chinchilla, isoflop, envelope, moe, multiplier, curve_law);
- its fit.json entry, read from a study's points, in ``scaling/study/`` (one module per law; the
  ``fit_study`` orchestrator in ``scaling/study/__init__.py``); the curve law, fitted on whole
  curves rather than final points, builds its entry in ``curve_law.fit_curve_law``;
- its report.md lines in ``neoscale/report/`` (registered in ``neoscale.report.SECTIONS``);
- its figure in ``neoscale/plots.py``.
Shared point helpers (Pareto frontier, family, sizes) are in ``scaling/points.py``. Nothing in
this package draws or writes markdown.
"""

from neoscale.scaling.bootstrap import Bootstrap, Requirement, percentile_interval, resample_weights
from neoscale.scaling.chinchilla import (
    ChinchillaFit,
    ComputeAxis,
    fit_chinchilla,
    fit_chinchilla_bootstrap,
    fit_compute_axis,
)
from neoscale.scaling.curve_law import CurveLaw, Schedule, fit_curve_law, load_schedules
from neoscale.scaling.envelope import EnvelopeFit, fit_envelope
from neoscale.scaling.isoflop import IsoFlopFit, fit_isoflop
from neoscale.scaling.ladder_law import LadderFit, fit_ladder_law
from neoscale.scaling.moe import (
    ClarkFit,
    MoEChinchillaFit,
    fit_clark,
    fit_moe_chinchilla,
    saturated_experts,
)
from neoscale.scaling.power_law import PowerLawFit, fit_power_law
from neoscale.scaling.results import from_table, load_curves, load_results
from neoscale.scaling.study import fit_study

__all__ = [
    "Bootstrap",
    "ChinchillaFit",
    "ComputeAxis",
    "CurveLaw",
    "ClarkFit",
    "EnvelopeFit",
    "IsoFlopFit",
    "LadderFit",
    "MoEChinchillaFit",
    "PowerLawFit",
    "fit_chinchilla",
    "fit_chinchilla_bootstrap",
    "fit_clark",
    "fit_compute_axis",
    "fit_curve_law",
    "fit_envelope",
    "fit_isoflop",
    "fit_ladder_law",
    "fit_moe_chinchilla",
    "fit_power_law",
    "fit_study",
    "from_table",
    "load_curves",
    "load_results",
    "load_schedules",
    "percentile_interval",
    "Requirement",
    "resample_weights",
    "saturated_experts",
    "Schedule",
]
