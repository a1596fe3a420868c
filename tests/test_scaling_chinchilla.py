"""Chinchilla Approach 3: Epoch AI's refit of the published points, synthetic recovery, bad input."""

import pathlib

import numpy as np
import pandas as pd
import pytest

from neoscale.scaling import chinchilla, fit_chinchilla, fit_chinchilla_bootstrap
from neoscale.scaling.synthetic import TRUE_LAW, law_loss

DATA = pathlib.Path(__file__).parent / "data" / "chinchilla_fig4_epoch_extracted.csv"


def epoch_points():
    """Epoch AI's choice: D = FLOP / (6 N), the 5 highest-loss rows dropped."""
    table = pd.read_csv(DATA).sort_values("loss").iloc[:-5]
    n = table["Model Size"].to_numpy()
    return n, table["Training FLOP"].to_numpy() / (6 * n), table["loss"].to_numpy()


@pytest.fixture(scope="module")
def epoch_fit():
    return fit_chinchilla_bootstrap(*epoch_points(), n_bootstrap=200, seed=0)


def test_start_grid_is_the_published_one():
    grid = chinchilla.start_grid()
    assert grid.shape == (5 * 6 * 6 * 5 * 5, 5)
    e, a, b, alpha, beta = grid.T
    assert sorted(set(alpha)) == sorted(set(beta)) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert sorted(set(e)) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert sorted(set(a)) == sorted(set(b)) == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]


def test_reproduces_epoch_refit(epoch_fit):
    fit, boot = epoch_fit
    assert fit.n_points == 240
    assert abs(fit.E - 1.817) < 0.01
    assert abs(fit.alpha - 0.348) < 0.01
    assert abs(fit.beta - 0.366) < 0.015
    lo, hi = chinchilla.EPOCH_INTERVALS["A"]
    assert lo < fit.A < hi
    lo, hi = chinchilla.EPOCH_INTERVALS["B"]
    assert lo < fit.B < hi
    # The bootstrap intervals land close to Epoch's (4000 resamples there, 200 here).
    from neoscale.scaling import percentile_interval

    # 240 points: every resample over-determines the law.
    assert (boot.requested, boot.accepted, boot.rejected, boot.failed) == (200, 200, 0, 0)
    low, high = percentile_interval(boot.samples)
    assert boot.intervals()["alpha"] == pytest.approx([low[3], high[3]])
    for i, name in enumerate(chinchilla.CONSTANTS):
        epoch_lo, epoch_hi = chinchilla.EPOCH_INTERVALS[name]
        width = epoch_hi - epoch_lo
        assert abs(low[i] - epoch_lo) < 0.35 * width, name
        assert abs(high[i] - epoch_hi) < 0.35 * width, name


def test_optimal_allocation_is_consistent(epoch_fit):
    fit, _ = epoch_fit
    assert fit.a == pytest.approx(fit.beta / (fit.alpha + fit.beta))
    assert fit.a + fit.b == pytest.approx(1.0)
    compute = np.array([1e21, 5.76e23])
    n_opt, d_opt = fit.optimal_allocation(compute)
    np.testing.assert_allclose(6 * n_opt * d_opt, compute, rtol=1e-10)
    # The optimum beats its neighbours on the same compute.
    for scale in (0.8, 1.25):
        assert np.all(fit.predict(n_opt * scale, d_opt / scale) > fit.predict(n_opt, d_opt))
    # compute_for_loss inverts the compute-optimal frontier.
    np.testing.assert_allclose(fit.compute_for_loss(fit.optimal_loss(compute)), compute,
                               rtol=1e-8)


def synthetic_points(noise, seed):
    rng = np.random.default_rng(seed)
    n, d = np.meshgrid(np.geomspace(1e7, 1e9, 5), np.geomspace(1e8, 1e11, 6))
    n, d = n.ravel(), d.ravel()
    return n, d, law_loss(n, d) * np.exp(noise * rng.standard_normal(n.size))


def test_recovers_known_constants_from_noisy_synthetic_data():
    fit = fit_chinchilla(*synthetic_points(noise=0.003, seed=1)).constants()
    assert fit["E"] == pytest.approx(TRUE_LAW["E0"], abs=0.05)
    assert fit["alpha"] == pytest.approx(TRUE_LAW["alpha"], abs=0.03)
    assert fit["beta"] == pytest.approx(TRUE_LAW["beta"], abs=0.03)
    assert fit["A"] == pytest.approx(TRUE_LAW["A"], rel=0.5)
    assert fit["B"] == pytest.approx(TRUE_LAW["B"], rel=0.5)


def test_exact_data_gives_exact_constants():
    fit = fit_chinchilla(*synthetic_points(noise=0.0, seed=0))
    for name, true in (("E", 1.8), ("A", 400.0), ("B", 2000.0), ("alpha", 0.34), ("beta", 0.37)):
        assert getattr(fit, name) == pytest.approx(true, rel=1e-3), name


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda n, d, y: (n[:4], d[:4], y[:4]), "at least 5 points"),
        (lambda n, d, y: (np.full_like(n, 1e8), d, y), "distinct n"),
        (lambda n, d, y: (np.where(n > 1e8, 1e9, 1e7), d, y), "at least 3 distinct n"),
        (lambda n, d, y: (n, np.where(np.arange(d.size) == 3, -1.0, d), y), "positive"),
        (lambda n, d, y: (n, d, np.where(np.arange(y.size) == 2, np.inf, y)), "infinite"),
        (lambda n, d, y: (n, d[:-1], y), "different lengths"),
    ],
)
def test_bad_input_is_a_clear_value_error(change, message):
    n, d, loss = synthetic_points(noise=0.0, seed=0)
    with pytest.raises(ValueError, match=message):
        fit_chinchilla(*change(n, d, loss))


def test_nan_rows_are_reported_and_dropped():
    n, d, loss = synthetic_points(noise=0.0, seed=0)
    loss[[0, 7]] = np.nan
    with pytest.warns(UserWarning, match="dropped 2 row"):
        fit = fit_chinchilla(n, d, loss)
    assert fit.n_dropped == 2 and fit.n_points == n.size - 2
    assert fit.constants()["E"] == pytest.approx(1.8, rel=1e-3)


def test_allocation_on_the_runs_own_compute_axis():
    fit = chinchilla.ChinchillaFit(**chinchilla.EPOCH_REFIT)
    # FLOPs per token k·N^s recovered exactly from runs that follow it.
    n = np.geomspace(1e6, 1e9, 7)
    d = 30 * n
    axis = chinchilla.fit_compute_axis(n, d, 5.1 * n**1.04 * d, "test FLOPs")
    assert (axis.k, axis.s) == (pytest.approx(5.1, rel=1e-9), pytest.approx(1.04, rel=1e-12))
    assert axis.max_relative_error < 1e-9 and axis.label == "test FLOPs"
    compute = np.geomspace(1e19, 1e24, 6)
    n_opt, d_opt = fit.optimal_allocation(compute, axis)
    np.testing.assert_allclose(axis.compute(n_opt, d_opt), compute, rtol=1e-10)
    # The optimum beats its neighbours spending the same compute on that axis.
    for scale in (0.9, 1.1):
        other = n_opt * scale
        assert np.all(fit.predict(other, compute / (axis.k * other**axis.s)) > fit.predict(n_opt, d_opt))
    a, b = fit.allocation_exponents(axis)
    assert np.polyfit(np.log(compute), np.log(n_opt), 1)[0] == pytest.approx(a, rel=1e-9)
    assert np.polyfit(np.log(compute), np.log(d_opt), 1)[0] == pytest.approx(b, rel=1e-9)
    assert a == pytest.approx(fit.beta / (fit.alpha + 1.04 * fit.beta))
    # k = 6, s = 1 is Chinchilla's 6·N·D allocation.
    six = chinchilla.fit_compute_axis(n, d, 6 * n * d, "6ND")
    np.testing.assert_allclose(fit.optimal_allocation(compute, six), fit.optimal_allocation(compute),
                               rtol=1e-9)
