"""fit.json's envelope_approach1: Chinchilla's Approach 1, the lower envelope of the per-step
training curves (a cooldown branch's only after its fork; neoscale.scaling.envelope)."""

from __future__ import annotations

import pandas as pd

from neoscale.scaling import envelope
from neoscale.scaling.study.entries import COMPUTE_AXIS, skipped, uncertainty


def entry(points: pd.DataFrame, curves, n_bootstrap: int, seed: int) -> dict:
    if not curves:
        return skipped("no training curves (runs/*/metrics.jsonl)")
    params = dict(zip(points["run"], points["params_active"], strict=True))
    parents = dict(zip(points["run"], points["parent"], strict=True))
    family = _after_fork({k: v for k, v in curves.items() if k in params}, points)
    try:
        fit, boot = envelope.fit_envelope_bootstrap(
            family, params, groups=parents, n_bootstrap=n_bootstrap, seed=seed
        )
    except ValueError as e:
        return skipped(str(e))
    return {
        "status": "fitted",
        "form": "N_opt = k_n·C^a, D_opt = k_d·C^b from the lower envelope of training curves",
        "compute_axis": COMPUTE_AXIS + ", the curves' flops",
        "compute": fit.compute,
        "loss": fit.loss,
        "n_opt": fit.n_opt,
        "d_opt": fit.d_opt,
        "constants": {"a": fit.a, "b": fit.b, "log_k_n": fit.log_k_n, "log_k_d": fit.log_k_d},
        **uncertainty(boot),
    }


def _after_fork(curves: dict[str, pd.DataFrame], points: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Curves with every cooldown branch's rows at or before its fork_step removed (there the
    branch is its parent run, which has its own curve)."""
    forks = points.loc[points["fork_step"].notna(), ["run", "fork_step"]]
    out = dict(curves)
    for run, fork in zip(forks["run"], forks["fork_step"], strict=True):
        if run in out and "step" in out[run].columns:
            out[run] = out[run][out[run]["step"] > fork]
    return out
