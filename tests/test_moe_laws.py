"""The published MoE laws (neoscale.scaling.moe_laws) against the numbers REFERENCE.md §8 derives
from their constants: Clark ~2.8x for E = 8 at 1M parameters, Krajewski (E = 64) 8-16x at ~1e13
FLOPs; the joint law's ~1.0x / ~29 tokens per parameter are not reproduced (module docstring)."""

import itertools

import numpy as np
import pytest

from neoscale.scaling import moe_laws


def test_clark_effective_parameters_of_8_experts_at_1m():
    """S-BASE: N̄/N = 2.84 at N = 1M, E = 8 (REFERENCE: ~2.8x); dense is its own N̄."""
    prediction = moe_laws.predict_multiplier("clark", 8, compute=6e12, tokens_per_param=1.0)
    assert prediction.multiplier == pytest.approx(2.842, rel=1e-3)
    assert moe_laws.clark_effective_params(1e6, 1) == pytest.approx(1e6, rel=1e-9)
    # the benefit vanishes near N = 10^(-b/c) ~ 1e12 (REFERENCE)
    assert moe_laws.clark_effective_params(1e12, 8) / 1e12 == pytest.approx(1.0, abs=0.01)


def test_krajewski_e64_is_8_to_16x_at_1e13_with_total_parameters():
    """Table 1 with N the MoE's total non-embedding parameters: 8.07x at G = 1, 15.8x at G = 8."""
    assert moe_laws.compute_optimal_multiplier("krajewski", 64, 1e13) == pytest.approx(8.07, rel=1e-2)
    assert moe_laws.compute_optimal_multiplier("krajewski", 64, 1e13, granularity=8) == pytest.approx(
        15.8, rel=1e-2)


def test_joint_law_reading_and_what_it_predicts():
    """β read as −0.5529: the loss falls with data (as printed, +0.5529, it rises). With this
    reading E = 8 gains 2.6x, E = 32 5.3x at 1e13 compute-optimal, and E = 8 never loses at equal
    N and D at N = 1M: REFERENCE's ~1.0x, ~1.5x and ~29 tokens per parameter are not reproduced."""
    assert moe_laws.joint_loss(1e6, 1e8, 8) < moe_laws.joint_loss(1e6, 1e7, 8)
    printed = dict(moe_laws.JOINT, beta=moe_laws.JOINT_BETA_AS_PRINTED)
    assert moe_laws.joint_loss(1e6, 1e8, 8, printed) > moe_laws.joint_loss(1e6, 1e7, 8, printed)
    assert moe_laws.compute_optimal_multiplier("joint", 8, 1e13) == pytest.approx(2.645, rel=1e-2)
    assert moe_laws.compute_optimal_multiplier("joint", 32, 1e13) == pytest.approx(5.289, rel=1e-2)
    assert moe_laws.crossover_tokens_per_param("joint", 8, 1e6) is None


def test_no_sign_reading_of_the_joint_law_reproduces_reference(monkeypatch):
    """Every sign of (δ, γ, ω, ζ), N and D in units of 1, 1e6 or 1e9: none gives both what
    REFERENCE states: E = 8 losing to dense below ~29 tokens per parameter at N = 1M (crossover
    in 15-60, losing below it) and ~1.0x (0.8-1.25) compute-optimal at 1e13 FLOPs. (Some give a
    crossover near 29 but the wrong way round or with a 5x multiplier.)"""
    base = moe_laws.JOINT
    found = []
    for signs in itertools.product((1, -1), repeat=4):
        constants = dict(base, **{k: s * abs(base[k]) for k, s in
                                  zip(("delta", "gamma", "omega", "zeta"), signs, strict=True)})
        for unit_n, unit_d in itertools.product((1.0, 1e6, 1e9), repeat=2):
            def law(n, d, e, constants=constants, unit_n=unit_n, unit_d=unit_d):
                return moe_laws.joint_loss(n / unit_n, d / unit_d, e, constants)
            monkeypatch.setitem(moe_laws.LAWS, "reading", law)
            crossover = moe_laws.crossover_tokens_per_param("reading", 8, 1e6)
            if crossover is None or not 15 < crossover < 60 or law(1e6, 3e6, 8) < law(1e6, 3e6, 1):
                continue
            if 0.8 < moe_laws.compute_optimal_multiplier("reading", 8, 1e13) < 1.25:
                found.append((signs, unit_n, unit_d))
    assert found == []


def test_arm_predictions_are_all_laws_with_sources():
    rows = moe_laws.predictions(8, 1e13, 3.0)
    assert [r["law"] for r in rows] == ["clark", "krajewski", "joint"]
    assert all(r["multiplier"] > 0 and "arXiv" in r["source"] for r in rows)
    assert rows[1]["note"] == "fitted at E = 64: extrapolated in E"
    with pytest.raises(ValueError, match="unknown MoE law"):
        moe_laws.predict_multiplier("switch", 8, 1e13, 3.0)
    assert np.isfinite(rows[2]["multiplier"])
