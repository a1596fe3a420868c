"""draw_study writes every supported figure as PNG and SVG, without a display."""

import copy

import matplotlib
import matplotlib.contour
import matplotlib.pyplot
import numpy as np
import pytest

from neoscale import plots
from neoscale.scaling import fit_study
from neoscale.scaling import results as results_lib
from neoscale.scaling.synthetic import synthetic_study


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    results, curves = synthetic_study(moe_experts=(8,), seed=1)
    fit = fit_study(results, curves=curves, n_bootstrap=10)
    out = tmp_path_factory.mktemp("plots")
    return out, plots.draw_study(results, fit, out, curves=curves), results, fit


def test_uses_the_agg_backend():
    assert matplotlib.get_backend().lower() == "agg"


def test_every_figure_is_written_as_png_and_svg(drawn):
    out, paths, _, _ = drawn
    names = {p.name for p in paths}
    for figure in ("loss_vs_compute", "loss_vs_tokens", "isoflop", "optimal_allocation",
                   "approach3", "moe_frontiers"):
        assert {f"{figure}.png", f"{figure}.svg"} <= names
    for path in paths:
        assert path.parent == out and len(path.read_bytes()) > 1000
    assert (out / "isoflop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "isoflop.svg").read_bytes()[:1000]


def test_size_colours_are_consistent_and_ordered():
    colors = plots.size_colors(np.array([4e7, 1e7, 2e7, 1e7]))
    assert list(colors) == [1e7, 2e7, 4e7]
    assert plots.size_colors(np.array([1e7, 2e7, 4e7])) == colors
    assert len(set(colors.values())) == 3


def test_figures_the_data_cannot_support_are_left_out(tmp_path):
    results, _ = synthetic_study(budgets=(1e16, 1e17, 1e18), sizes_per_budget=1, moe_experts=())
    fit = fit_study(results, n_bootstrap=0)
    names = {p.stem for p in plots.draw_study(results, fit, tmp_path)}
    assert names == {"loss_vs_compute", "loss_vs_tokens"}


def test_every_compute_axis_is_labelled_with_the_fits_one_axis(drawn):
    _, _, results, fit = drawn
    points, _ = results_lib.final_points(results)
    colors = plots.size_colors(points["params_active"])
    label = fit["compute_label"]
    assert "neoscale" in label
    assert plots.loss_vs_compute(points, fit, colors).axes[0].get_xlabel() == label
    assert {ax.get_xlabel() for ax in plots.optimal_allocation(fit).axes} == {label}
    assert plots.moe_frontiers(points, fit).axes[0].get_xlabel() == label
    matplotlib.pyplot.close("all")


def test_approach3_is_drawn_only_when_its_law_is_fitted(drawn, tmp_path):
    _, _, results, fit = drawn
    assert fit["laws"]["chinchilla_approach3"]["status"] == "fitted"
    skipped = {"laws": {"chinchilla_approach3": {"status": "skipped", "reason": "too few points"}}}
    names = {p.name for p in plots.draw_study(results, skipped, tmp_path)}
    assert names == {"loss_vs_compute.png", "loss_vs_compute.svg", "loss_vs_tokens.png", "loss_vs_tokens.svg"}


def test_approach3_frontier_spends_exactly_the_compute():
    allocation = {"n_opt_at_1": 137.46, "a": 0.196, "flops_per_token": {"k": 6.07, "s": 1.0008}}
    compute = np.geomspace(1e10, 1e24, 15)
    n_opt, d_opt = plots.compute_optimal_frontier(allocation, compute)
    np.testing.assert_allclose(n_opt, 137.46 * compute**0.196, rtol=1e-12)
    np.testing.assert_allclose(6.07 * n_opt**1.0008 * d_opt, compute, rtol=1e-9)


def test_approach3_contours_lie_on_the_fitted_loss(drawn):
    _, _, results, fit = drawn
    law = fit["laws"]["chinchilla_approach3"]
    c = law["constants"]
    assert plots.chinchilla_loss(c, 1e8, 2e9) == pytest.approx(
        c["E"] + c["A"] / 1e8 ** c["alpha"] + c["B"] / 2e9 ** c["beta"], rel=1e-12
    )
    points, _ = results_lib.final_points(results)
    fig = plots.chinchilla_approach3(points, fit, plots.size_colors(points["params_active"]))
    contours, predicted = fig.axes[0], fig.axes[1]
    lines = [s for s in contours.collections if isinstance(s, matplotlib.contour.ContourSet)][-1]
    assert 3 <= len(lines.levels) <= 9
    for level, path in zip(lines.levels, lines.get_paths(), strict=True):
        n, d = path.vertices.T
        np.testing.assert_allclose(plots.chinchilla_loss(c, n, d), level, rtol=1e-3)
    held = law["extrapolation"]
    label = next(t for t in predicted.get_legend_handles_labels()[1] if "extrapolation error" in t)
    assert f"{100 * held['relative_error']:.1f}%" in label
    assert contours.get_xlabel() == "parameters N" and contours.get_ylabel() == "training tokens D"
    matplotlib.pyplot.close("all")


def test_approach3_without_extrapolation_and_with_e_at_its_bound(drawn):
    _, _, results, fit = drawn
    fit = copy.deepcopy(fit)
    law = fit["laws"]["chinchilla_approach3"]
    law["extrapolation"] = {"status": "skipped", "reason": "too few sizes"}
    law["irreducible_loss"] = {"identified": False, "note": "E at its bound 0"}
    points, _ = results_lib.final_points(results)
    fig = plots.chinchilla_approach3(points, fit, plots.size_colors(points["params_active"]))
    predicted = fig.axes[1]
    assert not any("extrapolation" in t for t in predicted.get_legend_handles_labels()[1])
    assert "E not identified (at its bound)" in [t.get_text() for t in predicted.texts]
    matplotlib.pyplot.close("all")


def test_loss_vs_compute_draws_the_pure_law_when_E_is_not_identified(drawn):
    """The figure shows the form the report reads: A·C^-α through its forecasts, not an E at 0."""
    _, _, results, fit = drawn
    points, _ = results_lib.final_points(results)
    colors = plots.size_colors(points["params_active"])
    unidentified = copy.deepcopy(fit)
    law = unidentified["laws"]["loss_vs_compute"]
    law["irreducible_loss"] = {"identified": False, "note": "E at its bound"}
    ax = plots.loss_vs_compute(points, unidentified, colors).axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.startswith("fit A·C^-α (E not identified)") for label in labels)
    assert not any(label.startswith("fit E + A·C^-α") for label in labels)
    dashed = next(line for line in ax.get_lines()
                  if line.get_label() == "extrapolation, 95% prediction intervals")
    for p in law["predictions"]:  # the drawn curve passes through each pure-law forecast
        np.testing.assert_allclose(np.interp(np.log(p["compute"]), np.log(dashed.get_xdata()),
                                             np.log(dashed.get_ydata())),
                                   np.log(p["pure_power_law"]["loss"]), rtol=0, atol=2e-3)
    identified = plots.loss_vs_compute(points, fit, colors).axes[0]
    assert any(line.get_label().startswith("fit E + A·C^-α") for line in identified.get_lines())
    matplotlib.pyplot.close("all")
