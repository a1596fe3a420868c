"""Reproduces OLMo's two-step task forecast (Bhagia et al. 2024, arXiv 2412.04403) from its
public ladder tables, with intervals from the bootstrap over the 16 ladder runs.

    python benchmarks/task_chain.py [--n_bootstrap=200] [--seed=0]

Runs offline on tests/data/olmo_ladder/ (Apache-2.0, allenai/OLMo; README there). The procedure
is the paper's, as its code runs it (`scripts/scaling/predict.py ... --skip_perc 0.1
--moving_avg 5`), except step 1's optimiser, which is neoscale's Approach 3
(`neoscale.scaling.task_chain`):

- ladder: 190M, 370M, 760M, 1B at 1, 2, 5, 10 × Chinchilla tokens (16 runs), N as the paper
  counts it; targets 7B-4T (N 6,887,575,552, D 3,945,065,873,408) and 13B-5T (N 13,202,396,160,
  D 5,000,088,518,656);
- step 1: each run's task bits per byte is the mean of its last 5 evaluations, D its last row's
  tokens; L(N, D) = E + A/N^α + B/D^β;
- step 2: every evaluation of every ladder run after the first 10%, each a moving average of 5
  evaluations (bits per byte and accuracy), plus the ideal point (0, 1); the sigmoid;
- the actual accuracy: a target's last evaluation, a moving average of 5 (7B-4T has one row);
- MMLU is the weighted mean of its 4 parts (0.215, 0.335, 0.219, 0.231), in bits per byte and in
  accuracy; accuracy is length-normalised everywhere (the paper's `_rc_5shot_len_norm`).

Prints, per target and task, the predicted accuracy, its 95% prediction and confidence intervals
and the actual accuracy (and, for comparison, the prediction with Gadre et al.'s Err(L) as step 2,
no interval); then per target the mean absolute error and how many prediction intervals hold the
actual value. The last line is one JSON object. Fits, not times: valid on a busy machine. The data
procedure is `task_chain.inputs_from_evaluations` with moving_average=5, skip_fraction=0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from neoscale.scaling import task_chain  # noqa: E402

DATA = os.path.join(REPO, "tests", "data", "olmo_ladder")
N_BY_SIZE = {"190M": 190354176, "370M": 371262464, "760M": 758220288, "1B": 1279395840}
TARGETS = {"7B-4T": (6887575552, 3945065873408), "13B-5T": (13202396160, 5000088518656)}
MMLU = {"mmlu_stem_test": 0.215, "mmlu_humanities_test": 0.335,
        "mmlu_social_sciences_test": 0.219, "mmlu_other_test": 0.231}
# display name -> ({OLMo key: weight}, chance accuracy as OLMo's task_minimum)
TASKS = {
    "MMLU": (MMLU, 0.25),
    "HellaSwag": ({"hellaswag_val": 1.0}, 0.25),
    "PIQA": ({"piqa_val": 1.0}, 0.5),
    "SIQA": ({"socialiqa_val": 1.0}, 1 / 3),
    "CSQA": ({"csqa_val": 1.0}, 0.2),
    "OBQA": ({"openbookqa_test": 1.0}, 0.25),
    "ARC-E": ({"arc_easy_test": 1.0}, 0.25),
    "ARC-C": ({"arc_challenge_test": 1.0}, 0.25),
}
# The paper's absolute errors of its own 7B-4T predictions (points; Table 2 of arXiv 2412.04403).
PAPER_ERROR_7B = {"MMLU": 0.6, "HellaSwag": 1.2, "PIQA": 0.8, "SIQA": 1.2, "CSQA": 3.1,
                  "OBQA": 5.2, "ARC-E": 8.0, "ARC-C": 10.4}
PAPER_MEAN_ERROR = {"7B-4T": 3.8, "13B-5T": 4.2}
MOVING_AVERAGE, SKIP_FRACTION = 5, 0.1


def task_metric(frame: pd.DataFrame, keys: dict[str, float], metric: str) -> np.ndarray:
    """(rows,) weighted mean over `keys` of the metric "bpb" or "acc" (length-normalised)."""
    columns = [f"eval/downstream_bpb/{k}_rc_5shot_bpb" if metric == "bpb"
               else f"eval/downstream/{k}_rc_5shot_len_norm" for k in keys]
    return np.average(frame[columns].to_numpy(np.float64), axis=1, weights=list(keys.values()))


def task_frame(ladder: pd.DataFrame, keys: dict[str, float]) -> pd.DataFrame:
    """The ladder's rows as a results table: run, params_active, tokens, task_bpb, task_acc."""
    size = ladder["run"].str.split("-").str[0]
    return pd.DataFrame({"run": ladder["run"], "params_active": size.map(N_BY_SIZE),
                         "tokens": ladder["tokens"], "task_bpb": task_metric(ladder, keys, "bpb"),
                         "task_acc": task_metric(ladder, keys, "acc")})


def actual_accuracy(targets: pd.DataFrame, target: str, keys: dict[str, float]) -> float:
    """The target's last evaluation as the paper reads it: moving average of its last 5 rows."""
    return float(task_metric(targets[targets["target"] == target], keys, "acc")[-MOVING_AVERAGE:].mean())


def reproduce(n_bootstrap: int = 200, seed: int = 0, data: str = DATA, starts=None) -> dict:
    """{target: {task: {predicted, prediction_interval, confidence_interval, actual,
    predicted_bpb, actual_bpb}}}, accuracies in points."""
    ladder = pd.read_csv(os.path.join(data, "ladder.csv"))
    targets = pd.read_csv(os.path.join(data, "targets.csv"))
    covariates = np.array(list(TARGETS.values()), np.float64)
    out: dict = {t: {} for t in TARGETS}
    for task, (keys, chance) in TASKS.items():
        inputs = task_chain.inputs_from_evaluations(
            task_frame(ladder, keys), "task_bpb", "task_acc", moving_average=MOVING_AVERAGE,
            skip_fraction=SKIP_FRACTION)
        chain = task_chain.fit_task_chain(*inputs, chance=chance, n_bootstrap=n_bootstrap, seed=seed,
                                          starts=starts)
        predicted, bpb = chain.predict(covariates), chain.predict_bpb(covariates)
        gadre = task_chain.fit_accuracy(inputs[3], inputs[4], chance=chance, form="gadre").predict(bpb)
        prediction = chain.interval(covariates, kind="prediction", seed=seed)
        confidence = chain.interval(covariates, kind="confidence")
        for i, target in enumerate(TARGETS):
            rows = targets[targets["target"] == target]
            out[target][task] = {
                "predicted": 100 * float(predicted[i]),
                "prediction_interval": None if prediction is None else (100 * prediction[:, i]).tolist(),
                "confidence_interval": None if confidence is None else (100 * confidence[:, i]).tolist(),
                "actual": 100 * actual_accuracy(targets, target, keys),
                "predicted_bpb": float(bpb[i]),
                "gadre": 100 * float(gadre[i]),
                "actual_bpb": float(task_metric(rows, keys, "bpb")[-MOVING_AVERAGE:].mean()),
            }
    return out


def summary(results: dict) -> dict:
    """Per target: mean absolute error (points) and how many prediction / confidence intervals
    hold the actual accuracy."""
    out = {}
    for target, tasks in results.items():
        errors = [abs(r["predicted"] - r["actual"]) for r in tasks.values()]

        held = {kind: sum(r[kind] is not None and r[kind][0] <= r["actual"] <= r[kind][1]
                          for r in tasks.values()) for kind in ("prediction_interval", "confidence_interval")}
        gadre = [abs(r["gadre"] - r["actual"]) for r in tasks.values()]
        out[target] = {"mean_abs_error_points": round(float(np.mean(errors)), 2),
                       "gadre_mean_abs_error_points": round(float(np.mean(gadre)), 2),
                       "covered": held["prediction_interval"],
                       "covered_confidence": held["confidence_interval"], "tasks": len(tasks)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_bootstrap", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = reproduce(args.n_bootstrap, args.seed)

    def fmt(interval):
        return "       none      " if interval is None else f"[{interval[0]:5.1f}, {interval[1]:5.1f}]"

    for target, tasks in results.items():
        print(f"\n{target}: accuracy in points (95% intervals from {args.n_bootstrap} resamples of the "
              "16 runs)")
        print(f"{'task':<10} {'predicted':>9} {'prediction int.':>16} {'confidence int.':>16} "
              f"{'actual':>7} {'error':>6} {'paper |err|':>11} {'bpb pred/act':>13} {'Gadre':>6}")
        for task, r in tasks.items():
            paper = f"{PAPER_ERROR_7B[task]:11.1f}" if target == "7B-4T" else f"{'':>11}"
            print(f"{task:<10} {r['predicted']:9.1f} {fmt(r['prediction_interval']):>16} "
                  f"{fmt(r['confidence_interval']):>16} {r['actual']:7.1f} "
                  f"{r['predicted'] - r['actual']:+6.1f} {paper} "
                  f"{r['predicted_bpb']:6.3f}/{r['actual_bpb']:.3f} {r['gadre']:6.1f}")
    totals = summary(results)
    print()
    for target, s in totals.items():
        print(f"{target}: mean absolute error {s['mean_abs_error_points']:.1f} points (paper "
              f"{PAPER_MEAN_ERROR[target]}); prediction intervals hold the actual accuracy on "
              f"{s['covered']} of {s['tasks']} tasks, confidence intervals on {s['covered_confidence']}; "
              f"with Gadre's Err(L) as step 2, mean absolute error {s['gadre_mean_abs_error_points']:.1f}")
    print(json.dumps({t: {"mean_abs_error_points": s["mean_abs_error_points"], "covered": s["covered"],
                          "covered_confidence": s["covered_confidence"],
                          "gadre_mean_abs_error_points": s["gadre_mean_abs_error_points"]}
                      for t, s in totals.items()}))


if __name__ == "__main__":
    main()
