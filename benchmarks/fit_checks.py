"""Issue 22's figures, re-measured: bootstrap intervals of a small study against converged refits,
and a table whose 6·N·D overflows int64 (prints tables, not a test).

    python benchmarks/fit_checks.py [--n_bootstrap=200]

1. A 17-run study (5 sizes, 1% noise: tests/test_scaling_convergence.py's, the size of the CPU
   demo) fitted by Approach 3 with neoscale's bootstrap; every accepted resample is refitted again
   by scipy's L-BFGS-B with tight tolerances from neoscale's refit and the full fit (the
   converged reference). Printed: how many of neoscale's refits stop more than 1% above the
   reference's objective, and both 95% intervals of E, α, β.
2. ``python -m neoscale.fit --results=`` on an integer table whose 6·N·D is above 2^63.

Objectives and constants, not times: valid on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from neoscale.scaling import bootstrap, chinchilla  # noqa: E402
from neoscale.scaling.synthetic import law_loss, small_study  # noqa: E402


def interval_check(n_bootstrap: int) -> str:
    n, d, loss = small_study()
    fit, boot = chinchilla.fit_chinchilla_bootstrap(n, d, loss, n_bootstrap=n_bootstrap, seed=0)
    log_x, centre = chinchilla._features(n, d)
    weights = bootstrap.resample_weights(np.arange(n.size), n_bootstrap, seed=0)
    weights = weights[chinchilla.REQUIREMENT.met(log_x, weights > 0)]
    full = chinchilla._centred([np.log(fit.E), np.log(fit.A), np.log(fit.B), fit.alpha, fit.beta], centre)
    reference, above = [], 0
    for row, w in zip(boot.samples, weights, strict=True):
        ours = chinchilla._centred(np.concatenate([np.log(row[:3]), row[3:]]), centre)
        ours_objective = chinchilla.LAW.value_and_grad(ours[None], log_x, np.log(loss), w[None])[0][0]
        ref, ref_objective = chinchilla.reference_refit(log_x, np.log(loss), w, [ours, full])
        above += ours_objective > 1.01 * ref_objective
        ref = chinchilla._uncentred(ref, centre)
        reference.append([np.exp(ref[0]), ref[3], ref[4]])
    ours_ci = bootstrap.percentile_interval(boot.samples[:, [0, 3, 4]])
    ref_ci = bootstrap.percentile_interval(np.array(reference))
    lines = [f"17-run study: {boot.accepted} of {n_bootstrap} resamples accepted; {above} of neoscale's "
             "refits stopped more than 1% above the converged reference's objective",
             "| constant | neoscale 95% interval | converged reference |", "|---|---|---|"]
    for i, name in enumerate(("E", "alpha", "beta")):
        lines.append(f"| {name} | [{ours_ci[0, i]:.3f}, {ours_ci[1, i]:.3f}] | "
                     f"[{ref_ci[0, i]:.3f}, {ref_ci[1, i]:.3f}] |")
    return "\n".join(lines)


def integer_table_check() -> str:
    n = np.array([1_000_000_000, 2_000_000_000, 4_000_000_000, 8_000_000_000, 16_000_000_000])
    d = 20 * n  # 6·N·D from 1.2e20: above int64's 9.2e18
    rows = [(int(ni), int(di * f), float(law_loss(ni, di * f))) for ni, di in zip(n, d, strict=True)
            for f in (0.5, 1, 2)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "runs.csv")
        pd.DataFrame(rows, columns=["params", "tokens", "loss"]).astype(
            {"params": "int64", "tokens": "int64"}).to_csv(path, index=False)
        result = subprocess.run(
            [sys.executable, "-m", "neoscale.fit", f"--results={path}", "--params_column=params",
             "--tokens_column=tokens", "--loss_column=loss", "--n_bootstrap=20", f"--out_dir={tmp}/out",
             "--noplots"], capture_output=True, text=True, cwd=REPO)
        fit = None
        if result.returncode == 0:
            with open(os.path.join(tmp, "out", "fit.json")) as f:
                fit = json.load(f)
    status = "exit 0" if result.returncode == 0 else f"exit {result.returncode}: {result.stderr[-300:]}"
    alpha = fit["laws"]["chinchilla_approach3"]["constants"]["alpha"] if fit is not None else float("nan")
    low, high = 6.0 * n[0] * d[0] * 0.5, 6.0 * n[-1] * d[-1] * 2
    return (f"integer table (15 runs, 6·N·D from {low:.2g} to {high:.2g}): {status}; "
            f"Approach 3 alpha = {alpha:.4f} (true 0.34)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_bootstrap", type=int, default=200)
    args = parser.parse_args()
    print(interval_check(args.n_bootstrap))
    print()
    print(integer_table_check())


if __name__ == "__main__":
    main()
