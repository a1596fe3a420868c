r"""How many bootstrap resamples make the ladder forms' 10x forecast intervals stable to the second
digit? (issue 33 item 3; prints a table, not a test)

    python benchmarks/forecast_resamples.py [--sizes=6] [--noise=0.005] [--seeds=5]

Demo-like data: a ladder of --sizes sizes doubling in compute from 1.6e12 FLOPs, its losses the
M4 form with H = 6.206 (the demo's measured context-free loss), E = 1.5, α = 0.3, through the
demo's smallest loss, times log-normal noise of --noise (the 0.3-2% a seed moves a small model).
For each form and each number of resamples, the 10x forecast's 95% prediction interval is computed
with --seeds bootstrap seeds; the table gives the largest spread of either endpoint across seeds
(nats) and the accepted resamples.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from neoscale.scaling.study import ladder  # noqa: E402
from neoscale.scaling.study.entries import forecast  # noqa: E402

H = 6.206


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, default=6)
    parser.add_argument("--noise", type=float, default=0.005)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--resamples", default="100,200,400,800")
    args = parser.parse_args()
    compute = 1.6e12 * 2.0 ** np.arange(args.sizes)
    truth = np.array([[1.5, 0.0, 0.3]])
    # A through the demo's smallest loss 5.2 at the first compute (below 0.9·H: not excluded)
    truth[0, 1] = compute[0] ** 0.3 / (1 / (5.2 - 1.5) - 1 / (H - 1.5))
    from neoscale.scaling import ladder_law

    loss = ladder_law.predict(truth, H, compute, "floor")[0]
    loss = loss * np.exp(args.noise * np.random.default_rng(0).standard_normal(loss.size))
    runs = pd.DataFrame({"run": [f"s{i}" for i in range(loss.size)], "flops": compute,
                         "eval_loss": loss, "params_active": compute, "tokens": compute})
    at = compute[-1] * 10
    print(f"losses {np.round(loss, 3).tolist()}; 10x compute {at:.3g}")
    print("| form | resamples | accepted (seed 0) | 10x forecast | PI low spread | PI high spread | s |")
    print("|---|---|---|---|---|---|---|")
    for form in ladder.FORMS:
        for n in (int(v) for v in args.resamples.split(",")):
            ends, start = [], time.time()
            for seed in range(args.seeds):
                fit, boot, residuals = ladder.fit_form(runs, H, form, n, seed, 1e-3)
                f = forecast(fit, boot, residuals, ladder.FORMS[form][1], at, seed,
                             ladder.form_log(form, H, [at]))
                if seed == 0:
                    accepted = boot.accepted
                ends.append(f["prediction_interval"] or [np.nan, np.nan])
            ends = np.array(ends)
            spread = np.nanmax(ends, axis=0) - np.nanmin(ends, axis=0)
            print(f"| {form} | {n} | {accepted} | {f['loss']:.4f} | {spread[0]:.4f} | {spread[1]:.4f} "
                  f"| {time.time() - start:.0f} |")


if __name__ == "__main__":
    main()
