"""Approach 2 groups runs into budgets within a relative tolerance, not by exact float equality."""

import numpy as np
import pytest

from neoscale.scaling import fit_isoflop, isoflop
from neoscale.scaling.synthetic import TRUE_LAW, law_loss


def isoflop_grid(budgets=(1e17, 1e18, 1e19, 1e20), per_budget=7, width=3.0, batch_tokens=65536):
    """IsoFLOP runs whose tokens are whole batches: each run's 6·N·D misses its budget a little."""
    alpha, beta = TRUE_LAW["alpha"], TRUE_LAW["beta"]
    g = (alpha * TRUE_LAW["A"] / (beta * TRUE_LAW["B"])) ** (1 / (alpha + beta))
    rows = []
    for c in budgets:
        for n in g * (c / 6) ** (beta / (alpha + beta)) * np.geomspace(1 / width, width, per_budget):
            d = np.ceil(c / (6 * n) / batch_tokens) * batch_tokens
            rows.append((c, n, d, float(law_loss(n, d))))
    return np.array(rows).T


def test_snap_budgets_groups_labels_within_the_tolerance_without_chaining():
    labels = np.array([1e18, 1.02e18, 1.04e18, 1.06e18, 1e19, np.nan])
    snapped, distinct = isoflop.snap_budgets(labels, rtol=0.05)
    assert distinct == 5
    # 1e18..1.04e18 are within 5% of 1e18; 1.06e18 is not, and starts its own group.
    group = np.exp(np.log([1e18, 1.02e18, 1.04e18]).mean())
    assert snapped[0] == snapped[1] == snapped[2] == pytest.approx(group)
    assert snapped[3] == 1.06e18 and snapped[4] == 1e19 and np.isnan(snapped[5])


def test_per_row_6nd_and_jittered_labels_give_the_planned_budgets():
    budget, n, d, loss = isoflop_grid()
    planned = fit_isoflop(budget, n, d, loss)
    per_row = fit_isoflop(6 * n * d, n, d, loss)  # every run its own float
    labels = np.unique(6 * n * d).size
    assert labels > 10 and per_row.labels == labels and per_row.budgets.size == 4
    np.testing.assert_allclose(per_row.budgets, planned.budgets, rtol=0.02)
    assert per_row.a == pytest.approx(planned.a, abs=2e-3)
    jitter = budget * (1 + 1e-9 * np.random.default_rng(0).standard_normal(budget.size))
    jittered = fit_isoflop(jitter, n, d, loss)
    assert jittered.budgets.size == 4 and jittered.a == pytest.approx(planned.a, abs=1e-6)
    # The bootstrap resamples the same snapped budgets.
    _, boot = isoflop.fit_isoflop_bootstrap(jitter, n, d, loss, n_bootstrap=30, seed=0)
    assert boot.has_interval and boot.rejected + boot.accepted + boot.failed == 30


def test_rtol_zero_is_exact_grouping():
    budget, n, d, loss = isoflop_grid()
    with pytest.raises(ValueError, match="got 0 of [12][0-9] budgets"):
        fit_isoflop(6 * n * d, n, d, loss, rtol=0.0)


def test_a_three_size_budget_keeps_its_minimum_instead_of_removing_the_interval():
    budget, n, d, loss = isoflop_grid(per_budget=8)
    # The smallest budget keeps only 3 sizes: its parabola is exact in every resample.
    first = budget == budget.min()
    keep = ~first | np.isin(np.arange(budget.size), np.flatnonzero(first)[2:5])
    fit, boot = isoflop.fit_isoflop_bootstrap(budget[keep], n[keep], d[keep], loss[keep],
                                              n_bootstrap=40, seed=0)
    assert fit.budgets.size == 4 and boot.has_interval
    assert "1e+17 (3 sizes)" in boot.caveat and "leaves out their uncertainty" in boot.caveat
    low, high = boot.intervals()["a"]
    assert low <= fit.a <= high
