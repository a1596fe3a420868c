"""fit_study on a synthetic study: every law, intervals, extrapolation, skipped laws, report."""

import json

import numpy as np
import pandas as pd
import pytest

from neoscale.report import fits_section
from neoscale.runner import plan as plan_lib
from neoscale.runner import results as runner_results
from neoscale.runner.config import base_config
from neoscale.scaling import fit_chinchilla_bootstrap, fit_study, isoflop
from neoscale.scaling.synthetic import TRUE_LAW, law_loss, synthetic_study


@pytest.fixture(scope="module")
def study():
    results, curves = synthetic_study(seed=0)
    return results, curves, fit_study(results, curves=curves, n_bootstrap=30, seed=0)


def test_every_supported_law_is_fitted_and_json_serialisable(study):
    _, _, fit = study
    assert json.loads(json.dumps(fit)) == fit
    assert {k: v["status"] for k, v in fit["laws"].items()} == {
        "loss_vs_compute": "fitted", "ladder_law": "skipped", "chinchilla_approach3": "fitted",
        "isoflop_approach2": "fitted", "envelope_approach1": "fitted", "moe": "fitted",
        "seed_noise": "skipped", "expert_multipliers": "fitted"}
    assert fit["data"]["family"] == "dense"
    assert fit["data"]["expert_counts"] == [1, 4, 8]


def test_constants_are_close_to_the_true_law(study):
    _, _, fit = study
    laws = fit["laws"]
    a_true = TRUE_LAW["beta"] / (TRUE_LAW["alpha"] + TRUE_LAW["beta"])
    chin = laws["chinchilla_approach3"]
    assert chin["constants"]["alpha"] == pytest.approx(TRUE_LAW["alpha"], abs=0.05)
    assert chin["allocation"]["a"] == pytest.approx(a_true, abs=0.05)
    assert laws["isoflop_approach2"]["constants"]["a"] == pytest.approx(a_true, abs=0.05)
    moe = laws["moe"]["chinchilla_form"]
    assert moe["constants"]["gamma"] == pytest.approx(TRUE_LAW["gamma"], abs=0.05)
    assert moe["compute_saving"]["8"] > moe["compute_saving"]["4"] > 1.0


def test_every_law_states_its_intervals_or_why_it_has_none(study):
    _, _, fit = study
    laws = fit["laws"]
    # 15 dense runs on 3 IsoFLOP budgets: Chinchilla's law is over-determined in every resample.
    chin = laws["chinchilla_approach3"]
    assert chin["bootstrap"] == {"requested": 30, "accepted": 30, "rejected_not_overdetermined": 0,
                                 "failed": 0}
    assert chin["interval_note"] is None and set(chin["intervals"]) == {"E", "A", "B", "alpha", "beta"}
    # Only 3 runs are on the loss-compute frontier: 3 points for 3 constants, no interval.
    lvc = laws["loss_vs_compute"]
    assert lvc["points"] == 3 and lvc["intervals"] is None
    assert "3 distinct points for 3 constants" in lvc["interval_note"]
    assert "lower" not in lvc["frontier"] and all(p["interval"] is None for p in lvc["predictions"])
    # 3 budgets for the line through the IsoFLOP minima (2 constants): no interval either.
    iso = laws["isoflop_approach2"]
    assert iso["intervals"] is None and "3 budgets" in iso["interval_note"]
    assert iso["bootstrap"]["rejected_not_overdetermined"] > 0


def test_chinchilla_bootstrap_intervals_cover_the_true_law():
    # Coverage with known truth: 25 runs (5 sizes x 5 token counts), 1% noise, 5 trials.
    covered = {"E": 0, "alpha": 0, "beta": 0}
    for trial in range(5):
        rng = np.random.default_rng(10 + trial)
        n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e7, 1e9, 5), np.geomspace(1e8, 1e11, 5)))
        loss = law_loss(n, d) * np.exp(0.01 * rng.standard_normal(n.size))
        _, boot = fit_chinchilla_bootstrap(n, d, loss, n_bootstrap=40, seed=trial)
        intervals = boot.intervals()
        for name, true in (("E", TRUE_LAW["E0"]), ("alpha", TRUE_LAW["alpha"]), ("beta", TRUE_LAW["beta"])):
            covered[name] += intervals[name][0] <= true <= intervals[name][1]
    assert all(v >= 4 for v in covered.values()), covered


def isoflop_bootstrap(sizes_per_budget: int, n_bootstrap: int):
    results, _ = synthetic_study(budgets=(1e16, 1e17, 1e18, 1e19), sizes_per_budget=sizes_per_budget,
                                 moe_experts=())
    final = results[results.final]
    return isoflop.fit_isoflop_bootstrap(
        final.budget_flops, final.params_active, final.tokens, final.eval_loss,
        groups=final.run, n_bootstrap=n_bootstrap, seed=0)


def test_isoflop_bootstrap_with_few_sizes_per_budget_gives_no_interval():
    # 4 sizes per budget: a resampled parabola (3 constants) is over-determined only if all 4
    # sizes are drawn, which happens in all 4 budgets with probability (4!/4^4)^4 < 1e-4.
    fit, boot = isoflop_bootstrap(sizes_per_budget=4, n_bootstrap=50)
    assert fit.budgets.size == 4 and boot.intervals() is None
    assert "only 4 distinct sizes" in boot.note
    assert boot.rejected == 50 and boot.accepted == 0
    # 8 sizes per budget and 4 budgets: an interval, from the resamples keeping >= 4 sizes in
    # every budget.
    fit, boot = isoflop_bootstrap(sizes_per_budget=8, n_bootstrap=40)
    assert boot.note is None and 0 < boot.rejected < 20
    assert boot.accepted + boot.failed + boot.rejected == 40
    a_true = TRUE_LAW["beta"] / (TRUE_LAW["alpha"] + TRUE_LAW["beta"])
    low, high = boot.intervals()["a"]
    assert low <= a_true <= high and high - low < 0.2


def with_branches(results: pd.DataFrame, curves: dict, fraction: float = 0.5):
    """Adds a WSD cooldown branch ending at `fraction` of every dense run, as an older runner wrote
    them: with the parent's budget_flops. A branch's curve repeats its parent's, 10% lower up to
    the fork (any use of it there shows), then equal to it."""
    rows, curves = [results], dict(curves)
    for run, group in results[results.num_experts == 1].groupby("run"):
        last = group[group.final].iloc[0]
        name = f"{run}_cd{fraction:g}"
        steps = int(last.step)
        fork, end = int(0.8 * fraction * steps), int(fraction * steps)
        branch = last.copy()
        branch[["run", "step", "tokens", "flops", "cooldown", "final"]] = (
            name, end, last.tokens * end / steps, last.flops * end / steps, fraction, True)
        branch["eval_loss"] = law_loss(last.params_active, branch.tokens) * 0.995
        branch["parent"], branch["fork_step"] = run, fork
        rows.append(branch.to_frame().T)
        parent = curves[run]
        curve = parent[parent.step <= end].copy()
        curve.loc[curve.step <= fork, "loss"] *= 0.9
        curves[name] = curve
    table = pd.concat(rows, ignore_index=True)
    table["parent"] = table["parent"].fillna(table["run"])
    return table.infer_objects(), curves


def test_fits_with_cooldown_branches():
    results, curves = synthetic_study(budgets=(1e16, 1e17, 1e18), sizes_per_budget=5, moe_experts=())
    plain = fit_study(results, curves=curves, n_bootstrap=0)
    branched, branch_curves = with_branches(results, curves)
    fit = fit_study(branched, curves=branch_curves, n_bootstrap=0)
    assert fit["data"]["cooldown_branches"] == 15 and fit["data"]["final_points"] == 30
    # IsoFLOP parabolas use main runs only: identical to the fit without branches.
    iso, iso_plain = fit["laws"]["isoflop_approach2"], plain["laws"]["isoflop_approach2"]
    assert iso["budgets"] == iso_plain["budgets"] and iso["n_opt"] == pytest.approx(iso_plain["n_opt"])
    np.testing.assert_allclose(iso["parabolas_ln_n"], iso_plain["parabolas_ln_n"])
    # Approach 3 uses the branches' final points too.
    assert fit["laws"]["chinchilla_approach3"]["points"] == 30
    # Approach 1: after its fork a branch's curve is its parent's, so the envelope is unchanged;
    # any use of it before the fork would lower it by 10%.
    env, env_plain = fit["laws"]["envelope_approach1"], plain["laws"]["envelope_approach1"]
    assert env["compute"] == pytest.approx(env_plain["compute"])
    assert env["loss"] == pytest.approx(env_plain["loss"], rel=1e-9)
    # The grid starts at the earliest curve's first point, so the smallest size is on it.
    assert env["compute"][0] == pytest.approx(min(c.flops.iloc[0] for c in curves.values()))
    assert min(env["n_opt"]) == results.params_active[results.num_experts == 1].min()


def test_runner_rows_of_a_branch_carry_no_budget_and_name_their_parent():
    train = base_config().train
    train.batch_size = 8
    (run,) = plan_lib.make_plan(["cpu-100k"], plan_lib.parse_budget(flops="3e11"), vocab_size=512,
                                seq_len=64, train=train, cooldowns=(0.5, 1.0))
    (branch,) = run.branches
    main = runner_results.run_columns(run)
    row = runner_results.run_columns(run, branch.name, branch.fraction)
    assert main["budget_flops"] == 3e11 and main["parent"] == run.name and main["fork_step"] is None
    assert row["budget_flops"] is None and row["cooldown"] == 0.5
    assert row["parent"] == run.name and row["fork_step"] == branch.fork_step
    with pytest.raises(ValueError, match="not a cooldown branch"):
        runner_results.run_columns(run, "other", 0.5)


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


def test_loss_vs_compute_checks_the_form_the_report_says_to_read(study):
    from neoscale.scaling.study.loss_vs_compute import check_the_form_to_read, irreducible_loss

    _, _, fit = study
    law = fit["laws"]["loss_vs_compute"]
    forms = law["extrapolation"]["forms"]
    assert set(forms) == {"with_E", "pure_power_law"}
    expected = "with_E" if law["irreducible_loss"]["identified"] else "pure_power_law"
    assert law["extrapolation"]["form"] == expected
    assert law["extrapolation"]["relative_error"] == forms[expected]["relative_error"]
    # E at its bound: the check moves to the pure power law, and the report says why.
    at_bound = {"irreducible_loss": irreducible_loss({"constants": {"E": 1e-9}}),
                "extrapolation": {**law["extrapolation"], **forms["with_E"]}}
    check_the_form_to_read(at_bound)
    assert at_bound["extrapolation"]["relative_error"] == forms["pure_power_law"]["relative_error"]
    text = fits_section({**fit, "laws": {"loss_vs_compute": {**law, **at_bound}}})
    assert "for the pure power law, the form to read since E is not identified (with E:" in text


def test_report_section_summarises_the_fits(study):
    _, _, fit = study
    text = fits_section(fit)
    assert text.startswith("## Scaling-law fits")
    for phrase in ("Chinchilla Approach 3", "IsoFLOP", "Extrapolation check", "8 experts:",
                   "less compute (6·N_active·D) than dense", "Compute axis of every law",
                   "No interval: 3 budgets", "30 of 30 resamples refitted", "on C = 6·N·D"):
        assert phrase in text
    assert "1 experts" not in text


def test_every_law_has_one_report_section(study):
    """Each law of fit.json has one section in neoscale.report.SECTIONS, shown once, in its order."""
    from neoscale.report import SECTIONS

    _, _, fit = study
    keys = [section.key for section in SECTIONS]
    assert set(fit["laws"]) | {"curve_law"} == set(keys)  # the fixture has no schedules
    headers = [line for line in fits_section(fit).splitlines() if line.startswith("### ")]
    assert len(headers) == len(fit["laws"]) == len(keys) - 1
    assert headers[0] == "### Loss against compute"
    assert headers[-1].startswith("### Sparsity: compute multipliers")


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
    assert "Not fitted" in fits_section(fit)


def test_results_without_required_columns_are_rejected():
    results, _ = synthetic_study(budgets=(1e17,), moe_experts=())
    with pytest.raises(ValueError, match="lacks column"):
        fit_study(results.drop(columns=["eval_loss"]))
    with pytest.raises(ValueError, match="curves must map"):
        fit_study(results, curves=["loss"])


def test_approach_3_allocation_is_on_the_flops_column_axis():
    # FLOPs per token drifting from 0.84x to 1.08x of 6·N along the sizes (as the issue measured
    # for the demo's ladder): Approach 3's exponents move to that axis; 6·N·D ones stay beside.
    results, _ = synthetic_study(budgets=(1e16, 1e17, 1e18), moe_experts=())
    n = results.params_active
    ratio = 0.84 * (n / n.min()) ** (np.log(1.08 / 0.84) / np.log(n.max() / n.min()))
    results["flops"] = 6 * n * results.tokens * ratio
    fit = fit_study(results, n_bootstrap=0)
    chin = fit["laws"]["chinchilla_approach3"]
    alloc, six = chin["allocation"], chin["allocation_6nd"]
    s = alloc["flops_per_token"]["s"]
    assert s == pytest.approx(1 + np.log(1.08 / 0.84) / np.log(n.max() / n.min()), rel=1e-6)
    alpha, beta = chin["constants"]["alpha"], chin["constants"]["beta"]
    assert alloc["a"] == pytest.approx(beta / (alpha + s * beta))
    assert six["a"] == pytest.approx(beta / (alpha + beta)) and alloc["a"] < six["a"]
    assert "flops column" in alloc["compute_axis"] and six["compute_axis"] == "C = 6·N·D"
    assert fit["laws"]["isoflop_approach2"]["compute_axis"].startswith(fit["compute_axis"])
    assert chin["interval_note"] == "no bootstrap resamples requested (n_bootstrap = 0)"


def test_irreducible_loss_at_its_bound_is_reported_as_not_identified():
    from neoscale.scaling.study.loss_vs_compute import irreducible_loss

    known = irreducible_loss({"constants": {"E": 1.7}, "intervals": {"E": [1.6, 1.8]}})
    assert known["identified"]
    at_bound = irreducible_loss({"constants": {"E": 5.7e-4}, "intervals": {"E": [5.7e-4, 7.5e-4]}})
    assert not at_bound["identified"] and "not identified" in at_bound["note"]
    # An estimate away from 0 whose interval reaches the bound is not identified either.
    assert not irreducible_loss({"constants": {"E": 0.8}, "intervals": {"E": [1e-9, 1.5]}})["identified"]
