"""Prediction intervals: parameter uncertainty plus residual scatter, checked by coverage."""

import numpy as np
import pytest

from neoscale.report import fits_section, format
from neoscale.scaling import bootstrap, fit_study, power_law
from neoscale.scaling.study import entries
from neoscale.scaling.synthetic import synthetic_study


def test_prediction_interval_of_exact_refits_is_the_residual_scatter():
    # Every refit predicts log L = 0 exactly: the interval is the inflated residual quantiles.
    residuals = np.linspace(-0.02, 0.02, 9)
    band = bootstrap.prediction_interval(np.zeros((4000, 1)), residuals, n_params=3, seed=0)
    inflation = np.sqrt(9 / 6)
    np.testing.assert_allclose(np.log(band[:, 0]), [-0.02 * inflation, 0.02 * inflation], rtol=0.05)


def test_power_law_prediction_intervals_cover_new_noisy_points():
    """40 synthetic studies of L(C) = E + A·C^-α with 1% log-normal noise at 8 compute values:
    the 95% interval at 3x the largest compute holds a fresh noisy point about 95% of the time
    (the mean law's interval, without the scatter, holds far fewer)."""
    e_true, a_true, alpha_true = 1.8, 40.0, 0.12
    compute = np.geomspace(1e15, 1e18, 8)
    target = 3e18
    rng = np.random.default_rng(0)
    inside_prediction = inside_mean = 0
    trials = 40
    for trial in range(trials):
        law = e_true + a_true * compute**-alpha_true
        loss = law * np.exp(rng.normal(0, 0.01, compute.size))
        fit, boot = power_law.fit_power_law_bootstrap(compute, loss, n_bootstrap=200, seed=trial)
        residuals = np.log(fit.predict(compute)) - np.log(loss)
        log_predict = entries.power_law_log([target])
        band = entries.prediction_interval(boot, log_predict, residuals, 3, trial)[:, 0]
        mean_band = np.exp(boot.interval_of(log_predict(boot.samples)[:, 0]))
        new = (e_true + a_true * target**-alpha_true) * np.exp(rng.normal(0, 0.01))
        inside_prediction += band[0] <= new <= band[1]
        inside_mean += mean_band[0] <= new <= mean_band[1]
    assert inside_prediction / trials >= 0.85, inside_prediction
    assert inside_mean < inside_prediction


@pytest.fixture(scope="module")
def noisy_fit():
    results, _ = synthetic_study(budgets=(1e15, 3e15, 1e16, 3e16, 1e17, 3e17, 1e18),
                                 sizes_per_budget=4, moe_experts=(), noise=0.005, seed=1)
    return fit_study(results, n_bootstrap=60)


def test_fit_json_has_prediction_intervals_and_backtest_coverage(noisy_fit):
    law = noisy_fit["laws"]["loss_vs_compute"]
    for p in law["predictions"]:
        low, high = p["prediction_interval"]
        # The prediction interval holds the mean law's interval and the point estimate.
        assert low <= p["interval"][0] <= p["loss"] <= p["interval"][1] <= high
    band = law["frontier"]
    # Wider than the mean law's band (up to Monte Carlo noise where the parameters dominate).
    assert np.all(np.asarray(band["prediction_lower"]) <= 1.002 * np.asarray(band["lower"]))
    assert np.all(np.asarray(band["prediction_upper"]) >= 0.998 * np.asarray(band["upper"]))
    assert np.mean(np.asarray(band["prediction_upper"]) - np.asarray(band["prediction_lower"])) > \
        np.mean(np.asarray(band["upper"]) - np.asarray(band["lower"]))
    for key, form in (("loss_vs_compute", "with_E"), ("chinchilla_approach3", "law")):
        backtest = noisy_fit["laws"][key]["backtest"]
        coverage = backtest["coverage"][form]
        # Rounds whose k sizes give no bootstrap interval have no band and are not counted.
        counted = sum(len(np.atleast_1d(p["actual"])) for r in backtest["rounds"]
                      if r["status"] == "fitted" for p in r["predictions"]
                      if form in p["prediction_interval"])
        assert coverage["of"] == counted > 0
    # The points follow Approach 3's form exactly: its bands cover nearly every larger size's
    # points (measured: 34 of 35). L(C) on an IsoFLOP grid's frontier is only near its form.
    coverage = noisy_fit["laws"]["chinchilla_approach3"]["backtest"]["coverage"]["law"]
    assert coverage["inside"] >= 0.85 * coverage["of"], coverage
    section = fits_section(noisy_fit)
    assert "95% prediction interval [" in section
    assert "held-out points lie inside their 95% prediction interval" in section


def test_forecasts_carry_the_pure_power_law_the_report_reads_when_E_is_not_identified():
    """A study whose E sits at its bound is read as the pure power law (the report says so): its
    10x and 100x forecasts must then be the pure law's, with the pure law's own bands."""
    # A ladder at 20 tokens per parameter whose losses are a pure power law of compute.
    results, _ = synthetic_study(budgets=(), moe_experts=(1,), moe_sizes=tuple(1e6 * 2.0 ** np.arange(6)),
                                 noise=0.0)
    noise = np.exp(0.004 * np.random.default_rng(0).standard_normal(len(results)))
    results["eval_loss"] = 38.0 * results["flops"] ** -0.074 * noise
    fit = fit_study(results, n_bootstrap=40, backtest=False)
    law = fit["laws"]["loss_vs_compute"]
    assert not law["irreducible_loss"]["identified"]  # E at its bound: the pure law is read
    final = results[results.final]
    pure = power_law.fit_power_law(final["flops"].to_numpy(), final["eval_loss"].to_numpy(),
                                   with_offset=False)
    for p in law["predictions"]:
        at = p["pure_power_law"]
        assert at["loss"] == pytest.approx(float(pure.predict(p["compute"])), rel=1e-3)
        low, high = at["prediction_interval"]
        assert low <= at["interval"][0] <= at["loss"] <= at["interval"][1] <= high
    first = law["predictions"][0]["pure_power_law"]
    section = fits_section(fit)
    assert "pure power law (the form to read) " + format.fmt(first["loss"], first["interval"]) in section
