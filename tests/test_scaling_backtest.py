"""Rollout backtest: each law fitted on the smallest k sizes predicts every larger size."""

import numpy as np
import pytest

from neoscale import plots
from neoscale.report import fits_section
from neoscale.scaling import fit_study
from neoscale.scaling.synthetic import synthetic_study


@pytest.fixture(scope="module")
def exact_fit():
    # Noise-free points of the known law: a correctly fitted law predicts every larger size exactly.
    results, _ = synthetic_study(budgets=(1e16, 1e17, 1e18), sizes_per_budget=5, moe_experts=(),
                                 noise=0.0)
    return results, fit_study(results, n_bootstrap=0)


def test_rollout_covers_every_k_and_every_larger_size(exact_fit):
    results, fit = exact_fit
    sizes = np.unique(results[results.final].params_active)
    for key in ("loss_vs_compute", "chinchilla_approach3"):
        backtest = fit["laws"][key]["backtest"]
        assert backtest["status"] == "fitted"
        assert [r["k"] for r in backtest["rounds"]] == list(range(3, sizes.size))
        for r in backtest["rounds"]:
            np.testing.assert_allclose(r["train_sizes"], sizes[: r["k"]])
            if r["status"] == "fitted":
                np.testing.assert_allclose([p["N"] for p in r["predictions"]], sizes[r["k"]:])


def test_rollout_of_the_true_law_predicts_every_larger_size(exact_fit):
    _, fit = exact_fit
    law = fit["laws"]["chinchilla_approach3"]
    rounds = {r["k"]: r for r in law["backtest"]["rounds"]}
    # 3 sizes of this IsoFLOP grid hold 4 points: fewer than the law's 5 constants, and it says so.
    assert rounds[3]["status"] == "skipped" and "at least 5 points" in rounds[3]["reason"]
    for k in range(4, max(rounds) + 1):
        errors = [p["relative_error"]["law"] for p in rounds[k]["predictions"]]
        assert max(errors) < 1e-4, (k, errors)
    # The last round is the held-out check, fitted from the coarse grid instead of the full one.
    last = rounds[max(rounds)]["predictions"][-1]
    assert last["relative_error"]["law"] == pytest.approx(law["extrapolation"]["relative_error"], abs=1e-5)


def test_backtest_is_in_the_report_and_a_figure(exact_fit, tmp_path):
    results, fit = exact_fit
    section = fits_section(fit)
    assert section.count("Rollout backtest") == 2
    assert "- k = 4 (up to N = " in section and "- k = 3 (up to N = 8e+06): not fitted" in section
    paths = plots.draw_study(results, fit, tmp_path)
    assert {"backtest.png", "backtest.svg"} <= {p.name for p in paths}
    without = fit_study(results, n_bootstrap=0, backtest=False)
    assert "backtest" not in without["laws"]["loss_vs_compute"]


def test_exact_law_has_no_drift(exact_fit):
    _, fit = exact_fit
    # Approach 3 is the true law here: no signed error at any distance. (On an IsoFLOP grid the
    # larger sizes add no compute, so there is no distance to fit a drift against.)
    backtest = fit["laws"]["chinchilla_approach3"]["backtest"]
    signed = [p["signed_error"]["law"] for r in backtest["rounds"] if r["status"] == "fitted"
              for p in r["predictions"]]
    assert signed and max(map(abs, signed)) < 1e-4
    assert backtest["drift"]["law"]["per_doubling"] is None
    # L(C) on an IsoFLOP grid's frontier is only close: small misses on both sides, no verdict.
    drift = fit["laws"]["loss_vs_compute"]["backtest"]["drift"]
    for form in ("with_E", "pure_power_law"):
        assert abs(drift[form]["per_doubling"]) < 0.005 and min(drift[form]["over"], drift[form]["under"]) > 0
    assert "Every miss is on one side" not in fits_section(fit)


def test_a_curve_that_steepens_is_reported_as_a_one_sided_drift():
    """Losses that fall faster with compute than any E + A·C^-α (log L concave in log C, as the CPU
    demo's ladder measured): every larger size beats the law fitted on the smaller ones, by more
    the farther it is, and the report says the forecasts are biased that way."""
    # A ladder at 20 tokens per parameter (as the runner trains one), 1M to 32M parameters.
    bent, _ = synthetic_study(budgets=(), moe_experts=(1,), moe_sizes=tuple(1e6 * 2.0 ** np.arange(6)),
                              noise=0.0)
    x = np.log(bent["flops"] / bent["flops"].min())
    bent["eval_loss"] = bent["eval_loss"] * np.exp(-0.01 * x**2)
    fit = fit_study(bent, n_bootstrap=0)
    drift = fit["laws"]["loss_vs_compute"]["backtest"]["drift"]["pure_power_law"]
    assert drift["over"] == drift["of"] >= 3 and drift["under"] == 0
    assert drift["per_doubling"] > 0.005
    rounds = fit["laws"]["loss_vs_compute"]["backtest"]["rounds"]
    far = [p["signed_error"]["pure_power_law"] for r in rounds if r["status"] == "fitted"
           for p in r["predictions"]]
    assert min(far) > 0
    section = fits_section(fit)
    assert "Every miss is on one side and grows with distance: the law is pessimistic" in section
