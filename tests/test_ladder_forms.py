"""The ladder entry's three forms, the rule that picks the form to read (scaling/study/law_to_read.py),
the regime check and the exclusion rule: on a ladder with a floor the pure law flags itself, and on
Chinchilla's frontier the recommended form is not optimistic beyond its interval."""

import pathlib

import numpy as np
import pandas as pd
import pytest

from neoscale.report import fits_section, laws
from neoscale.scaling import fit_study, ladder_law
from neoscale.scaling.points import pareto_frontier
from neoscale.scaling.results import final_points
from neoscale.scaling.study import ladder, law_to_read
from neoscale.scaling.study.backtest import rollout
from neoscale.scaling.study.entries import prediction_interval
from neoscale.scaling.synthetic import synthetic_study

H = 6.2
DATA = pathlib.Path(__file__).parent / "data" / "chinchilla_fig4_epoch_extracted.csv"


def _ladder(loss_of, n_sizes: int = 7, noise: float = 0.0):
    results, _ = synthetic_study(budgets=(), moe_experts=(1,), n_evals=1,
                                 moe_sizes=tuple(1e5 * 2.0 ** np.arange(n_sizes)), noise=0.0)
    scatter = np.exp(noise * np.random.default_rng(0).standard_normal(len(results)))
    results["eval_loss"] = loss_of(results["flops"].to_numpy()) * scatter
    return results


def _ladder_only(results, backtest: bool = True) -> dict:
    """The ladder entry as fit_study builds it (its backtest, its law to read), without the others."""
    points, _ = final_points(results)
    law = ladder.entry(points, H, 0, 0, 1e-3)
    if backtest:
        runs, _ = ladder.exclusions(ladder.ladder_runs(points), H)
        law["backtest"] = rollout(runs, ladder_law.MIN_SIZES, ladder.backtest(H, 1e-3, 0, 0))
    law_to_read.law_to_read({"ladder_law": law}, H)
    return law


def test_the_floor_form_recovers_its_constants_and_its_gradient_is_exact():
    compute = np.geomspace(1e11, 1e14, 6)
    truth = np.array([[1.5, 2.5e4, 0.25]])
    fit = ladder_law.fit_ladder_law(compute, ladder_law.predict(truth, H, compute, "floor")[0], H,
                                    form="floor")
    assert (fit.E, fit.A, fit.alpha) == pytest.approx((1.5, 2.5e4, 0.25), rel=1e-5)
    law = ladder_law.FlooredLaw(float(np.log(H)))
    rng = np.random.default_rng(1)
    log_x, log_y = rng.normal(size=(5, 1)), np.log(4.0) + 0.2 * rng.normal(size=5)
    params, weights = np.array([[0.3, 0.2, -1.0]]), np.ones((1, 5))
    _, grad = law.value_and_grad(params, log_x, log_y, weights, 0.05)
    for j in range(3):
        step = np.eye(3)[j] * 1e-6
        up, _ = law.value_and_grad(params + step, log_x, log_y, weights, 0.05)
        down, _ = law.value_and_grad(params - step, log_x, log_y, weights, 0.05)
        assert grad[0, j] == pytest.approx(((up - down) / 2e-6)[0], rel=1e-5)


def test_on_a_ladder_with_a_floor_the_pure_law_flags_itself_and_loses_the_rule():
    """Data with E = 2 > 0: the free-H fit runs away from the measured H (regime not reached), the
    report prints no pure-law forecast, and a floored form is read; the pure law's backtest is
    optimistic."""
    loss_of = lambda c: 2.0 + 1.0 / (1.0 / (H - 2.0) + c**0.3 / 2.5e4)  # noqa: E731
    fit = fit_study(_ladder(loss_of, noise=0.002), n_bootstrap=0, context_free_loss=H)
    law = fit["laws"]["ladder_law"]
    assert law["regime"]["reached"] is False and law["regime"]["off_plateau"] is True
    assert fit["law_to_read"]["key"] == "ladder_law"
    assert fit["law_to_read"]["form"] in ("floor", "power_law")
    errors = fit["law_to_read"]["backtest_errors"]
    assert errors["pure"]["mean_signed"] < -0.03  # too optimistic, and by more than the noise
    assert errors[fit["law_to_read"]["form"]]["mean_abs"] < 0.02
    assert law["forms"]["floor"]["constants"]["E"] == pytest.approx(2.0, rel=0.1)
    section = fits_section(fit)
    assert "Regime of the pure ladder law: **not reached**" in section
    assert "The pure ladder law: regime not reached; no forecast of it is printed." in section
    assert "- pure: predicted loss" not in section
    assert f"**Form to read: {fit['law_to_read']['form']}**" in section


def test_on_the_pure_law_the_rule_reads_it_in_its_regime():
    """Noise-free pure harmonic data: the regime holds, and the pure form ties the floor form
    (E fitted at ~0) within the noise: the one with fewer constants is read."""
    loss_of = lambda c: 1.0 / (1.0 / H + c**0.25 / 2.5e4)  # noqa: E731
    law = _ladder_only(_ladder(loss_of, n_sizes=6))
    assert law["regime"]["reached"] is True
    assert law["law_to_read"]["form"] == "pure" and law["law_to_read"]["verified"] is True
    assert "\n- pure: predicted loss at 10×" in "".join(laws.ladder_lines(law))


def test_the_rule_ties_within_the_noise_to_fewer_constants_and_needs_a_backtest():
    forms = {f: {"status": "fitted"} for f in ladder.FORMS}
    rounds = [{"predictions": [{"relative_error": {"pure": 0.012, "floor": 0.010, "power_law": 0.030},
                                "signed_error": {"pure": -0.012, "floor": 0.01, "power_law": 0.03}}]}]
    law = {"forms": forms, "backtest": {"rounds": rounds}, "seed_noise": None}
    in_regime = {"reached": True, "off_plateau": True}
    assert law_to_read.choose(law, in_regime)["form"] == "pure"  # 0.2% apart: within 0.5%
    assert law_to_read.choose({**law, "seed_noise": {"relative_std": 0.001}}, in_regime)["form"] == "floor"
    off = {"reached": False, "off_plateau": True}
    assert law_to_read.choose(law, off)["form"] == "floor"  # pure not eligible
    plateau = {"reached": False, "off_plateau": False}
    assert law_to_read.choose(law, plateau)["form"] == "power_law"
    unverified = law_to_read.choose({**law, "backtest": None}, in_regime)
    assert unverified["form"] == "floor" and unverified["verified"] is False


def test_runs_on_the_plateau_are_excluded_by_name():
    loss_of = lambda c: 1.0 / (1.0 / H + c**0.25 / 2.5e4)  # noqa: E731
    results = _ladder(loss_of, n_sizes=6)
    smallest = results["params_active"] == results["params_active"].min()
    results.loc[smallest, "eval_loss"] = 0.95 * H
    law = _ladder_only(results, backtest=False)
    (excluded,) = law["excluded"]
    assert excluded["run"] == results.loc[smallest, "run"].iloc[0]
    assert excluded["loss_over_H"] == pytest.approx(0.95) and "L/H = 0.950 > 0.9" in excluded["reason"]
    assert law["points"] == 5 and excluded["run"] not in law["inputs"]["runs"]
    assert law["constants"]["alpha"] == pytest.approx(0.25, rel=1e-4)  # the rest are exact


@pytest.mark.parametrize("held", [1, 2])
def test_on_chinchillas_frontier_the_recommended_form_is_not_optimistic(held):
    """Chinchilla's compute-loss frontier (Epoch's extraction, H = ln 32000), its largest 1-2
    points held out: the form the rule picks predicts them no lower than its 95% prediction
    interval allows; the pure ladder law, which would be 5% too low, is flagged out of regime."""
    raw = pd.read_csv(DATA).sort_values("loss").iloc[:-5]  # Epoch: drop the 5 highest losses
    c, loss = raw["Training FLOP"].to_numpy(), raw["loss"].to_numpy()
    front = pareto_frontier(c, loss)
    points = pd.DataFrame({"run": [f"r{i}" for i in range(front.sum())], "flops": c[front],
                           "eval_loss": loss[front]}).sort_values("flops").iloc[::4]
    points["params_active"] = points["flops"]  # one point per compute: the rollout walks compute
    points["tokens"] = points["flops"]
    train, test = points.iloc[:-held], points.iloc[-held:]
    h = float(np.log(32000))
    law = ladder.forms_entry(train, h, 40, 0, 1e-3)
    law["backtest"] = rollout(train, ladder_law.MIN_SIZES, ladder.backtest(h, 1e-3, 0, 0))
    chosen = law_to_read.law_to_read({"ladder_law": law}, h)
    assert law["regime"]["reached"] is False and chosen["form"] != "pure"
    fit, boot, residuals = ladder.fit_form(train, h, chosen["form"], 100, 0, 1e-3)
    at, actual = test["flops"].to_numpy(), test["eval_loss"].to_numpy()
    low, high = prediction_interval(boot, ladder.form_log(chosen["form"], h, at), residuals,
                                    ladder.FORMS[chosen["form"]][1], 0)
    assert np.all(actual <= high)  # never optimistic beyond its interval
    assert np.all(fit.predict(at) > 0.97 * actual)
    pure, _, _ = ladder.fit_form(train, h, "pure", 0, 0, 1e-3)
    assert np.all(pure.predict(at) < 0.97 * actual)  # what the flag protects the reader from
