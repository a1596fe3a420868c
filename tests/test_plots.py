"""draw_study writes every supported figure as PNG and SVG, without a display."""

import matplotlib
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
                   "moe_frontiers"):
        assert {f"{figure}.png", f"{figure}.svg"} <= names
    for path in paths:
        assert path.parent == out and path.stat().st_size > 1000
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
