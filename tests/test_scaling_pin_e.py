"""Pinning the irreducible loss E when a study cannot identify it."""

import numpy as np
import pytest

from neoscale.report import fits_section
from neoscale.scaling import chinchilla, fit_study, power_law
from neoscale.scaling.synthetic import TRUE_LAW, synthetic_study


def test_pinned_power_law_recovers_the_other_constants_and_needs_one_point_less():
    compute = np.geomspace(1e15, 1e18, 4)
    loss = 1.7 + 50.0 * compute**-0.12
    free, free_boot = power_law.fit_power_law_bootstrap(compute, loss, n_bootstrap=40)
    pinned, boot = power_law.fit_power_law_bootstrap(compute, loss, n_bootstrap=40, fixed_E=1.7)
    assert pinned.E == 1.7
    assert pytest.approx(50.0, rel=1e-4) == pinned.A and pinned.alpha == pytest.approx(0.12, rel=1e-4)
    # 4 distinct points: 3 free constants leave an interval, 2 (E pinned) do.
    assert not free_boot.has_interval and "4 distinct points for 3 constants" in free_boot.note
    assert boot.has_interval
    np.testing.assert_allclose(boot.samples[:, 0], 1.7)  # E never moves in the refits


def test_pinned_chinchilla_recovers_the_published_law():
    n = np.repeat(np.geomspace(1e7, 1e9, 5), 3)
    d = np.tile(np.geomspace(1e8, 1e10, 3), 5)
    published = chinchilla.PUBLISHED
    loss = published["E"] + published["A"] / n ** published["alpha"] + published["B"] / d ** published["beta"]
    fit = chinchilla.fit_chinchilla(n, d, loss, starts=chinchilla.coarse_start_grid(), fixed_E=1.69)
    for name, value in published.items():
        assert fit.constants()[name] == pytest.approx(value, rel=1e-3), name
    wrong = chinchilla.fit_chinchilla(n, d, loss, starts=chinchilla.coarse_start_grid(), fixed_E=1.5)
    assert wrong.E == 1.5 and wrong.alpha < published["alpha"]  # the other constants absorb it


def test_pinned_E_above_a_loss_is_a_clear_error():
    compute = np.geomspace(1e15, 1e18, 6)
    with pytest.raises(ValueError, match="pinned E = 9 must be positive and below every loss"):
        power_law.fit_power_law(compute, 2.0 + compute**-0.1, fixed_E=9.0)


def test_fit_study_pins_E_in_every_single_family_law_and_says_so():
    results, _ = synthetic_study(budgets=(1e16, 1e17, 1e18), sizes_per_budget=5, moe_experts=(),
                                 noise=0.0)
    fit = fit_study(results, n_bootstrap=30, pin_E=TRUE_LAW["E0"])
    assert fit["pinned_E"] == TRUE_LAW["E0"]
    approach3 = fit["laws"]["chinchilla_approach3"]
    assert approach3["E_pinned"] and approach3["constants"]["E"] == TRUE_LAW["E0"]
    for name in ("A", "B", "alpha", "beta"):
        assert approach3["constants"][name] == pytest.approx(TRUE_LAW[name], rel=1e-3), name
    assert "E" not in (approach3["intervals"] or {})
    assert fit["laws"]["loss_vs_compute"]["constants"]["E"] == TRUE_LAW["E0"]
    assert approach3["irreducible_loss"]["pinned"]
    section = fits_section(fit)
    assert section.count(f"E is pinned at {TRUE_LAW['E0']:.4g}") == 2
