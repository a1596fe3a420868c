"""fit_study on a synthetic study: every law, intervals, extrapolation, skipped laws, report."""

import json

import numpy as np
import pytest

from neoscale.scaling import fit_study, report_section
from neoscale.scaling.synthetic import TRUE_LAW, synthetic_study


@pytest.fixture(scope="module")
def study():
    results, curves = synthetic_study(seed=0)
    return results, curves, fit_study(results, curves=curves, n_bootstrap=30, seed=0)


def test_every_supported_law_is_fitted_and_json_serialisable(study):
    _, _, fit = study
    assert json.loads(json.dumps(fit)) == fit
    assert {k: v["status"] for k, v in fit["laws"].items()} == {
        "loss_vs_compute": "fitted", "chinchilla_approach3": "fitted",
        "isoflop_approach2": "fitted", "envelope_approach1": "fitted", "moe": "fitted"}
    assert fit["data"]["family"] == "dense"
    assert fit["data"]["expert_counts"] == [1, 4, 8]


def test_constants_and_intervals_are_close_to_the_true_law(study):
    _, _, fit = study
    laws = fit["laws"]
    a_true = TRUE_LAW["beta"] / (TRUE_LAW["alpha"] + TRUE_LAW["beta"])
    chin = laws["chinchilla_approach3"]
    assert chin["constants"]["alpha"] == pytest.approx(TRUE_LAW["alpha"], abs=0.05)
    assert chin["allocation"]["a"] == pytest.approx(a_true, abs=0.05)
    for name, (low, high) in chin["intervals"].items():
        assert low <= chin["constants"][name] <= high, name
    assert laws["isoflop_approach2"]["constants"]["a"] == pytest.approx(a_true, abs=0.05)
    moe = laws["moe"]["chinchilla_form"]
    assert moe["constants"]["gamma"] == pytest.approx(TRUE_LAW["gamma"], abs=0.05)
    assert moe["compute_saving"]["8"] > moe["compute_saving"]["4"] > 1.0
    low, high = moe["compute_saving_intervals"]["8"]
    assert low <= moe["compute_saving"]["8"] <= high


def test_extrapolation_is_checked_on_the_largest_size(study):
    results, _, fit = study
    largest = results.loc[results.num_experts == 1, "params_active"].max()
    for key in ("loss_vs_compute", "chinchilla_approach3"):
        check = fit["laws"][key]["extrapolation"]
        assert f"{largest:.4g}" in check["held_out"]
        assert 0 <= check["relative_error"] < 0.1
    frontier = fit["laws"]["loss_vs_compute"]["frontier"]
    dense_final = results[(results.num_experts == 1) & results.final]
    assert max(frontier["compute"]) == pytest.approx(100 * dense_final.flops.max(), rel=1e-6)
    assert all(lo <= mid <= hi for lo, mid, hi in zip(frontier["lower"], frontier["loss"],
                                                      frontier["upper"], strict=True))


def test_report_section_summarises_the_fits(study):
    _, _, fit = study
    text = report_section(fit)
    assert text.startswith("## Scaling-law fits")
    for phrase in ("Chinchilla Approach 3", "IsoFLOP", "Extrapolation check", "experts:",
                   "less compute than dense"):
        assert phrase in text


def test_unsupported_laws_are_listed_with_a_reason():
    results, _ = synthetic_study(budgets=(1e17,), sizes_per_budget=3, moe_experts=())
    results.loc[results.run == results.run.iloc[0], "status"] = "failed:oom"
    results.loc[results.index[-1], "eval_loss"] = np.nan
    fit = fit_study(results, n_bootstrap=0)
    laws = fit["laws"]
    assert laws["loss_vs_compute"]["status"] == "skipped"
    assert "3 distinct sizes" in laws["loss_vs_compute"]["reason"]
    assert "IsoFLOP budgets" in laws["isoflop_approach2"]["reason"]
    assert "no training curves" in laws["envelope_approach1"]["reason"]
    assert "expert counts" in laws["moe"]["reason"]
    reasons = {d["reason"] for d in fit["data"]["dropped"]}
    assert "status failed:oom" in reasons and any("non-finite" in r for r in reasons)
    assert "Not fitted" in report_section(fit)


def test_results_without_required_columns_are_rejected():
    results, _ = synthetic_study(budgets=(1e17,), moe_experts=())
    with pytest.raises(ValueError, match="lacks column"):
        fit_study(results.drop(columns=["eval_loss"]))
    with pytest.raises(ValueError, match="curves must map"):
        fit_study(results, curves=["loss"])
