"""Synthetic studies drawn from a known law, for tests, notebooks and fixtures.

Loss follows L(N, D, E) = E0 + A/(N^α·E^γ) + B/D^β with multiplicative log-normal noise;
C = 6·N·D. Dense runs sit on an IsoFLOP grid around the compute-optimal size of each budget;
MoE runs (E > 1) train each size for 20 tokens per parameter.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd

TRUE_LAW = {"E0": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37, "gamma": 0.3}


def law_loss(n, d, experts=1.0, law=TRUE_LAW):
    n, d, experts = (np.asarray(v, np.float64) for v in (n, d, experts))
    return law["E0"] + law["A"] / (n ** law["alpha"] * experts ** law["gamma"]) + law["B"] / d ** law["beta"]


def small_study(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, loss), each (17,): 17 runs of 5 sizes of TRUE_LAW with 1% log-normal noise, the size
    of the CPU demo, where absolute stopping rules once left bootstrap refits unconverged."""
    rng = np.random.default_rng(seed)
    n = np.append(np.repeat([2e6, 5e6, 1.2e7, 3e7], 4), 7e7)
    d = n * rng.choice([5, 10, 20, 40], size=n.size)
    return n, d, law_loss(n, d) * np.exp(0.01 * rng.standard_normal(n.size))


def synthetic_study(
    *,
    budgets=(1e16, 1e17, 1e18),
    sizes_per_budget: int = 5,
    moe_experts=(4, 8),
    moe_sizes=(8e6, 3.2e7, 1.28e8),
    n_evals: int = 4,
    n_steps: int = 24,
    noise: float = 0.005,
    seed: int = 0,
    law=TRUE_LAW,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(results table with the runner's columns, run -> per-step curve)."""
    rng = np.random.default_rng(seed)
    alpha, beta = law["alpha"], law["beta"]
    g = (alpha * law["A"] / (beta * law["B"])) ** (1 / (alpha + beta))
    ladder = 1e6 * 2.0 ** np.arange(12)  # one size ladder shared by all budgets, as in a study
    runs = []
    for c in budgets:
        n_opt = g * (c / 6) ** (beta / (alpha + beta))
        nearest = np.sort(ladder[np.argsort(np.abs(np.log(ladder / n_opt)))[:sizes_per_budget]])
        for n in nearest:
            runs.append((n, c / (6 * n), 1, c))
    for e in moe_experts:
        for n in moe_sizes:
            runs.append((n, 20 * n, e, np.nan))
    rows, curves = [], {}
    for i, (n, d, e, budget) in enumerate(runs):
        name = f"r{i:02d}_{n / 1e6:g}M_e{e}"
        tokens = np.linspace(d / n_steps, d, n_steps)
        loss = law_loss(n, tokens, e, law) * np.exp(noise * rng.standard_normal(n_steps))
        curves[name] = pd.DataFrame(
            {"step": np.arange(1, n_steps + 1), "loss": loss, "tokens": tokens, "flops": 6 * n * tokens}
        )
        eval_steps = np.linspace(n_steps // n_evals, n_steps, n_evals).astype(int) - 1
        for k, s in enumerate(eval_steps):
            eval_loss = law_loss(n, tokens[s], e, law) * np.exp(noise * rng.standard_normal())
            curves[name].loc[s, "eval_loss"] = eval_loss
            rows.append(
                {
                    "run": name,
                    "size": f"{n:.2g}",
                    "d_model": 0,
                    "num_layers": 0,
                    "num_heads": 0,
                    "num_experts": e,
                    "top_k": 1 if e > 1 else 0,
                    "params_total": n * (1 + 0.6 * (e - 1)),
                    "params_non_embedding": 0.9 * n,
                    "params_active": n,
                    "step": s + 1,
                    "tokens": tokens[s],
                    "flops": 6 * n * tokens[s],
                    "train_loss": curves[name].loss[s],
                    "eval_loss": eval_loss,
                    "wall_seconds": 1.0 + s,
                    "status": "done",
                    "budget_flops": budget,
                    "cooldown": np.nan,
                    "final": k == len(eval_steps) - 1,
                }
            )
    return pd.DataFrame(rows), curves


def write_workdir(workdir, results: pd.DataFrame, curves: dict[str, pd.DataFrame]) -> None:
    """Writes results.csv and runs/<run>/metrics.jsonl as the study runner does."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results.to_csv(workdir / "results.csv", index=False)
    for run, df in curves.items():
        (workdir / "runs" / run).mkdir(parents=True, exist_ok=True)
        with open(workdir / "runs" / run / "metrics.jsonl", "w") as f:
            for record in df.to_dict("records"):
                clean = {k: v for k, v in record.items() if not (isinstance(v, float) and np.isnan(v))}
                f.write(json.dumps(clean) + "\n")
