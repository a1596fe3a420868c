"""Compute multipliers (neoscale.scaling.multiplier and neoscale.fit --compare) recover known
multipliers of synthetic studies drawn from L(C) = E + A·C^(−α)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from neoscale.scaling import multiplier

E, A, ALPHA = 1.7, 1e4, 0.25


def study(e=E, a=A, alpha=ALPHA, *, compute_scale=1.0, sizes=16, noise=0.002, seed=0):
    """Final runs of `sizes` sizes, one on the law L(compute_scale·C) at each compute and one 5%
    above it at the same compute (off the frontier), with log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, c in enumerate(np.geomspace(1e15, 1e21, sizes)):
        n = np.sqrt(c / 120)  # 20 tokens per parameter
        for k, above in enumerate((1.0, 1.05)):
            loss = (e + a * (compute_scale * c) ** -alpha) * above * np.exp(noise * rng.standard_normal())
            rows.append({"run": f"r{i}_{k}", "params_active": n, "tokens": c / (6 * n), "flops": c,
                         "eval_loss": loss, "final": True})
    return pd.DataFrame(rows)


def analytic(compute, b_a=A, b_alpha=ALPHA):
    """m(C) = C / C_B(L_A(C)) for A = (E, A, ALPHA), B = (E, b_a, b_alpha)."""
    loss = E + A * compute ** -ALPHA
    return compute / (b_a / (loss - E)) ** (1 / b_alpha)


def test_half_the_compute_is_a_multiplier_of_two_at_every_loss():
    result = multiplier.compare(study(seed=0), study(compute_scale=2.0, seed=1), n_bootstrap=60)
    inside = [r for r in result["by_compute"] if not (r["extrapolates"]["A"] or r["extrapolates"]["B"])]
    # A's smallest compute gives a loss above all of B's (B's smallest run is 2x as effective), its
    # largest one a loss at the edge of B's data: B's law extrapolates there.
    assert len(inside) == multiplier.GRID_POINTS - 2
    # Across A's data but for its largest computes: there L nears E, and the multiplier hangs on
    # both E's (measured: 1.78 [1.25, 3.79] at 3.2e20 FLOPs, 1.98 [1.54, 2.03] at 3.2e15). The
    # frontier is recomputed per resample: a resample without a compute's on-law run fits its run
    # 5% above instead, which widens the lower side (measured 1.32x wide at 3.2e15, 1.15x at 1e17).
    for row in inside[:7]:  # up to 3.2e18 FLOPs (1e19: 1.40x wide)
        assert row["multiplier"] == pytest.approx(2.0, rel=0.05)
        low, high = row["interval"]
        assert low <= 2.0 <= high and high / low < 1.35, row
    lowest, *others = result["by_loss"]  # the lowest loss the two sets share first
    for row in others:
        assert row["multiplier"] == pytest.approx(2.0, rel=0.03)
        assert row["interval"][0] <= 2.0 <= row["interval"][1]
    assert np.diff(lowest["interval"]) > 2 * max(np.diff(r["interval"]) for r in others)
    assert result["exponents"]["constant"] is True
    assert result["exponents"]["interval"][0] < 0 < result["exponents"]["interval"][1]
    assert result["overlap"]["loss_range"] is not None and result["notes"] == []
    assert [r["factor"] for r in result["headline"]] == pytest.approx([1e-3, 1.0, 10.0, 100.0])
    assert result["headline"][3]["extrapolates"]["A"] and not result["headline"][1]["extrapolates"]["A"]


def test_a_steeper_exponent_gives_a_multiplier_that_grows_with_compute():
    b_a, b_alpha = 3e4, 0.30
    result = multiplier.compare(study(seed=0), study(a=b_a, alpha=b_alpha, seed=1), n_bootstrap=60)
    rows = result["by_compute"]
    c = np.array([r["compute"] for r in rows])
    m = np.array([r["multiplier"] for r in rows])
    truth = analytic(c, b_a, b_alpha)  # 8.1 at 1e15 FLOPs, 81 at 1e21, 175 at 1e23
    inside = slice(0, multiplier.GRID_POINTS)
    np.testing.assert_allclose(m[inside], truth[inside], rtol=0.12)
    covered = [r["interval"][0] <= t <= r["interval"][1] for r, t in zip(rows, truth, strict=True)]
    assert np.mean(covered) >= 0.9
    assert result["exponents"]["constant"] is False
    assert result["exponents"]["interval"][0] > 0
    assert result["exponents"]["difference"] == pytest.approx(b_alpha - ALPHA, abs=0.015)
    assert result["exponents"]["verdict"].startswith("grows")
    data_trend = result["trend"][0]
    assert data_trend["verdict"] == "grows" and data_trend["ratio"] == pytest.approx(10.0, rel=0.2)


def test_too_few_sizes_and_disjoint_losses_are_named():
    with pytest.raises(ValueError, match=r"variant 'moe' has final runs of 2 distinct size"):
        multiplier.compare(study(), study(sizes=2), names=("dense", "moe"), n_bootstrap=0)
    # B's losses all lie below A's: still a multiplier (from the laws), flagged as extrapolated.
    result = multiplier.compare(study(), study(e=1.0, a=300.0, seed=3), n_bootstrap=0)
    assert result["overlap"]["loss_range"] is None
    assert "do not overlap" in result["notes"][-1]
    assert result["headline"][0]["interval"] is None
    assert all(r["extrapolates"]["B"] for r in result["by_compute"])
    assert all(any(r["extrapolates"].values()) for r in result["by_loss"])


def run_fit(*args):
    return subprocess.run([sys.executable, "-m", "neoscale.fit", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_compares_every_group_with_the_baseline(tmp_path):
    tables = {"dense": study(seed=0), "moe8": study(compute_scale=2.0, seed=1),
              "moe64": study(compute_scale=4.0, seed=2)}
    rows = []
    for name, table in tables.items():
        rows.append(table[["params_active", "tokens", "eval_loss"]].assign(arch=name))
    path = tmp_path / "variants.csv"
    pd.concat(rows).rename(columns={"params_active": "N", "tokens": "D", "eval_loss": "loss"}).to_csv(
        path, index=False)
    done = run_fit(f"--results={path}", "--params_column=N", "--tokens_column=D", "--loss_column=loss",
                   "--group_by=arch", "--compare=dense", "--n_bootstrap=40", f"--out_dir={tmp_path / 'out'}")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["baseline"] == "dense" and sorted(summary["comparisons"]) == ["moe64", "moe8"]
    assert summary["comparisons"]["moe8"]["scale"] == "constant"
    mid = summary["comparisons"]["moe8"]["at_mid_compute"]  # '1.96 [1.88, 2.04]'
    assert float(mid.split()[0]) == pytest.approx(2.0, rel=0.05) and "[" in mid
    doc = json.loads((tmp_path / "out" / "multiplier.json").read_text())
    for name, factor in (("moe8", 2.0), ("moe64", 4.0)):
        mid = doc["comparisons"][name]["by_loss"][1]
        assert mid["multiplier"] == pytest.approx(factor, rel=0.05)
        assert factor / 1.2 < mid["interval"][0] <= mid["multiplier"] <= mid["interval"][1] < factor * 1.2
    assert (tmp_path / "out" / "multiplier.png").stat().st_size > 10_000
    assert not (tmp_path / "out" / "fit.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--group_by=arch", "--compare=sparse"], "--compare='sparse' is not a value of --group_by='arch'"),
    (["--compare=dense"], "--compare=BASELINE needs --group_by=COLUMN"),
    (["--group_by=arch", "--compare=dense"], "variant 'moe' has final runs of 2 distinct size(s)"),
    (["--group_by=arch", "--compare=dense", "--where=arch == 'dense'"], "has one value (dense)"),
])
def test_cli_bad_input_is_one_line(tmp_path, extra, message):
    table = pd.concat([study(sizes=4).assign(arch="dense"), study(sizes=2).assign(arch="moe")])
    path = tmp_path / "t.csv"
    table[["params_active", "tokens", "eval_loss", "arch"]].to_csv(path, index=False)
    done = run_fit(f"--results={path}", "--params_column=params_active", "--tokens_column=tokens",
                   "--loss_column=eval_loss", "--n_bootstrap=0", "--noplots", *extra)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("neoscale.fit: error: "), done.stderr
    assert message in lines[0]


def test_a_study_with_experts_reports_their_multiplier_over_dense(tmp_path):
    """fit_study on a dense + MoE study: fit.json, the report and a figure give each expert
    count's multiplier over dense; the synthetic law's experts help (compute saving > 1)."""
    from neoscale import plots
    from neoscale.report import fits_section
    from neoscale.scaling import fit_study
    from neoscale.scaling.synthetic import synthetic_study

    results, _ = synthetic_study(budgets=(1e15, 1e16, 1e17, 1e18), sizes_per_budget=4,
                                 moe_experts=(8,))
    fit = fit_study(results, n_bootstrap=40, backtest=False)
    law = fit["laws"]["expert_multipliers"]
    assert law["status"] == "fitted" and law["baseline"] == "dense"
    result = law["comparisons"]["8 experts"]
    assert all(row["multiplier"] > 1.5 for row in result["headline"]), result["headline"]
    section = fits_section(fit)
    assert "### Sparsity: compute multipliers over dense" in section
    assert "- 8 experts: " in section and "at the largest compute both reach" not in section
    assert "(the largest compute both reach, read at the worse loss there, " in section
    paths = plots.draw_study(results, fit, tmp_path)
    assert "expert_multipliers.png" in {p.name for p in paths}
    dense_only = fit_study(results[results["num_experts"] == 1], n_bootstrap=0, backtest=False)
    assert "expert_multipliers" not in dense_only["laws"]
    assert "Sparsity" not in fits_section(dense_only)


def test_the_headline_reads_the_loser_at_its_own_loss_never_below_its_data():
    from neoscale.scaling.multiplier import at_worse_loss, by_compute, loss_at

    dense = np.array([[2.0, 60.0, 0.15]])
    c = 1e12
    # B = dense at a third of the compute: m = 1/3 at every compute, in both readings
    third = np.array([[2.0, 60.0 * 3.0 ** 0.15, 0.15]])
    m, loss = at_worse_loss(dense, third, c)
    assert m[0] == pytest.approx(1 / 3) and by_compute(dense, third, [c])[0, 0] == pytest.approx(1 / 3)
    assert loss[0] == pytest.approx(loss_at(third, [c])[0, 0])  # the loser's own loss
    # B with a higher floor than dense's loss at C: m(C) says "never" (0); read at B's own loss
    # the multiplier is C_A(L_B(C)) / C, finite
    floor = np.array([[loss_at(dense, [c])[0, 0] + 0.05, 5.0, 0.3]])
    assert by_compute(dense, floor, [c])[0, 0] == 0
    m, loss = at_worse_loss(dense, floor, c)
    c_a = (60.0 / (loss[0] - 2.0)) ** (1 / 0.15)
    assert m[0] == pytest.approx(c_a / c) and 0 < m[0] < 1
    # B that wins is read at A's loss: the same as m(C)
    better = np.array([[2.0, 60.0 * 4.0 ** -0.15, 0.15]])
    assert at_worse_loss(dense, better, c)[0][0] == pytest.approx(by_compute(dense, better, [c])[0, 0])
