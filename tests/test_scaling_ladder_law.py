"""The ladder's law L(C) = 1 / (1/H + C^α/A): its gradient, its fit, and its place in fit_study."""

import json

import numpy as np
import pytest

from neoscale.report import fits_section
from neoscale.scaling import fit_study, ladder_law
from neoscale.scaling.results import final_points
from neoscale.scaling.study import ladder
from neoscale.scaling.synthetic import synthetic_study

H, A, ALPHA = 6.2, 2.5e4, 0.25  # about what the CPU demo's ladder fits


def harmonic(compute):
    return 1.0 / (1.0 / H + np.asarray(compute, np.float64) ** ALPHA / A)


def test_value_and_grad_matches_finite_differences():
    rng = np.random.default_rng(0)
    log_x = rng.normal(size=(7, 1))
    log_y = np.log(5.0) + 0.3 * rng.normal(size=7)
    law = ladder_law.HarmonicLaw(float(np.log(H)))
    params = np.array([[0.3, 0.2], [-1.0, 0.6]])
    weights = np.ones((2, 7))
    for delta in (np.inf, 0.05):  # squared error, and Huber with some residuals past δ
        _, grad = law.value_and_grad(params, log_x, log_y, weights, delta)
        for j in range(2):
            step = np.zeros_like(params)
            step[:, j] = 1e-6
            up, _ = law.value_and_grad(params + step, log_x, log_y, weights, delta)
            down, _ = law.value_and_grad(params - step, log_x, log_y, weights, delta)
            np.testing.assert_allclose(grad[:, j], (up - down) / 2e-6, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(law.log_predict(params[:1], log_x)[0],
                               np.log(H) - np.logaddexp(0, 0.2 * log_x[:, 0] - 0.3))


def test_fit_recovers_the_law_and_drops_points_on_the_plateau():
    compute = np.geomspace(1e11, 1e13, 5)
    fit = ladder_law.fit_ladder_law(compute, harmonic(compute), H)
    assert fit.alpha == pytest.approx(ALPHA, rel=1e-4) and fit.constants()["A"] == pytest.approx(A, rel=1e-3)
    assert fit.n_points == 5 and fit.n_dropped == 0
    beyond = np.array([4e13, 1e14])  # 4x and 10x beyond: exact for the true form
    np.testing.assert_allclose(fit.predict(beyond), harmonic(beyond), rtol=1e-4)
    # A model still at the plateau (loss >= H) is dropped and counted, not fitted.
    with_plateau = ladder_law.fit_ladder_law(np.append(compute, 1e10),
                                             np.append(harmonic(compute), H + 0.1), H)
    assert with_plateau.n_dropped == 1 and with_plateau.alpha == pytest.approx(ALPHA, rel=1e-4)
    with pytest.raises(ValueError, match="context-free loss H = -1 must be a positive"):
        ladder_law.fit_ladder_law(compute, harmonic(compute), -1.0)


def _ladder(n_sizes: int = 7):
    """A 20-tokens-per-parameter ladder of main runs whose final losses follow the harmonic law."""
    results, _ = synthetic_study(budgets=(), moe_experts=(1,),
                                 moe_sizes=tuple(1e5 * 2.0 ** np.arange(n_sizes)), noise=0.0)
    results["eval_loss"] = harmonic(results["flops"])
    return results


def test_fit_study_predicts_the_next_sizes_of_its_ladder():
    fit = fit_study(_ladder(), n_bootstrap=40, context_free_loss=H)
    law = fit["laws"]["ladder_law"]
    assert json.loads(json.dumps(fit)) == fit
    assert law["status"] == "fitted" and law["tokens_per_param"] == pytest.approx(20)
    assert law["constants"]["alpha"] == pytest.approx(ALPHA, rel=1e-4)
    assert fit["context_free_loss"] == H and law["constants"]["H"] == H
    for p in law["predictions"]:
        assert p["loss"] == pytest.approx(harmonic(p["compute"]), rel=1e-4)
        assert p["prediction_interval"][0] <= p["loss"] <= p["prediction_interval"][1]
    assert law["extrapolation"]["relative_error"] < 1e-4
    backtest = law["backtest"]
    assert [r["k"] for r in backtest["rounds"]] == [4, 5, 6]  # from MIN_SIZES sizes up
    errors = [p["relative_error"]["pure"] for r in backtest["rounds"] for p in r["predictions"]]
    assert len(errors) == 3 + 2 + 1 and max(errors) < 1e-4
    section = fits_section(fit)
    assert "### The ladder's law" in section
    assert "for the size trained there on 20 tokens per parameter" in section


def test_the_pure_power_law_misses_where_the_ladder_law_does_not():
    """The steepening the CPU ladders showed: a pure power law fitted on the smaller sizes is
    pessimistic beyond them; the ladder's law, with H measured, is not."""
    fit = fit_study(_ladder(), n_bootstrap=0, context_free_loss=H)
    pure = fit["laws"]["loss_vs_compute"]["backtest"]["drift"]["pure_power_law"]
    assert pure["over"] == pure["of"] and pure["per_doubling"] > 0.005
    ladder = fit["laws"]["ladder_law"]["backtest"]["drift"]["pure"]
    assert abs(ladder["per_doubling"]) < 1e-4


def test_ladder_law_is_skipped_with_a_reason():
    without_h = fit_study(_ladder(), n_bootstrap=0, backtest=False)["laws"]["ladder_law"]
    assert "no context-free loss H" in without_h["reason"]
    three = fit_study(_ladder(3), n_bootstrap=0, context_free_loss=H, backtest=False)["laws"]["ladder_law"]
    assert three["status"] == "skipped"
    assert "needs main runs of >= 4 sizes below 0.9·H, got 3" in three["reason"]
    # An IsoFLOP study trains each size on its own tokens per parameter: not one ladder.
    isoflop, _ = synthetic_study(moe_experts=(), noise=0.0)
    mixed = ladder.entry(final_points(isoflop)[0], H, 0, 0, 1e-3)  # (fit_study: guarded(ladder.entry))
    assert mixed["status"] == "skipped" and "not one allocation" in mixed["reason"]
    with pytest.raises(ValueError, match="must be a positive number"):
        fit_study(_ladder(), n_bootstrap=0, context_free_loss=float("nan"))


def test_four_sizes_fit_and_say_why_their_bootstrap_has_no_interval():
    """Resamples must hold 4 distinct sizes (MIN_SIZES); of 4 runs, every resample that does is
    the data itself (each run once): it measures no uncertainty, however many are drawn, and the
    note says so (not a wrong count of the law's 2 constants)."""
    law = fit_study(_ladder(4), n_bootstrap=400, context_free_loss=H,
                    backtest=False)["laws"]["ladder_law"]
    assert law["status"] == "fitted" and law["intervals"] is None
    assert "every accepted one holds each run once and measures no uncertainty" in law["interval_note"]
    assert "constants" not in law["interval_note"]
    assert law["forms"]["floor"]["intervals"] is None
