"""A degenerate point set marks the law it breaks as not fitted, with the reason, and keeps the
others: fit_study never raises a raw TypeError (issue 24)."""

import numpy as np
import pandas as pd
import pytest

from neoscale.report import fits_section
from neoscale.scaling import ChinchillaFit, fit_study, results
from neoscale.scaling.study import approach2
from neoscale.scaling.synthetic import synthetic_study


def table(n, d, loss):
    return results.from_table(pd.DataFrame({"N": n, "D": d, "L": loss}), params_column="N",
                              loss_column="L", tokens_column="D")


def loss_rising_with_n():
    """12 runs whose loss grows (slightly) with N: Approach 3's α comes out negative, and its
    allocation would be a fractional power of a negative number (TypeError ... complex before)."""
    rng = np.random.default_rng(0)
    n, d = np.repeat([1e7, 3e7, 1e8, 3e8], 3), np.tile([2e8, 1e9, 5e9], 4)
    loss = (1.5 + 0.02 * n**0.1 + 2000 / d**0.37) * np.exp(0.002 * rng.standard_normal(n.size))
    return n, d, loss


def test_negative_exponent_marks_approach3_not_fitted_and_keeps_the_others():
    fit = fit_study(table(*loss_rising_with_n()), n_bootstrap=10)
    law = fit["laws"]["chinchilla_approach3"]
    assert law["status"] == "skipped"
    assert "alpha = -0.0" in law["reason"] and "no compute-optimal allocation" in law["reason"]
    assert law["fitted_constants"]["alpha"] < 0
    assert fit["laws"]["loss_vs_compute"]["status"] == "fitted"
    section = fits_section(fit)
    assert "### Chinchilla Approach 3\n\nNot fitted: the fitted exponents alpha = -0.0" in section


def test_allocation_outside_the_domain_is_a_value_error_not_complex():
    fit = ChinchillaFit(E=1.5, A=0.02, B=2000.0, alpha=-0.08, beta=0.37)
    with pytest.raises(ValueError, match="no optimal allocation: the fitted exponents"):
        fit.optimal_allocation(1e20)


def test_loss_rising_with_compute_marks_l_of_c_not_fitted():
    results_table, _ = synthetic_study(budgets=(1e16, 1e17, 1e18), sizes_per_budget=3, moe_experts=())
    final = results_table[results_table.final].copy()
    # Losses in reverse order of compute: bigger runs worse.
    order = np.argsort(final["flops"].to_numpy())
    final.loc[final.index[order], "eval_loss"] = np.sort(final["eval_loss"].to_numpy())
    fit = fit_study(final, n_bootstrap=0)
    law = fit["laws"]["loss_vs_compute"]
    assert law["status"] == "skipped" and "not positive" in law["reason"]
    assert fit["laws"]["isoflop_approach2"]["status"] in ("fitted", "skipped")


def test_a_law_raising_a_type_error_is_reported_not_raised(monkeypatch):
    def broken(*args):
        return float(complex(1, 1))  # the error the copied WSD study met

    monkeypatch.setattr(approach2, "entry", broken)
    results_table, _ = synthetic_study(budgets=(1e16, 1e17), sizes_per_budget=4, moe_experts=())
    fit = fit_study(results_table, n_bootstrap=0)
    assert fit["laws"]["isoflop_approach2"] == {
        "status": "failed",
        "reason": "the fit failed on these points (TypeError: float() argument must be a string or a "
        "real number, not 'complex')",
    }
    assert fit["laws"]["chinchilla_approach3"]["status"] == "fitted"


def test_a_diverging_held_out_refit_is_skipped_not_reported_as_nan():
    """A real 3-size μP study (6 final points; tests/data/tiny_mup_study_results.csv): L(C) refitted
    without its largest size ends at A = inf. The check says so, and the report renders (it once
    crashed the study's end on the NaN)."""
    import pathlib

    from neoscale.scaling import load_results

    table = load_results(pathlib.Path(__file__).parent / "data" / "tiny_mup_study_results.csv")
    fit = fit_study(table, n_bootstrap=10)
    check = fit["laws"]["loss_vs_compute"]["extrapolation"]
    assert check["status"] == "skipped" and "has no finite prediction" in check["reason"]
    assert "Extrapolation check not run: the refit without the largest size" in fits_section(fit)
