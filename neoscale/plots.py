"""Figures of a study's scaling laws (matplotlib, Agg backend: no display needed).

Every figure is written as PNG and SVG. Each parameter count keeps one colour across figures
(`size_colors`), so a run can be followed from figure to figure.
"""

from __future__ import annotations

import io

import matplotlib
from etils import epath

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from neoscale.scaling import chinchilla, curve_law, isoflop, ladder_law  # noqa: E402
from neoscale.scaling import results as results_lib  # noqa: E402
from neoscale.scaling.points import law_family  # noqa: E402
from neoscale.scaling.study.backtest import backtest_form  # noqa: E402

_EXPERT_MARKERS = "os^Dvp*h"


def size_colors(params: np.ndarray) -> dict[float, tuple]:
    """Parameter count -> colour (viridis over log N, smallest dark, largest light)."""
    sizes = np.unique(np.asarray(params, np.float64))
    cmap = plt.get_cmap("viridis")
    if sizes.size == 1:
        return {float(sizes[0]): cmap(0.5)}
    logs = np.log(sizes)
    return {
        float(s): cmap(0.9 * (v - logs[0]) / (logs[-1] - logs[0])) for s, v in zip(sizes, logs, strict=True)
    }


def _label_n(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def _save(fig, out_dir: epath.Path, name: str) -> list[epath.Path]:
    """``name``.png and .svg in ``out_dir`` (a local path or a bucket's: gs://...)."""
    paths = []
    for ext in ("png", "svg"):
        path = out_dir / f"{name}.{ext}"
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight")
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def _legend(ax, title=None):
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(
        unique.values(),
        unique.keys(),
        fontsize=7,
        title=title,
        title_fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
    )


def _scatter_by_size(ax, points, x: str, y: str, colors, *, size: float, edge_width: float):
    """Columns ``x`` against ``y`` of ``points``, one labelled, coloured series per size."""
    for n, group in points.groupby("params_active"):
        ax.scatter(group[x], group[y], color=colors[n], s=size, zorder=3, edgecolor="k",
                   linewidth=edge_width, label=f"N = {_label_n(n)}")


def _plain_loss_axis(ax):
    """Log-scale loss axis with plain tick labels (2, 3, 4 rather than 2×10⁰)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))


def _compute_label(fit: dict) -> str:
    """The x label of every compute axis: the one axis all fits share (fit.json's compute_label)."""
    return fit.get("compute_label", "training compute C (FLOPs)")


def _fitted(fit: dict, key: str) -> dict | None:
    law = fit.get("laws", {}).get(key, {})
    return law if law.get("status") == "fitted" else None


def loss_vs_compute(points, fit, colors, curves=None):
    """Loss against compute: curves, final points, fitted frontier with band and extrapolation."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dense = points[points["num_experts"] == points["num_experts"].min()]
    runs_n = dict(zip(points["run"], points["params_active"], strict=True))
    for run, df in (curves or {}).items():
        if run in runs_n and {"flops", "loss"} <= set(df.columns) and run in set(dense["run"]):
            ax.plot(df["flops"], df["loss"], color=colors[runs_n[run]], alpha=0.35, lw=0.8)
    _scatter_by_size(ax, dense, "flops", "eval_loss", colors, size=18, edge_width=0.3)
    law = _fitted(fit, "loss_vs_compute")
    if law and law.get("irreducible_loss", {}).get("identified") is False:
        _pure_power_law(ax, law, dense)  # the form the report reads: E at its bound says nothing
    elif law:
        band = law["frontier"]
        grid, curve = np.array(band["compute"]), np.array(band["loss"], float)
        inside = grid <= dense["flops"].max() * 1.0001
        c = law["constants"]
        text = f"fit E + A·C^-α: E={c['E']:.3g}, α={c['alpha']:.3g}"
        ax.plot(grid[inside], curve[inside], "k-", lw=1.5, label=text)
        ax.plot(grid[~inside], curve[~inside], "k--", lw=1.2, label="extrapolation (to 100×)")
        if "lower" in band:
            ax.fill_between(
                grid,
                np.array(band["lower"], float),
                np.array(band["upper"], float),
                color="k",
                alpha=0.12,
                label="95% bootstrap band (mean law)",
            )
        if band.get("prediction_lower") is not None:
            for edge in ("prediction_lower", "prediction_upper"):
                ax.plot(grid, np.array(band[edge], float), color="k", lw=0.7, ls=":",
                        label="95% prediction interval" if edge == "prediction_lower" else None)
    _ladder_law(ax, _fitted(fit, "ladder_law"), dense)
    ax.set_xscale("log")
    _plain_loss_axis(ax)
    ax.set_xlabel(_compute_label(fit))
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Loss against compute")
    _legend(ax)
    return fig


def _pure_power_law(ax, law: dict, dense) -> None:
    """L(C)'s pure power law A·C^-α, the form to read when E is not identified, extrapolated to
    its last forecast with each forecast's 95% prediction interval."""
    c = law["pure_power_law"]["constants"]
    grid = np.array(law["frontier"]["compute"], float)
    curve = c["A"] * grid ** -c["alpha"]
    inside = grid <= dense["flops"].max() * 1.0001
    ax.plot(grid[inside], curve[inside], "k-", lw=1.5,
            label=f"fit A·C^-α (E not identified): α={c['alpha']:.3g}")
    ax.plot(grid[~inside], curve[~inside], "k--", lw=1.2,
            label="extrapolation, 95% prediction intervals")
    _forecast_bars(ax, [(p["compute"], p["pure_power_law"]) for p in law["predictions"]], "k")


def _forecast_bars(ax, forecasts, color) -> None:
    """A point and 95% prediction-interval bar for each (compute, forecast) that has one."""
    for compute, forecast in forecasts:
        if forecast.get("prediction_interval"):
            low, high = forecast["prediction_interval"]
            loss = forecast["loss"]
            ax.errorbar([compute], [loss], yerr=[[loss - low], [high - loss]], color=color,
                        capsize=3, lw=1, fmt="o", ms=3)


def _ladder_law(ax, law: dict | None, dense) -> None:
    """The ladder entry's form to read through the main runs, extrapolated to its last forecast,
    with each forecast's 95% prediction interval and the context-free loss H of the ladder's forms."""
    if not law:
        return
    read = law.get("form_to_read") or "pure"
    form = law["forms"][read] if "forms" in law else law
    c = form["constants"]
    grid = np.geomspace(dense["flops"].min(), max(p["compute"] for p in form["predictions"]), 80)
    if read == "power_law":
        curve = c["E"] + c["A"] * grid ** -c["alpha"]
    else:
        row = [c["E"], c["A"], c["alpha"]] if read == "floor" else [c["A"], c["alpha"]]
        curve = ladder_law.predict(np.array([row]), c["H"], grid, read)[0]
    inside = grid <= dense["flops"].max() * 1.0001
    ax.plot(grid[inside], curve[inside], color="tab:blue", lw=1.5,
            label=f"ladder runs, form to read ({read}) {form['form']}: α={c['alpha']:.3g}")
    bands = any(p.get("prediction_interval") for p in form["predictions"])
    ax.plot(grid[~inside], curve[~inside], color="tab:blue", ls="--", lw=1.2,
            label=f"{read} extrapolated, " + ("95% prediction intervals" if bands
                                               else "no interval (unverified)"))
    _forecast_bars(ax, [(p["compute"], p) for p in form["predictions"]], "tab:blue")
    h = law["constants"]["H"]
    ax.axhline(h, color="tab:blue", lw=0.7, ls=":", label=f"H = {h:.3g}: context-free loss")


def isoflop_curves(points, fit, colors):
    law = _fitted(fit, "isoflop_approach2")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap = plt.get_cmap("plasma")
    budgets = np.array(law["budgets"])
    snapped = isoflop.snap_budgets(points["budget_flops"])[0]  # as the fit grouped them
    for i, (c, parabola) in enumerate(zip(budgets, law["parabolas_ln_n"], strict=True)):
        shade = cmap(0.85 * i / max(1, budgets.size - 1))
        at = points[np.isclose(snapped, c, rtol=1e-9)]
        ax.scatter(
            at["params_active"],
            at["eval_loss"],
            color=[colors[n] for n in at["params_active"]],
            edgecolor=shade,
            linewidth=1.2,
            s=30,
            zorder=3,
        )
        x = np.linspace(np.log(at["params_active"].min()) - 0.3, np.log(at["params_active"].max()) + 0.3, 100)
        ax.plot(np.exp(x), np.polyval(parabola, x), color=shade, label=f"C = {c:.2g} FLOPs")
        ax.plot(law["n_opt"][i], law["loss_opt"][i], marker="*", color=shade, ms=12, mec="k", zorder=4)
    ax.plot([], [], "k*", ms=10, ls="", label="parabola minimum N_opt(C)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final loss (nats/token)")
    ax.set_title("IsoFLOP curves (Approach 2)")
    _legend(ax, "budget")
    return fig


def optimal_allocation(fit):
    """N_opt and D_opt against compute for every approach that was fitted."""
    fig, (ax_n, ax_d) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    styles = {
        "isoflop_approach2": ("Approach 2", "tab:blue", "o"),
        "envelope_approach1": ("Approach 1", "tab:orange", "s"),
    }
    spans = []
    for key, (name, color, marker) in styles.items():
        law = _fitted(fit, key)
        if not law:
            continue
        compute = np.array(law.get("budgets", law.get("compute")), float)
        spans.append(compute)
        k = law["constants"]
        line = np.geomspace(compute.min(), compute.max() * 100, 50)
        for ax, opt, exp_key, log_k in ((ax_n, "n_opt", "a", "log_k_n"), (ax_d, "d_opt", "b", "log_k_d")):
            ax.scatter(compute, law[opt], color=color, marker=marker, s=18)
            ax.plot(
                line,
                np.exp(k[log_k]) * line ** k[exp_key],
                color=color,
                label=f"{name}: ∝ C^{k[exp_key]:.3f}",
            )
    law3 = _fitted(fit, "chinchilla_approach3")
    if law3 and spans:  # on the same compute axis, through the runs' FLOPs per token k·N^s
        allocation = law3["allocation"]
        line = np.geomspace(min(s.min() for s in spans), max(s.max() for s in spans) * 100, 50)
        n_opt, d_opt = compute_optimal_frontier(allocation, line)
        ax_n.plot(line, n_opt, "g--", label=f"Approach 3: ∝ C^{allocation['a']:.3f}")
        ax_d.plot(line, d_opt, "g--", label=f"Approach 3: ∝ C^{allocation['b']:.3f}")
    for ax, what in ((ax_n, "compute-optimal parameters N_opt"), (ax_d, "compute-optimal tokens D_opt")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(_compute_label(fit))
        ax.set_ylabel(what)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Compute-optimal allocation")
    return fig


def moe_frontiers(points, fit):
    law = _fitted(fit, "moe")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap = plt.get_cmap("tab10")
    for i, (e, group) in enumerate(points.groupby("num_experts")):
        color = cmap(i)
        name = "dense" if e == 1 else f"{int(e)} experts"
        ax.scatter(
            group["flops"],
            group["eval_loss"],
            color=color,
            s=20,
            marker=_EXPERT_MARKERS[i % len(_EXPERT_MARKERS)],
            label=f"{name} (final points)",
        )
        frontier = law["frontiers"].get(str(int(e)), {})
        if frontier.get("status") == "fitted":
            c = frontier["constants"]
            grid = np.geomspace(group["flops"].min(), group["flops"].max() * 10, 50)
            ax.plot(
                grid,
                c["E"] + c["A"] * grid ** -c["alpha"],
                color=color,
                label=f"{name}: α = {c['alpha']:.3f}",
            )
    saving = law.get("chinchilla_form", {}).get("compute_saving", {})
    if saving:
        note = ", ".join(f"E={e}: {s:.2g}×" for e, s in saving.items() if e != "1" and s is not None)
        text = f"compute (6·N_active·D) saving at equal loss: {note}"
        ax.text(0.02, 0.03, text, transform=ax.transAxes, fontsize=7)
    ax.set_xscale("log")
    _plain_loss_axis(ax)
    ax.set_xlabel(_compute_label(fit))
    ax.set_ylabel("final loss (nats/token)")
    ax.set_title("Dense against mixture-of-experts frontiers")
    _legend(ax)
    return fig


def loss_vs_tokens(points, all_rows, colors, curves=None):
    """Loss against tokens, one colour per size (curves if given, else evaluation rows)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    runs_n = dict(zip(points["run"], points["params_active"], strict=True))
    for run, n in runs_n.items():
        df = (curves or {}).get(run)
        if df is not None and {"tokens", "loss"} <= set(df.columns):
            ax.plot(df["tokens"], df["loss"], color=colors[n], lw=0.9, alpha=0.8, label=f"N = {_label_n(n)}")
        else:
            rows = all_rows[all_rows["run"] == run].sort_values("tokens")
            ax.plot(
                rows["tokens"], rows["eval_loss"], "-o", ms=3, color=colors[n], label=f"N = {_label_n(n)}"
            )
    ax.scatter(
        points["tokens"],
        points["eval_loss"],
        c=[colors[n] for n in points["params_active"]],
        s=14,
        edgecolor="k",
        linewidth=0.3,
        zorder=3,
    )
    ax.set_xscale("log")
    _plain_loss_axis(ax)
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Loss against tokens")
    _legend(ax)
    return fig


def chinchilla_loss(constants: dict, n, d) -> np.ndarray:
    """Approach 3's law L(N, D) = E + A/N^alpha + B/D^beta (fit.json's constants) at ``n``, ``d``."""
    return chinchilla.ChinchillaFit(**constants).predict(n, d)


def compute_optimal_frontier(allocation: dict, compute) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt) at ``compute`` on the study's compute axis: N_opt = n_opt_at_1·C^a and
    D_opt = C/(k·N_opt^s), so that k·N_opt^s·D_opt = C (fit.json's allocation of Approach 3)."""
    compute = np.asarray(compute, np.float64)
    per_token = allocation["flops_per_token"]
    n_opt = allocation["n_opt_at_1"] * compute ** allocation["a"]
    return n_opt, compute / (per_token["k"] * n_opt ** per_token["s"])


def _panel_span(values, frontier) -> tuple[float, float]:
    """Log axis limits: the points from 0.5x to 10x, widened to the compute-optimal frontier over
    the points' compute range (at most 100x further out, so a wild fit cannot hide the points)."""
    lo, hi = 0.5 * np.min(values), 10 * np.max(values)
    inside = np.clip(frontier, lo / 100, hi * 100)
    return min(lo, 0.7 * inside.min()), max(hi, 1.4 * inside.max())


def _iso_loss_panel(ax, family, law, colors):
    """Iso-loss contours of L(N, D), the runs, the compute-optimal frontier and iso-FLOP lines."""
    allocation = law["allocation"]
    per_token = allocation["flops_per_token"]
    n_span, d_span = compute_optimal_frontier(
        allocation, np.geomspace(family["flops"].min(), family["flops"].max(), 20)
    )
    n_lim, d_lim = _panel_span(family["params_active"], n_span), _panel_span(family["tokens"], d_span)
    n_grid, d_grid = np.meshgrid(np.geomspace(*n_lim, 120), np.geomspace(*d_lim, 120))
    loss = chinchilla_loss(law["constants"], n_grid, d_grid)
    lo, hi = np.quantile(loss, [0.03, 0.97])
    levels = matplotlib.ticker.MaxNLocator(nbins=7).tick_values(lo, hi)
    levels = levels[(levels > lo) & (levels < hi)]
    ax.contourf(n_grid, d_grid, loss, levels=np.r_[loss.min(), levels, loss.max()], cmap="Greys_r", alpha=0.2)
    lines = ax.contour(n_grid, d_grid, loss, levels=levels, colors="k", linewidths=0.6)
    ax.clabel(lines, fmt="%g", fontsize=7)
    c_lim = (
        per_token["k"] * n_lim[0] ** per_token["s"] * d_lim[0],
        per_token["k"] * n_lim[1] ** per_token["s"] * d_lim[1],
    )
    n_line = np.geomspace(*n_lim, 200)
    decades = 10.0 ** np.arange(np.ceil(np.log10(c_lim[0])), np.floor(np.log10(c_lim[1])) + 1)
    decades = decades[:: max(1, int(np.ceil(decades.size / 5)))]
    for c in decades:
        d_line = c / (per_token["k"] * n_line ** per_token["s"])
        ax.plot(n_line, d_line, color="0.45", ls="--", lw=0.8)
        visible = np.flatnonzero((d_line > d_lim[0]) & (d_line < d_lim[1]))
        if visible.size >= n_line.size // 10:  # labelled three quarters along its visible part
            at = visible[3 * visible.size // 4]
            ax.text(n_line[at], d_line[at], f" {c:.0e}", color="0.3", fontsize=6, va="bottom", clip_on=True)
    if decades.size:
        ax.plot([], [], color="0.45", ls="--", lw=0.8, label="iso-FLOP lines (C in FLOPs)")
    n_opt, d_opt = compute_optimal_frontier(allocation, np.geomspace(*c_lim, 200))
    label = f"compute-optimal: N ∝ C^{allocation['a']:.3f}, D ∝ C^{allocation['b']:.3f}"
    inside = (n_opt >= n_lim[0]) & (n_opt <= n_lim[1]) & (d_opt >= d_lim[0]) & (d_opt <= d_lim[1])
    if not inside.any():  # a wild fit: say where the frontier is instead of drawing it nowhere
        label += f"\n(off this panel: N_opt = {_label_n(n_opt.min())}–{_label_n(n_opt.max())})"
    ax.plot(n_opt, d_opt, color="tab:red", lw=1.6, label=label)
    _scatter_by_size(ax, family, "params_active", "tokens", colors, size=22, edge_width=0.4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*n_lim)
    ax.set_ylim(*d_lim)
    ax.set_xlabel("parameters N")
    ax.set_ylabel("training tokens D")
    ax.set_title("iso-loss contours (nats/token)", fontsize=10)
    _legend(ax)


def _predicted_panel(ax, family, law, colors):
    """Measured held-out loss against the law's prediction, and the extrapolation check."""
    predicted = chinchilla_loss(law["constants"], family["params_active"], family["tokens"])
    ax.scatter(
        predicted,
        family["eval_loss"],
        color=[colors[n] for n in family["params_active"]],
        s=22,
        zorder=3,
        edgecolor="k",
        linewidth=0.4,
    )
    ax.scatter([], [], color="0.7", s=22, edgecolor="k", linewidth=0.4, label="runs, law fitted on all sizes")
    values = [predicted, family["eval_loss"].to_numpy()]
    extrapolation = law.get("extrapolation") or {}
    if extrapolation.get("predicted"):
        held_x = np.asarray(extrapolation["predicted"], float)
        held_y = np.asarray(extrapolation["actual"], float)
        values += [held_x, held_y]
        ax.scatter(
            held_x,
            held_y,
            marker="*",
            color="tab:red",
            s=90,
            zorder=4,
            edgecolor="k",
            linewidth=0.4,
            label=f"{extrapolation['held_out']},\npredicted by the law fitted without it\n"
            f"(extrapolation error {100 * extrapolation['relative_error']:.1f}%)",
        )
    lo, hi = min(v.min() for v in values), max(v.max() for v in values)
    margin = 0.05 * (hi - lo)
    lim = (lo - margin, hi + margin)
    ax.plot(lim, lim, color="0.4", lw=0.8, label="measured = predicted")
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_aspect("equal")
    if law.get("irreducible_loss", {}).get("identified") is False:
        ax.text(0.97, 0.03, "E not identified (at its bound)", transform=ax.transAxes, ha="right", fontsize=7)
    ax.set_xlabel("loss predicted by L(N, D) (nats/token)")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("measured against predicted", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")


def chinchilla_approach3(points, fit, colors):
    """Approach 3's L(N, D): iso-loss contours with the compute-optimal frontier, and the fit's
    predictions against the measured losses (with the held-out largest size)."""
    law = _fitted(fit, "chinchilla_approach3")
    family, _ = law_family(points)
    fig, (ax_contour, ax_fit) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    _iso_loss_panel(ax_contour, family, law, colors)
    _predicted_panel(ax_fit, family, law, colors)
    c = law["constants"]
    fitted = f"α = {c['alpha']:.3f}, β = {c['beta']:.3f}"
    if law.get("irreducible_loss", {}).get("identified") is not False:  # an E at its bound is not quoted
        fitted += f", E = {c['E']:.3g}"
    fig.suptitle(f"Approach 3: L(N, D) = E + A/N^α + B/D^β  ({fitted})")
    return fig


def rollout_backtest(fit: dict):
    """Relative error of each law's prediction of every larger size, one line per k (the number
    of smallest sizes it was fitted on); None when no law has a backtest."""
    laws = {k: v for k, v in fit["laws"].items()
            if v.get("status") == "fitted" and (v.get("backtest") or {}).get("status") == "fitted"}
    if not laws:
        return None
    titles = {"loss_vs_compute": "L(C)", "ladder_law": "ladder law", "chinchilla_approach3": "Approach 3"}
    fig, axes = plt.subplots(1, len(laws), figsize=(5.5 * len(laws), 4), layout="constrained",
                             squeeze=False)
    for ax, (key, law) in zip(axes[0], laws.items(), strict=True):
        form = backtest_form(law)
        rounds = [r for r in law["backtest"]["rounds"] if r["status"] == "fitted"]
        cmap = plt.get_cmap("viridis")
        for i, r in enumerate(rounds):
            n = [p["N"] for p in r["predictions"]]
            err = [100 * p["relative_error"][form] for p in r["predictions"]]
            ax.plot(n, err, "o-", color=cmap(0.85 * i / max(1, len(rounds) - 1)),
                    label=f"k = {r['k']} (N ≤ {_label_n(r['train_sizes'][-1])})")
        ax.set_xscale("log")
        ax.set_xlabel("held-out size N (parameters)")
        ax.set_ylabel("relative error of the predicted loss (%)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{titles.get(key, key)}: fit on the smallest k sizes")
        _legend(ax, "fitted on")
    fig.suptitle("Rollout backtest")
    return fig


def compute_multiplier(comparison: dict):
    """Compute multiplier of each variant over the baseline against the baseline's compute, with
    its 95% band (neoscale.scaling.multiplier): solid where both laws are inside their data,
    dashed where either extrapolates.

    comparison: {"baseline": name, "comparisons": {name: multiplier.compare() result}}.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap = plt.get_cmap("tab10")
    shown = [1.0]  # every multiplier and band end drawn, to frame a log axis
    for i, (name, result) in enumerate(comparison["comparisons"].items()):
        rows = result["by_compute"]
        c = np.array([r["compute"] for r in rows], float)
        m = np.array([np.nan if r["multiplier"] is None else r["multiplier"] for r in rows], float)
        outside = np.array([r["extrapolates"]["A"] or r["extrapolates"]["B"] for r in rows])
        dashed = outside | np.r_[outside[1:], False] | np.r_[False, outside[:-1]]  # joins the pieces
        ax.plot(c, np.where(outside, np.nan, m), "-", color=cmap(i), lw=1.6, label=f"{name}")
        ax.plot(c, np.where(dashed, m, np.nan), "--", color=cmap(i), lw=1.2)
        shown += list(m)
        if rows[0]["interval"] is not None:
            band = np.array([[np.nan if v is None else v for v in r["interval"]] for r in rows], float)
            ax.fill_between(c, band[:, 0], band[:, 1], color=cmap(i), alpha=0.15)
            shown += list(band.ravel())
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    shown = np.array(shown)
    shown = shown[np.isfinite(shown) & (shown > 0)]
    ax.set_yscale("log")
    ax.set_ylim(shown.min() / 1.25, shown.max() * 1.25)  # a band down to 0 runs off the bottom
    ax.set_xlabel(f"compute of the baseline {comparison['baseline']!r} C (FLOPs)")
    ax.set_ylabel("multiplier C_A(L) / C_B(L) at A's loss L(C)")
    ax.set_title("Compute multiplier at equal loss (> 1: less compute than the baseline)\n"
                 "shaded: 95% paired bootstrap band; dashed: extrapolated", fontsize=9)
    _legend(ax, f"vs {comparison['baseline']}")
    return fig


def lr_annealing_curves(law: dict, runs):
    """Each size's main-run evaluations (dots) with its fitted law (line), and each branch's
    predicted curve (dotted) and final loss (x) against its actual (o); None when not fitted."""
    if law.get("status") != "fitted":
        return None
    table = results_lib.validate(runs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(law["constants"])))
    for color, (size, c) in zip(colors, law["constants"].items(), strict=True):
        fitted = curve_law.law_of(c)
        for i, (run, described) in enumerate(c["runs"].items()):
            schedule = curve_law.Schedule(**described)
            evals = curve_law.evaluations(table, run)
            ax.plot(evals["step"], evals["eval_loss"], "o", ms=3.5, color=color,
                    label=size if i == 0 else None)
            steps = np.arange(schedule.warmup_steps + 1, schedule.steps + 1)
            ax.plot(steps, curve_law.at_steps(fitted.curve(schedule), steps), "-", lw=1, color=color)
        for b in (b for b in law["branch_predictions"] if b["size"] == size):
            steps = np.arange(b["fork_step"], b["steps"] + 1)
            branch = curve_law.Schedule(**b["schedule"])
            ax.plot(steps, curve_law.at_steps(fitted.curve(branch), steps), ":", lw=1, color=color)
            ax.plot(b["steps"], b["actual"], "o", ms=7, mfc="none", color=color)
            ax.plot(b["steps"], b["predicted"], "x", ms=7, color=color)
    ax.plot([], [], "o", ms=7, mfc="none", color="gray", label="branch: actual")
    ax.plot([], [], "x", ms=7, color="gray", label="branch: predicted")
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("eval loss (nats/token)")
    title = "LR-annealing law (Tissue et al. 2024) fitted on the main runs"
    if law["summary"]["mean_relative_error"] is not None:
        title += (f"\ncooldown branches' final losses: "
                  f"{100 * law['summary']['mean_relative_error']:.2f}% mean error")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_multiplier(comparison: dict, out_dir) -> list[epath.Path]:
    """multiplier.png and .svg of `compute_multiplier` in out_dir; returns the paths."""
    return _save(compute_multiplier(comparison), epath.Path(out_dir), "multiplier")


def draw_study(results, fit: dict, out_dir, *, curves=None) -> list[epath.Path]:
    """Writes PNG and SVG of every figure the data and fit support; returns the paths."""
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_rows = results_lib.validate(results)
    points, _ = results_lib.final_points(all_rows)
    if points.empty:
        return []
    colors = size_colors(points["params_active"])
    paths = _save(loss_vs_compute(points, fit, colors, curves), out_dir, "loss_vs_compute")
    paths += _save(loss_vs_tokens(points, all_rows, colors, curves), out_dir, "loss_vs_tokens")
    if _fitted(fit, "isoflop_approach2"):
        paths += _save(isoflop_curves(points, fit, colors), out_dir, "isoflop")
    if _fitted(fit, "isoflop_approach2") or _fitted(fit, "envelope_approach1"):
        paths += _save(optimal_allocation(fit), out_dir, "optimal_allocation")
    if _fitted(fit, "chinchilla_approach3"):
        paths += _save(chinchilla_approach3(points, fit, colors), out_dir, "approach3")
    if _fitted(fit, "moe"):
        paths += _save(moe_frontiers(points, fit), out_dir, "moe_frontiers")
    if (figure := rollout_backtest(fit)) is not None:
        paths += _save(figure, out_dir, "backtest")
    if _fitted(fit, "expert_multipliers"):
        law = fit["laws"]["expert_multipliers"]
        arms = law.get("arms") or {"": law}  # one figure per token arm
        for arm, entry in arms.items():
            compared = {k: v for k, v in (entry.get("comparisons") or {}).items()
                        if v.get("status") != "skipped"}
            if compared:
                figure = compute_multiplier({**entry, "comparisons": compared})
                if arm:
                    figure.axes[0].set_title(f"{arm}: " + figure.axes[0].get_title(), fontsize=9)
                paths += _save(figure, out_dir, "expert_multipliers" + (f"_{arm}" if arm else ""))
    if _fitted(fit, "curve_law"):
        paths += _save(lr_annealing_curves(fit["laws"]["curve_law"], all_rows), out_dir, "curve_law")
    return paths
