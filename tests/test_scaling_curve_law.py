"""The LR-annealing curve law: its areas, recovery of known constants on the trainer's own
schedules, branch predictions, skips, and its place in fit_study, the report and the figures."""

import json

import numpy as np
import pandas as pd
import pytest

from neoscale import plots
from neoscale.report import curve_law as report_curve_law
from neoscale.report import fits_section
from neoscale.scaling import curve_law, fit_study
from neoscale.scaling.curve_law import CurveLaw, Schedule

# Two sizes with their own constants (S1 in units of summed learning rates).
TRUTH = {"small": CurveLaw(L0=3.2, A=1.1, alpha=0.55, C=2.5),
         "large": CurveLaw(L0=2.7, A=1.3, alpha=0.45, C=3.0)}
PEAK = {"small": 3e-3, "large": 2e-3}
N = {"small": 1e6, "large": 4e6}


def _rows(run: str, size: str, schedule: Schedule, steps, *, parent: str | None = None,
          fork: int | None = None, cooldown: float | None = None) -> list[dict]:
    """Results rows (one per evaluation) of a run whose losses follow TRUTH[size] exactly."""
    curve = TRUTH[size].curve(schedule)
    return [{"run": run, "size": size, "params_active": N[size], "step": s, "tokens": 4096.0 * s,
             "flops": 6 * N[size] * 4096.0 * s, "eval_loss": curve[s - 1], "status": "done",
             "final": s == steps[-1], "parent": parent or run, "fork_step": fork,
             "cooldown": cooldown} for s in steps]


def synthetic_study():
    """Per size a WSD main run (1-sqrt cooldown over its last 20%, evaluated every 20 steps) with
    two cooldown branches (evaluated at their end only), and a cosine run of the large size."""
    rows, schedules = [], {}
    for size in TRUTH:
        main = Schedule("wsd", PEAK[size], 400, 40, 80, "1-sqrt")
        schedules[size] = main
        rows += _rows(size, size, main, list(range(20, 401, 20)))
        for fork, cooldown in ((100, 25), (200, 50)):
            name = f"{size}_cd{fork}"
            schedules[name] = Schedule("wsd", PEAK[size], fork + cooldown, 40, cooldown, "1-sqrt")
            rows += _rows(name, size, schedules[name], [fork + cooldown], parent=size, fork=fork,
                          cooldown=(fork + cooldown) / 400)
    return pd.DataFrame(rows), schedules


def test_areas_are_the_summed_rates_and_the_annealing_momentum():
    eta = np.array([1.0, 1.0, 1.0, 0.5, 0.0])
    s1, s2 = curve_law.areas(eta, warmup_steps=0, decay=0.9)
    np.testing.assert_allclose(s1, [1, 2, 3, 3.5, 3.5])
    # m = (0, 0, 0, 0.5, 0.9·0.5 + 0.5 = 0.95); S2 its running sum.
    np.testing.assert_allclose(s2, [0, 0, 0, 0.5, 1.45])
    # Warmup counts at the peak (Tissue et al.'s code): its rise is neither area nor annealing.
    s1, s2 = curve_law.areas(np.array([0.5, 1.0, 1.0, 0.5]), warmup_steps=2, decay=0.9)
    np.testing.assert_allclose(s1, [1, 2, 3, 3.5])
    np.testing.assert_allclose(s2, [0, 0, 0, 0.5])


def test_areas_of_a_real_wsd_schedule():
    schedule = Schedule("wsd", 2e-3, 100, 10, 20, "linear")
    eta = schedule.learning_rates()
    assert eta[0] == pytest.approx(2e-4) and eta[50] == pytest.approx(2e-3) and eta[-1] == 0.0
    s1, s2 = curve_law.areas(eta, schedule.warmup_steps)
    # S1: the summed rates, warmup's 10 updates at the peak (4.5 peak-steps more than it trained).
    np.testing.assert_allclose(s1[:10], 2e-3 * np.arange(1, 11))
    np.testing.assert_allclose(s1[9:], np.cumsum(eta)[9:] + 4.5 * 2e-3)
    assert (s2[:80] == 0).all() and (np.diff(s2[80:]) > 0).all()
    # The linear cooldown drops 1e-4 a step: m_i = 1e-4·(1 − λ^k)/(1 − λ) after k drops.
    k = np.arange(1, 21)
    np.testing.assert_allclose(s2[80:], np.cumsum(1e-4 * (1 - 0.999**k) / (1 - 0.999)), rtol=1e-5)


def test_known_constants_are_recovered_and_branches_predicted():
    table, schedules = synthetic_study()
    law = curve_law.fit_curve_law(table, schedules)
    assert law["status"] == "fitted" and law["skipped"] == {}
    assert list(law["constants"]) == ["small", "large"]  # by size
    for size, truth in TRUTH.items():
        c = law["constants"][size]
        for name in ("L0", "A", "alpha", "C"):
            assert c[name] == pytest.approx(getattr(truth, name), rel=1e-6), (size, name)
        assert c["points"] == 18  # 20 evaluations, two of them in warmup
        assert c["rms_log_residual"] < 1e-8
    assert len(law["branch_predictions"]) == 4
    for b in law["branch_predictions"]:
        assert b["relative_error"] < 1e-8, b
        # The branch cooled down: it ends below the trunk at its fork step.
        assert b["actual"] < b["baselines"]["at_fork"]["loss"]
    assert law["summary"]["max_relative_error"] < 1e-8
    # Other schedules of the main run's length: what the true law says for them.
    for size, truth in TRUTH.items():
        p = law["schedules"][size]
        assert p["own_predicted"] == pytest.approx(p["own_actual"], rel=1e-8)
        cosine = Schedule("cosine", PEAK[size], 400, 40)
        assert p["cosine"] == pytest.approx(truth.curve(cosine)[-1], rel=1e-8)
        assert p["constant"] == pytest.approx(truth.curve(Schedule("constant", PEAK[size], 400, 40))[-1],
                                              rel=1e-8)
    json.dumps(law)  # fit.json-ready
    # The exact law beats the schedule-blind baselines, and says so.
    verdict = law["summary"]["verdict"]
    assert verdict["beats_baselines"] and verdict["law_error"] < 1e-8 < verdict["baseline_error"]
    # Refitted at other momentum decays (the truth's is 0.999), the branches are predicted worse.
    sensitivity = law["summary"]["decay_sensitivity"]
    assert list(sensitivity) == ["0.99", "0.995", "0.999"]
    assert sensitivity["0.999"] < 1e-8 < sensitivity["0.99"]


def test_the_law_does_not_earn_its_place_in_a_tie_with_a_baseline():
    summary = {"mean_relative_error": 0.0077, "baselines": {
        "at_fork": {"mean_relative_error": 0.0199}, "main_run_same_step": {"mean_relative_error": 0.0077}}}
    verdict = curve_law._verdict(summary)
    assert verdict["best_baseline"] == "main_run_same_step" and not verdict["beats_baselines"]
    summary["mean_relative_error"] = 0.0060  # 22% better: it does
    assert curve_law._verdict(summary)["beats_baselines"]
    lines = report_curve_law._verdict_lines({**summary, "verdict": {**curve_law._verdict(
        {**summary, "mean_relative_error": 0.0077}), "law_error": 0.0077}})
    assert "does not earn its place" in lines[0] and "0.77% against 0.77%" in lines[0]


def test_a_cosine_run_is_fitted_too():
    schedule = Schedule("cosine", PEAK["large"], 300, 30)
    table = pd.DataFrame(_rows("large", "large", schedule, list(range(15, 301, 15))))
    law = curve_law.fit_curve_law(table, {"large": schedule})
    c = law["constants"]["large"]
    for name in ("L0", "A", "alpha", "C"):
        assert c[name] == pytest.approx(getattr(TRUTH["large"], name), rel=1e-6), name
    assert law["branch_predictions"] == [] and law["summary"]["mean_relative_error"] is None


def test_too_short_or_constant_runs_are_skipped_with_the_reason():
    short = Schedule("wsd", 1e-3, 40, 10, 8)
    table = pd.DataFrame(_rows("short", "small", short, [10, 20, 30, 40]))
    law = curve_law.fit_curve_law(table, {"short": short})
    assert law["status"] == "skipped"
    assert "small: needs >= 5 evaluations after warmup, got 3" in law["reason"]
    constant = Schedule("constant", 1e-3, 200, 10)
    table = pd.DataFrame(_rows("flat", "small", constant, list(range(20, 201, 20))))
    law = curve_law.fit_curve_law(table, {"flat": constant})
    assert law["status"] == "skipped" and "no evaluation during a learning-rate decay" in law["reason"]
    law = curve_law.fit_curve_law(table, {})
    assert law["status"] == "skipped" and "no schedule for main run(s) ['flat']" in law["reason"]


def test_schedules_are_read_from_the_runs_config_json(tmp_path):
    run = tmp_path / "runs" / "a_cd0.5"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "run": {"schedule": "wsd", "steps": 55, "cooldown_shape": "1-sqrt", "learning_rate": None},
        "resolved": {"learning_rate": 3e-3, "warmup_steps": 8, "cooldown_steps": 11}}))
    (tmp_path / "runs" / "no_config").mkdir()
    assert curve_law.load_schedules(tmp_path) == {"a_cd0.5": Schedule("wsd", 3e-3, 55, 8, 11, "1-sqrt")}
    (run / "config.json").write_text(json.dumps({"run": {}, "resolved": {}}))
    with pytest.raises(ValueError, match="lacks its schedule"):
        curve_law.load_schedules(tmp_path)


def test_fit_study_reports_and_draws_the_curve_law(tmp_path):
    table, schedules = synthetic_study()
    fit = fit_study(table, schedules=schedules, n_bootstrap=0, backtest=False)
    law = fit["laws"]["curve_law"]
    assert law["status"] == "fitted" and law["summary"]["branches"] == 4
    assert "curve_law" not in fit_study(table, n_bootstrap=0, backtest=False)["laws"]
    assert fit_study(table, schedules={}, n_bootstrap=0, backtest=False)["laws"]["curve_law"] == {
        "status": "skipped", "reason": "no learning-rate schedules (runs/<run>/config.json)"}
    report = fits_section(fit)
    assert "### Loss curves across learning-rate schedules" in report
    assert "| small_cd100 | 100 | 125 |" in report
    assert f"| large | {law['constants']['large']['L0']:.4g} |" in report
    assert "L0 sits at its bound" not in report
    names = {p.name for p in plots.draw_study(table, fit, tmp_path)}
    assert {"curve_law.png", "curve_law.svg"} <= names
