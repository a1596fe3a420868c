"""Published MoE scaling laws, with their constants and sources, and the compute multiplier each
predicts for E routed experts over dense at a given compute and allocation.

The multiplier is the measured one's (``neoscale.scaling.multiplier``): the compute dense needs to
reach the loss the MoE reaches, over the MoE's compute (> 1: the MoE needs less), both on
C = 6·N_active·D. ``predict_multiplier`` keeps the MoE's allocation r = D/N: dense trains on the
same tokens per active parameter, so its compute is (N'/N)² C where L_dense(N', r·N') = L_MoE(N, D)
(a study's token arm). ``compute_optimal_multiplier`` lets both take their compute-optimal
allocation at each compute.

Laws (REFERENCE.md §8):

* Clark et al. 2022, "Unified Scaling Laws for Routed Language Models", arXiv 2202.01169, S-BASE
  (neoscale.scaling.moe.CLARK_S_BASE): log10 L = a·log10 N + b·log10 Ê + c·log10 N·log10 Ê + d.
  Every run at 130B tokens: no D term, so its multiplier is the effective-parameter ratio N̄/N,
  the compute ratio at equal tokens (the setting it was fitted in), whatever the allocation.
* Krajewski et al. 2024, "Scaling Laws for Fine-Grained Mixture of Experts", arXiv 2402.07871,
  Table 1: L = c + (g/G^γ + a)·N^−α + b·D^−β at E = 64, G the granularity; dense
  c + a·N^−α + b·D^−β with its own constants. N is read as the *total* non-embedding parameters of
  the MoE (its experts all count; the compute is still 6·N_active·D): that reading reproduces the
  8-16x of REFERENCE §8 (8.1x at G = 1, 15.8x at G = 8 for E = 64 at 1e13 FLOPs, compute-optimal);
  N as active parameters makes E = 64 *lose* (0.17x). Fitted at E = 64 only: at other E it is an
  extrapolation in E (reported as such).
* Ludziejewski et al. 2025, "Joint MoE Scaling Laws", arXiv 2502.05172, Table 3:
  L = a·Ê^δ·N^(α+γ·ln Ê) + b·Ê^ω·D^(β+ζ·ln Ê) + c, Ê Clark's transformed expert count with its own
  (E_start, E_max) (Ê(1) = E_start for dense), N active parameters with embeddings. β is printed
  0.5529; read here as −0.5529, the only sign with which the loss falls with data. With that
  reading (and every other constant as printed) E = 8 is predicted 2.6x (E = 32: 5.3x) at 1e13
  FLOPs compute-optimal and never to lose at equal N and D: REFERENCE §8's ~1.0x, ~1.5x and
  "loses below ~29 tokens per parameter at N = 1M" are NOT reproduced by this reading, nor by any
  of the 16 sign readings of (δ, γ, ω, ζ) with N and D in units of 1, 1e6 or 1e9 (scanned; see
  tests/test_moe_laws.py). The compute-optimal allocation it implies (~1e-5 tokens per parameter
  at 1e13 FLOPs) is far outside its fitted range (0.5B-80B tokens), a sign the printed constants
  are not the ones the paper's figures use; treat its predictions as unverified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy import optimize as sp_optimize

from neoscale.scaling.moe import CLARK_S_BASE, saturated_experts

SOURCES = {
    "clark": "Clark et al. 2022, arXiv 2202.01169, S-BASE (Table/Appendix constants a, b, c, d; "
             "E_start, E_max)",
    "krajewski": "Krajewski et al. 2024, arXiv 2402.07871, Table 1 (E = 64)",
    "joint": "Ludziejewski et al. 2025, arXiv 2502.05172, Table 3",
}
KRAJEWSKI_MOE = {"a": 18.1, "alpha": 0.115, "b": 30.8, "beta": 0.147, "g": 2.1, "gamma": 0.58, "c": 0.47}
KRAJEWSKI_DENSE = {"a": 16.3, "alpha": 0.126, "b": 26.7, "beta": 0.127, "c": 0.47}
KRAJEWSKI_EXPERTS = 64
JOINT = {"a": 35.91, "delta": -0.1889, "alpha": -0.2285, "gamma": 0.0098, "b": 35.98,
         "omega": -0.1775, "beta": -0.5529, "zeta": -0.0259, "e_start": 2.07, "e_max": 290.5,
         "c": 1.3637}
JOINT_BETA_AS_PRINTED = 0.5529  # the table's sign; JOINT["beta"] is the reading used (docstring)


def moe_total_fraction(experts: float) -> float:
    """Total over active non-embedding parameters of a top-1 MoE in every layer whose MLP is 2/3
    of a block (d_ff = 4·d): (1/3 + 2/3·E)."""
    return 1.0 / 3.0 + 2.0 / 3.0 * experts


def clark_loss(n, experts, constants: dict = CLARK_S_BASE) -> np.ndarray:
    """S-BASE's loss at N (dense = active) parameters and E experts (any D: it has no D term)."""
    log_n = np.log10(np.asarray(n, np.float64))
    log_e = np.log10(saturated_experts(experts, constants["e_start"], constants["e_max"]))
    k = constants
    return 10 ** (k["a"] * log_n + k["b"] * log_e + k["c"] * log_n * log_e + k["d"])


def clark_effective_params(n, experts, constants: dict = CLARK_S_BASE) -> np.ndarray:
    """N̄: the dense parameter count with S-BASE's loss of (n, experts)."""
    log_e = np.log10(saturated_experts(experts, constants["e_start"], constants["e_max"]))
    log_e1 = np.log10(saturated_experts(1.0, constants["e_start"], constants["e_max"]))
    k = constants
    log_n = np.log10(np.asarray(n, np.float64))
    log_loss = k["a"] * log_n + k["b"] * log_e + k["c"] * log_n * log_e
    return 10 ** ((log_loss - k["b"] * log_e1) / (k["a"] + k["c"] * log_e1))


def krajewski_loss(n_active, tokens, experts, granularity: float = 1.0) -> np.ndarray:
    """Table 1's loss; experts = 1 is its dense law, any other count the E = 64 law evaluated at
    the MoE's total non-embedding parameters (moe_total_fraction(E)·N_active)."""
    n, d = np.asarray(n_active, np.float64), np.asarray(tokens, np.float64)
    if experts == 1:
        k = KRAJEWSKI_DENSE
        return k["c"] + k["a"] * n ** -k["alpha"] + k["b"] * d ** -k["beta"]
    k = KRAJEWSKI_MOE
    total = moe_total_fraction(experts) * n
    return (k["c"] + (k["g"] / granularity ** k["gamma"] + k["a"]) * total ** -k["alpha"]
            + k["b"] * d ** -k["beta"])


def joint_loss(n_active, tokens, experts, constants: dict = JOINT) -> np.ndarray:
    """Table 3's joint law at N active parameters, D tokens and E experts (E = 1: dense)."""
    k = constants
    e_hat = saturated_experts(experts, k["e_start"], k["e_max"])
    log_e = np.log(e_hat)
    n, d = np.asarray(n_active, np.float64), np.asarray(tokens, np.float64)
    return (k["a"] * e_hat ** k["delta"] * n ** (k["alpha"] + k["gamma"] * log_e)
            + k["b"] * e_hat ** k["omega"] * d ** (k["beta"] + k["zeta"] * log_e) + k["c"])


LossLaw = Callable[[np.ndarray, np.ndarray, float], np.ndarray]  # (N_active, D, E) -> loss
LAWS: dict[str, LossLaw] = {"krajewski": krajewski_loss, "joint": joint_loss}


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One law's multiplier of E experts over dense at one compute and allocation."""

    law: str
    experts: int
    compute: float
    tokens_per_param: float
    multiplier: float
    note: str | None = None


def _dense_compute_same_ratio(law: LossLaw, loss: float, ratio: float) -> float:
    """C' = 6·N'·(r·N') with L_dense(N', r·N') = loss, or nan when dense never reaches it."""
    def gap(log_n):
        n = np.exp(log_n)
        return float(law(n, ratio * n, 1)) - loss
    low, high = np.log(1e0), np.log(1e16)
    if gap(high) > 0 or gap(low) < 0:
        return float("nan")
    n = np.exp(sp_optimize.brentq(gap, low, high, xtol=1e-12))
    return 6.0 * ratio * n * n


def predict_multiplier(law: str, experts: int, compute: float, tokens_per_param: float) -> Prediction:
    """Law ``law``'s multiplier of ``experts`` over dense at C = 6·N·D = compute and D/N =
    tokens_per_param (N active parameters); ValueError for an unknown law or a bad input."""
    if law not in (*LAWS, "clark"):
        raise ValueError(f"unknown MoE law {law!r}; valid: clark, {', '.join(LAWS)}")
    if not (compute > 0 and tokens_per_param > 0 and experts >= 1):
        raise ValueError(f"compute={compute}, tokens_per_param={tokens_per_param} and "
                         f"experts={experts} must be positive (experts >= 1)")
    n = np.sqrt(compute / (6.0 * tokens_per_param))
    note = None
    if law == "clark":
        value = float(clark_effective_params(n, experts) / n)
        note = "no D term (fitted at 130B tokens): the effective-parameter ratio N̄/N"
    else:
        loss = float(LAWS[law](n, tokens_per_param * n, experts))
        value = _dense_compute_same_ratio(LAWS[law], loss, tokens_per_param) / compute
        if law == "krajewski" and experts != KRAJEWSKI_EXPERTS:
            note = f"fitted at E = {KRAJEWSKI_EXPERTS}: extrapolated in E"
    return Prediction(law, int(experts), float(compute), float(tokens_per_param), float(value), note)


def _optimal_loss(law: LossLaw, compute: float, experts: float) -> tuple[float, float]:
    """(the lowest loss at C = 6·N·D, the N that reaches it)."""
    def loss(log_n):
        n = np.exp(log_n)
        return float(law(n, compute / (6.0 * n), experts))
    result = sp_optimize.minimize_scalar(loss, bounds=(np.log(1e2), np.log(compute / 60.0)),
                                         method="bounded", options={"xatol": 1e-9})
    return float(result.fun), float(np.exp(result.x))


def compute_optimal_multiplier(law: str, experts: int, compute: float, **kwargs) -> float:
    """The multiplier when MoE and dense each take their compute-optimal allocation: dense's
    compute to reach the MoE's lowest loss at ``compute``, over ``compute`` (kwargs: the law's
    own, e.g. granularity for krajewski)."""
    fn = LAWS[law]
    target, _ = _optimal_loss(lambda n, d, e: fn(n, d, e, **kwargs), compute, experts)
    log_c = sp_optimize.brentq(
        lambda lc: _optimal_loss(lambda n, d, e: fn(n, d, e, **kwargs), np.exp(lc), 1)[0] - target,
        np.log(compute) - 12, np.log(compute) + 16, xtol=1e-10)
    return float(np.exp(log_c) / compute)


def crossover_tokens_per_param(law: str, experts: int, n_active: float) -> float | None:
    """The tokens per parameter at which ``experts`` and dense reach the same loss at equal N and
    D (equal compute), or None when they never do within 0.1-1e5 tokens per parameter."""
    fn = LAWS[law]
    ratios = np.geomspace(0.1, 1e5, 400)
    diff = np.array([float(fn(n_active, r * n_active, experts) - fn(n_active, r * n_active, 1))
                     for r in ratios])
    change = np.nonzero(np.sign(diff[:-1]) != np.sign(diff[1:]))[0]
    if change.size == 0:
        return None
    i = int(change[0])
    return float(np.exp(sp_optimize.brentq(
        lambda lr: float(fn(n_active, np.exp(lr) * n_active, experts)
                         - fn(n_active, np.exp(lr) * n_active, 1)),
        np.log(ratios[i]), np.log(ratios[i + 1]))))


def predictions(experts: int, compute: float, tokens_per_param: float) -> list[dict]:
    """Every law's prediction at one compute and allocation, JSON-able (the report's rows)."""
    return [dataclasses.asdict(predict_multiplier(law, experts, compute, tokens_per_param))
            | {"source": SOURCES[law]} for law in ("clark", "krajewski", "joint")]
