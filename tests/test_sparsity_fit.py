"""fit_study on a synthetic sparsity study: two token arms, dense / E = 1 routed / E = 8 with
replicate seeds: per-arm multipliers, the crossover, the published laws, the seed noise, E = 1
routed against dense; and an old results table (no seed column) fits as before."""

import numpy as np
import pandas as pd
import pytest

from neoscale.report import fits_section
from neoscale.scaling import fit_study
from neoscale.scaling.points import frontier_points, replicate_ids

E, A, ALPHA = 2.0, 60.0, 0.15
WIDTHS = (16, 24, 32, 48, 64)
ARMS = {3.0: 0.6, 30.0: 1.6}  # E = 8's true multiplier in each arm: loses at 3, wins at 30
SLOWDOWN = 1.5  # E = 8's time per FLOP against dense's


def _rows(arm: float, suffix: str, multiplier: float, seeds: dict[int, int], study_seed: int
          ) -> list[dict]:
    """One variant's final rows; the noise (0.3%) depends on (arm, width, seed) and, for E = 8,
    the variant: E = 1 routed at a seed is the dense model at that seed (tests/test_model.py)."""
    rows = []
    for d in WIDTHS:
        n = 4000.0 * d  # active parameters
        c = 6 * n * arm * n
        for seed in range(seeds.get(d, 1)):
            key = (study_seed, int(arm), d, seed, 8 if suffix == "e8k1" else 1)
            noise = np.exp(0.003 * np.random.default_rng(key).standard_normal())
            loss = (E + A * (multiplier * c) ** -ALPHA) * noise
            name = f"w{d}d4h2{suffix}" + (f"-seed{seed}" if seed else "") + f"_tpp{arm:g}"
            routed = suffix == "e8k1"
            seconds = c / 1e9 * (SLOWDOWN if routed else 1.0)  # dense: 1 GFLOP/s
            rows.append({"run": name, "size": f"w{d}d4h2{suffix}", "d_model": d, "num_layers": 4,
                         "num_heads": 2, "num_experts": 8 if suffix == "e8k1" else 1, "top_k": 1,
                         "params_active": n, "params_total": n * (6 if routed else 1),
                         "tokens": arm * n, "flops": c, "wall_seconds": seconds,
                         "eval_loss": loss, "final": True, "status": "done", "parent": name,
                         "seed": seed})
    return rows


def sparsity_study(seed=0) -> pd.DataFrame:
    replicated = {24: 2, 32: 2}
    rows = []
    for arm, m in ARMS.items():
        rows += _rows(arm, "", 1.0, replicated, seed)
        rows += _rows(arm, "e1k1", 1.0, replicated, seed)
        rows += _rows(arm, "e8k1", m, replicated, seed)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def fitted():
    table = sparsity_study()
    return table, fit_study(table, n_bootstrap=60, backtest=False)


def test_per_arm_multipliers_crossover_and_published_laws(fitted):
    _, fit = fitted
    law = fit["laws"]["expert_multipliers"]
    assert law["status"] == "fitted" and set(law["arms"]) == {"tpp3", "tpp30"}
    for arm, true in (("tpp3", 0.6), ("tpp30", 1.6)):
        result = law["arms"][arm]["comparisons"]["8 experts"]
        row = result["at_shared_compute"]
        assert row["multiplier"] == pytest.approx(true, rel=0.25), (arm, row)  # measured 1.43 at 30
        # The interval holds its estimate and is narrower than x/÷1.3, but it under-covers: over
        # study seeds 1-5 it held the true multiplier in 6 of 10 arms (95% nominal; a percentile
        # bootstrap of 5 sizes). Here (seed 0) tpp3 holds 0.6, tpp30 [1.33, 1.53] misses 1.6.
        low, high = row["interval"]
        assert low <= row["multiplier"] <= high and high / low < 1.69
        assert result["pairing"].startswith("by size")  # same shapes, arms and seeds
        assert [p["law"] for p in result["published"]] == ["clark", "krajewski", "joint"]
        assert all(isinstance(p["inside_interval"], bool) for p in result["published"])
    crossover = law["crossover"]["8 experts"]
    assert crossover["bracketed"] and crossover["direction"] == "loses below, wins above"
    assert 3 < crossover["crossover"] < 30  # log-linear between 0.6x and 1.6x: ~9.6
    assert crossover["interval"][0] <= crossover["crossover"] <= crossover["interval"][1]
    assert "shared_samples" not in law["arms"]["tpp3"]["comparisons"]["8 experts"]
    routed = law["routed_one_vs_dense"]
    assert len(routed["pairs"]) == 2 * (len(WIDTHS) + 2)
    assert routed["max_abs_relative_difference"] < 1e-12 and routed["inside_seed_noise"] is True
    assert 0 < routed["noise_band"] < 0.01


def test_a_routed_expert_one_percent_worse_is_outside_the_seed_noise(fitted):
    from neoscale.scaling.results import validate
    from neoscale.scaling.study.sparsity import _routed_one

    table, fit = fitted
    worse = table.copy()
    worse.loc[worse["size"].str.endswith("e1k1"), "eval_loss"] *= 1.01
    routed = _routed_one(validate(worse), fit["laws"]["seed_noise"])
    assert routed["mean_relative_difference"] == pytest.approx(0.01)
    assert routed["inside_seed_noise"] is False


def test_seed_noise_and_report(fitted):
    _, fit = fitted
    noise = fit["laws"]["seed_noise"]
    assert noise["status"] == "fitted" and len(noise["replicated"]) == 2 * 3 * 2  # arms x variants x sizes
    assert 0.0005 < noise["pooled_relative_std"] < 0.01  # drawn at 0.3%
    text = fits_section(fit)
    for phrase in ("### Seed noise", "### Sparsity: compute multipliers over dense",
                   "**3 tokens per active parameter**", "8 experts stops losing to dense at",
                   "E = 1 routed against dense, run for run", "the interval supports"):
        assert phrase in text, phrase


def test_replicates_share_the_frontier_and_old_tables_read_as_before(fitted):
    table, _ = fitted
    dense = table[(table["num_experts"] == 1) & ~table["size"].str.endswith("e1k1")
                  & (table["tokens"] / table["params_active"] == 3.0)].reset_index(drop=True)
    ids = replicate_ids(dense)
    use, _ = frontier_points(dense["flops"].to_numpy(), dense["eval_loss"].to_numpy(), ids)
    seeds_of_24 = (dense["d_model"] == 24).to_numpy()
    assert use[seeds_of_24].all() or not use[seeds_of_24].any()  # both seeds, or neither
    old = dense[dense["seed"] == 0].drop(columns=["seed"])
    assert replicate_ids(old) is None
    with_seed = fit_study(dense[dense["seed"] == 0], n_bootstrap=0, backtest=False)
    without = fit_study(old, n_bootstrap=0, backtest=False)
    assert with_seed["laws"]["loss_vs_compute"]["constants"] == without["laws"]["loss_vs_compute"][
        "constants"]


def test_time_multiplier_and_memory_price(fitted):
    _, fit = fitted
    law = fit["laws"]["expert_multipliers"]
    cost = law["cost"]["variants"]
    assert cost["8 experts"]["slowdown"] == pytest.approx(SLOWDOWN)
    assert cost["8 experts"]["at"] == "w64d4h2e8k1_tpp30"  # the largest shape of the longest arm
    assert cost["8 experts"]["params_total_vs_dense"] == pytest.approx(6.0)
    assert cost["8 experts"]["state_bytes"] == 16 * 6 * 4000 * 64
    assert cost["1 routed expert"]["slowdown"] == pytest.approx(1.0)
    assert len(cost["8 experts"]["pairs"]) == len(WIDTHS) + 2  # every shape and seed of tpp30
    for arm in ("tpp3", "tpp30"):
        result = law["arms"][arm]["comparisons"]["8 experts"]
        time = result["time_multiplier"]
        assert time["multiplier"] == pytest.approx(result["at_shared_compute"]["multiplier"] / SLOWDOWN)
        assert time["interval"] == pytest.approx([v / SLOWDOWN for v in
                                                  result["at_shared_compute"]["interval"]])
    text = fits_section(fit)
    assert "on the wall clock: x" in text and "1.50x dense's time per FLOP" in text


def test_a_multiplier_without_interval_says_why_and_judges_no_law():
    from neoscale.report import sparsity as report_sparsity

    note = "4 distinct points for 3 constants: an interval needs at least 5"
    comparison = {"A": {"interval_note": note}, "B": {"interval_note": note},
                  "at_shared_compute": {"multiplier": 0.77, "interval": None, "compute": 9e12},
                  "trend": [{"ratio": 2.8, "interval": None, "verdict": "grows"}],
                  "exponents": {"verdict": "unknown"}, "pairing": "by size",
                  "published": [{"law": "clark", "multiplier": 3.19, "inside_interval": None},
                                {"law": "joint", "multiplier": 0.5, "inside_interval": None}]}
    text = "\n".join(report_sparsity._comparison_lines("8 experts", comparison))
    assert f"0.77x (no interval: {note}; more sizes per variant would give one)" in text
    assert "no interval to judge them by; the measured point is below clark." in text


def test_a_wide_interval_says_why_from_the_slopes_and_the_seed_noise(fitted):
    from neoscale.report import sparsity as report_sparsity
    from neoscale.scaling.study.sparsity import NARROW, local_slope

    # the law's own slope: alpha·A·C^-alpha / L, by finite difference
    constants, c = {"E": E, "A": A, "alpha": ALPHA}, 1e12
    def law(x):
        return E + A * x ** -ALPHA
    assert local_slope(constants, c) == pytest.approx(
        -(np.log(law(c * 1.001)) - np.log(law(c))) / np.log(1.001), rel=1e-3)
    _, fit = fitted
    law_entry = fit["laws"]["expert_multipliers"]
    sigma = fit["laws"]["seed_noise"]["pooled_relative_std"]
    for arm in ("tpp3", "tpp30"):
        result = law_entry["arms"][arm]["comparisons"]["8 experts"]
        w, row = result["width"], result["at_shared_compute"]
        assert w["ratio"] == pytest.approx(row["interval"][1] / row["interval"][0])
        assert w["narrow"] == (w["ratio"] <= NARROW)
        assert w["slope_A"] == pytest.approx(local_slope(result["A"]["constants"], row["compute"]))
        assert w["one_pair_factor"] == pytest.approx(
            np.exp(1.96 * sigma * np.hypot(1 / w["slope_A"], 1 / w["slope_B"])))
    wide = {"ratio": 2.6, "narrow": False, "slope_A": 0.05, "slope_B": 0.1, "seed_noise": 0.014,
            "one_pair_factor": 1.7, "runs_factor": (np.log(2.6) / np.log(NARROW)) ** 2}
    text = report_sparsity._width_text(wide)
    assert "s = 0.05 (dense) and 0.1 per e-fold" in text and "(1.40% of the loss)" in text
    assert "about 3.3x the runs near this compute" in text
    assert report_sparsity._width_text({**wide, "ratio": 1.5, "narrow": True}) is None
