"""How often the compute multiplier's 95% interval holds the truth, on synthetic sparsity studies
shaped like experiments/moe_cpu.py.

Each study: dense and a routed variant whose loss is dense's law at ``multiplier`` x the compute,
L = E + A·(m·C)^(−α), at the given widths (N = 4000·width active parameters, C = 6·N·(tpp·N)),
with two model seeds at ``--replicated`` widths and log-normal loss noise ``--noise`` per run.
The multiplier at the largest shared compute (neoscale.scaling.multiplier.compare_groups, the
report's figure) is checked against m.

    python benchmarks/multiplier_coverage.py                  # 20 studies, 6 widths, 1% noise
    python benchmarks/multiplier_coverage.py --widths=16,24,32,48 --noise=0.003

Prints one line per study and a summary; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from neoscale.scaling import multiplier

E, A, ALPHA = 2.0, 60.0, 0.15


def variant_rows(widths, replicated, tpp, m, noise, rng, suffix) -> list[dict]:
    """One variant's final runs (the runner's columns that the multiplier reads)."""
    rows = []
    for d in widths:
        n = 4000.0 * d
        c = 6 * n * tpp * n
        for seed in range(2 if d in replicated else 1):
            loss = (E + A * (m * c) ** -ALPHA) * np.exp(noise * rng.standard_normal())
            name = f"w{d}d4h2{suffix}" + (f"-seed{seed}" if seed else "")
            rows.append({"run": name, "size": f"w{d}d4h2{suffix}", "d_model": d, "num_layers": 4,
                         "num_heads": 2, "params_active": n, "tokens": tpp * n, "flops": c,
                         "eval_loss": loss, "final": True, "status": "done", "parent": name,
                         "seed": seed})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="16,20,24,32,40,48")
    p.add_argument("--replicated", default="24,32")
    p.add_argument("--tpp", type=float, default=30.0)
    p.add_argument("--multiplier", type=float, default=0.7)
    p.add_argument("--noise", type=float, default=0.01, help="relative std of a run's loss")
    p.add_argument("--studies", type=int, default=20)
    p.add_argument("--n_bootstrap", type=int, default=200)
    args = p.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    replicated = {int(w) for w in args.replicated.split(",") if w}
    held, ratios, no_interval = 0, [], 0
    for study in range(args.studies):
        rng = np.random.default_rng(study)
        tables = {"dense": pd.DataFrame(variant_rows(widths, replicated, args.tpp, 1.0, args.noise,
                                                     rng, "")),
                  "routed": pd.DataFrame(variant_rows(widths, replicated, args.tpp,
                                                      args.multiplier, args.noise, rng, "e8k1"))}
        row = multiplier.compare_groups(tables, "dense", n_bootstrap=args.n_bootstrap,
                                        seed=study)["routed"]["at_shared_compute"]
        interval = row.get("interval")
        if not interval or None in interval:
            no_interval += 1
            print(f"study {study}: {row['multiplier']:.3f} (no interval)")
            continue
        inside = interval[0] <= args.multiplier <= interval[1]
        held += inside
        ratios.append(interval[1] / interval[0])
        print(f"study {study}: {row['multiplier']:.3f} [{interval[0]:.3f}, {interval[1]:.3f}] "
              f"{'holds' if inside else 'MISSES'} {args.multiplier}")
    with_interval = args.studies - no_interval
    median = float(np.median(ratios)) if ratios else float("nan")
    print(f"{held} of {with_interval} intervals hold the true multiplier (95% nominal); "
          f"{no_interval} without one; median upper/lower {median:.2f}")
    print(json.dumps({"studies": args.studies, "with_interval": with_interval, "held": held,
                      "median_ratio": float(np.median(ratios)) if ratios else None,
                      "widths": widths, "noise": args.noise, "multiplier": args.multiplier}))


if __name__ == "__main__":
    main()
