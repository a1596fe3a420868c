r"""How far beyond its ladder do the CPU demo's laws predict? (issue 25; prints a table, not a test)

    python benchmarks/demo_extrapolation.py --workdir=/tmp/demo_check \
        --check_sizes=w192d4h6,w224d4h7 [--train] [--sizes=LADDER] [-- --config.x=y ...]

With ``--train`` it first runs the demo's own study (``experiments/cpu_demo.py``: its sizes,
tokens per parameter, learning-rate law, data, held-out set and cooldown branches) with the check
sizes appended to ``--sizes``, into ``--workdir``; the runner trains each check size exactly as
it would have trained a demo size. Without it, it reads a workdir trained that way.

``--sizes`` replaces the demo's ladder (default: ``experiments/cpu_demo.py``'s sizes) and anything
after ``--`` is passed to ``neoscale.run`` (``--config.train.batch_size=16``, ...): a candidate
ladder is checked exactly as the demo would be.

Then it fits every law form below on the ladder's sizes only and predicts the final held-out
loss of each check size's main run (its last evaluation, after the full WSD cooldown):

- ``L(C)``: E + A·C^-α on the compute-loss frontier (what fit.json reports), and the pure
  power law A·C^-α;
- ``Approach 3``: E + A/N^α + B/D^β at the check run's own (N, D);
- ``ladder law``: 1 / (1/H + C^α/A) on the ladder's main runs, H the context-free loss the study
  recorded in its plan.json (``neoscale.scaling.ladder_law``);
each on two parameter axes: ``total`` (N = params_active, C = the recorded FLOPs: what the study
fits) and ``non-embedding`` (N = params_non_embedding, C = 6·N·D, as Kaplan et al. 2020 fitted:
the demo's smallest models are 73% embedding, its largest 26%).

The table gives, per check size, its compute as a multiple of the demo's largest main run, the
measured loss, and each form's prediction and relative error. Losses do not depend on how busy
the machine is, so the table is valid whenever it ran; the study's wall time is not, and is
printed with the matmul probe only for the record.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from neoscale.runner import results as results_lib  # noqa: E402
from neoscale.runner import study as study_lib  # noqa: E402
from neoscale.scaling import chinchilla, ladder_law, power_law  # noqa: E402
from neoscale.scaling import results as scaling_results  # noqa: E402
from neoscale.scaling.points import pareto_frontier  # noqa: E402


def demo_sizes() -> list[str]:
    """The default demo's ladder, from its own config (one source of truth)."""
    from experiments import cpu_demo

    return [s.strip() for s in cpu_demo.get_config().sizes.split(",")]


def train(workdir: str, ladder: list[str], check_sizes: list[str], overrides: list[str]) -> float:
    """Runs the demo study on ``ladder`` with the check sizes appended; returns its wall seconds."""
    sizes = ",".join([*ladder, *check_sizes])
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "neoscale.run", f"--sizes={sizes}", f"--workdir={workdir}",
                    *overrides], cwd=REPO, check=True)
    return time.monotonic() - start


def axes(points: pd.DataFrame, axis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, C) of the points on the ``total`` or ``non-embedding`` axis."""
    d = points["tokens"].to_numpy(np.float64)
    if axis == "total":
        n = points["params_active"].to_numpy(np.float64)
        return n, d, points["flops"].to_numpy(np.float64)
    n = points["params_non_embedding"].to_numpy(np.float64)
    return n, d, 6.0 * n * d


def context_free_loss(workdir: str) -> float | None:
    """H of the ladder's law, as the study recorded it in its plan.json (None if it did not)."""
    if not os.path.exists(os.path.join(workdir, study_lib.PLAN_FILE)):
        return None
    return study_lib.load_measured(workdir).get("context_free_loss")


def predictions(ladder: pd.DataFrame, check: pd.DataFrame, axis: str,
                h: float | None) -> dict[str, np.ndarray]:
    """Each law form fitted on ``ladder`` and evaluated at the ``check`` runs."""
    n, d, c = axes(ladder, axis)
    loss = ladder["eval_loss"].to_numpy(np.float64)
    frontier = pareto_frontier(c, loss)
    cn, cd, cc = axes(check, axis)
    out = {}
    for name, with_offset in (("L(C)", True), ("L(C) pure", False)):
        fit = power_law.fit_power_law(c[frontier], loss[frontier], with_offset=with_offset)
        out[name] = fit.predict(cc)
    out["Approach 3"] = chinchilla.fit_chinchilla(n, d, loss).predict(cn, cd)
    if h is not None:  # on the main runs: the ladder's own allocation
        main = ~scaling_results.is_branch(ladder).to_numpy()
        out["ladder law"] = ladder_law.fit_ladder_law(c[main], loss[main], h).predict(cc)
    return out


def table(workdirs: list[str], ladder_sizes: list[str], check_sizes: list[str]) -> str:
    frame = pd.concat([results_lib.read_results(w) for w in workdirs], ignore_index=True)
    h = next((v for v in map(context_free_loss, workdirs) if v is not None), None)
    points, _ = scaling_results.final_points(scaling_results.validate(frame))
    ladder = points[points["size"].isin(ladder_sizes)]
    check = points[points["size"].isin(check_sizes) & points["cooldown"].isna()]
    missing = sorted(set(check_sizes) - set(check["size"]))
    if missing:
        raise SystemExit(f"{workdirs} hold no finished main run of {missing}; train it with --train")
    largest = ladder[ladder["cooldown"].isna()]["flops"].max()
    lines = ["| check size | C / demo's largest | measured | axis | law | predicted | error |",
             "|---|---|---|---|---|---|---|"]
    for axis in ("total", "non-embedding"):
        for law, predicted in predictions(ladder, check, axis, h).items():
            for (_, row), value in zip(check.iterrows(), predicted, strict=True):
                error = (value - row["eval_loss"]) / row["eval_loss"]
                lines.append(f"| {row['size']} | {row['flops'] / largest:.1f}x | {row['eval_loss']:.4f} "
                             f"| {axis} | {law} | {value:.4f} | {error:+.2%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True,
                        help="The study's workdir; or several, comma-separated (a check size trained "
                        "alone with the demo's settings into its own), read as one table.")
    parser.add_argument("--check_sizes", default="cpu-1.8M")
    parser.add_argument("--sizes", default=None, help="The ladder (default: the demo's sizes).")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("overrides", nargs="*", help="After --: flags passed to neoscale.run.")
    args = parser.parse_args()
    check_sizes = [s.strip() for s in args.check_sizes.split(",") if s.strip()]
    ladder = [s.strip() for s in args.sizes.split(",")] if args.sizes else demo_sizes()
    if args.train:
        from neoscale.benchmarking.probe import matmul_flops_per_second

        probe = matmul_flops_per_second(2048, "float32") / 1e9
        seconds = train(args.workdir, ladder, check_sizes, args.overrides)
        print(f"study wall time {seconds / 60:.1f} min (matmul probe {probe:.0f} GFLOP/s before it)")
    print(table(args.workdir.split(","), ladder, check_sizes))


if __name__ == "__main__":
    main()
