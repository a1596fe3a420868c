r"""Is the demo's bend scale or optimisation? Its ladder at equal steps with per-size swept rates.

    nice -n 15 python benchmarks/confound_ladder.py --workdir=/tmp/confound \
        --demo_workdir=/work/demo-final [--log2_multipliers=-1,0,1] [--dry_run]

The CPU demo (``experiments/cpu_demo.py``) trains every size at batch 8, so its smallest size
takes 176 optimizer steps and its largest 1,568, each at the rate of a law fitted to an earlier
ladder (lr = 5.91·N^-0.606, extrapolated at the largest size). Its local slopes −d ln L / d ln C
steepen along the ladder (issue 33 item 5 asks whether that is scale or too few steps).

Here the demo's sizes train on the demo's data, tokens per parameter, sequence length, warmup
and held-out set, with two intended changes:

- the batch per size is scaled with its tokens so that every size trains about as many steps as
  the smallest at ``--smallest_batch`` (1: 1,408 steps); each size gets the smallest batch whose
  steps do not exceed the smallest size's, so the smallest trains at least as many steps as any;
- every size sweeps its rate over the demo law's rate × 2^k, k in ``--log2_multipliers``, and
  keeps the rate with the lowest final held-out loss; a best rate at the sweep's edge adds the next
  k beyond it (up to ``--extend_edges`` more per side). The whole ladder trains at the law's rate
  first, then each size's sweep, smallest first; ``--sweep_sizes`` limits the sweep to some sizes
  (the others keep the law's rate, and the table says so); ``--notrain`` only reads: the table
  holds every finished run under WORKDIR, whichever invocation trained it.

and one more: ``--schedule`` (default cosine, decaying to 10% of the peak, what the recorded
table used: without cooldown branches the study's default schedule applies; ``--schedule=wsd`` is
the demo's, a 20% 1-sqrt cooldown). No cooldown branches, replicates or downstream tasks (the
main runs' final held-out loss is what the slopes compare). Every run is an ordinary run
directory (``neoscale.training.train``: config.json, metrics.jsonl, finished.json) under
``WORKDIR/lr2x{k}/runs/{size}_tpp1.5``: rerun the same command to resume or to read.

It prints, per size: the batch, steps, the sweep's losses, the best rate and its final loss,
beside the demo's own loss (``--demo_workdir``: a finished demo study) and the local slopes of
both ladders; then the pure power law A·C^-α and the ladder's law 1/(1/H + C^α/A) fitted to each
ladder, and their predictions at the check sizes (``--checks``: the demo's settings measured
them, at 4.2x and 7.3x its largest compute; known before this study ran). Last line: one JSON
object. Losses do not depend on how busy the machine is.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
from absl import app, flags
from etils import epath

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import cpu_demo  # noqa: E402
from neoscale.runner import plan as plan_lib  # noqa: E402
from neoscale.scaling import ladder_law, power_law  # noqa: E402
from neoscale.scaling.points import local_slopes  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs go (resumable).", required=True)
_DEMO = flags.DEFINE_string("demo_workdir", None, "A finished demo study to compare with.")
_CACHE = flags.DEFINE_string("cache_dir", None, "Prepared data (default WORKDIR/cache).")
_MULTIPLIERS = flags.DEFINE_list("log2_multipliers", ["-1", "0", "1"],
                                 "k: rates are the demo law's rate x 2^k.")
_EXTEND = flags.DEFINE_integer("extend_edges", 1, "More k beyond an edge best, per side.")
_SMALLEST_BATCH = flags.DEFINE_integer("smallest_batch", 1, "Batch of the smallest size.")
LADDER = ["w32d4h1", "w48d4h2", "w64d4h2", "w96d4h3", "w128d4h4"]  # the demo's ladder when measured
_SIZES = flags.DEFINE_list("sizes", LADDER, "Sizes (default: the five the recorded table used; the "
                           "demo has since added w80d4h2).")
_CHECKS = flags.DEFINE_list("checks", ["w192d4h6:3.527", "w224d4h7:3.317"],
                            "size:loss measured with the demo's settings (batch 8, the law's rate).")
_SWEEP_SIZES = flags.DEFINE_list("sweep_sizes", None, "Sizes whose rate is swept (default: all); "
                                  "the others train at the law's rate only.")
_TRAIN = flags.DEFINE_bool("train", True, "Train what is missing; --notrain: read the finished runs.")
_SCHEDULE = flags.DEFINE_enum("schedule", "cosine", ["cosine", "wsd"], "Learning-rate schedule "
                              "(the demo's is wsd; the recorded table used cosine).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan, train nothing.")


def study_config(sizes: list[str], cache_dir: str):
    """The demo's study, main runs only, downstream tasks off."""
    c = cpu_demo.get_config()
    c.sizes = ",".join(sizes)
    c.cooldowns, c.replicates, c.eval.tasks = "", "", ""
    c.train.tensorboard = False
    c.train.schedule = _SCHEDULE.value
    c.train.evals_per_run, c.train.checkpoints_per_run = 4, 2
    c.data.cache_dir = cache_dir
    return c


def plan(study, sizes: list[str], overrides: dict) -> list:
    budget = plan_lib.parse_budget(tokens_per_param=study.budget.tokens_per_param)
    return plan_lib.make_plan(sizes, budget, vocab_size=int(study.data.tokenizer.split(":")[1]),
                              seq_len=int(study.data.seq_len), train=study.train,
                              model_overrides=dict(study.model), size_overrides=overrides)


def equal_step_batches(study, sizes: list[str], smallest_batch: int) -> dict[str, int]:
    """{size: batch}: the smallest batch whose steps do not exceed the smallest size's steps."""
    runs = plan(study, sizes, {s: {"batch_size": smallest_batch} for s in sizes})
    target = runs[0].steps
    return {run.size: max(smallest_batch, math.ceil(run.steps * smallest_batch / target))
            for run in runs}


def law_rate(study, params: int) -> float:
    coef, exponent = study.train.learning_rate_law
    return float(coef) * params ** float(exponent)


def sweep_plan(study, sizes, batches, k: int) -> list:
    """The ladder at rate multiplier 2^k (every size at its own batch)."""
    base = plan(study, sizes, {s: {"batch_size": b} for s, b in batches.items()})
    return plan(study, sizes, {run.size: {"batch_size": batches[run.size],
                                          "learning_rate": law_rate(study, run.params_active) * 2.0 ** k}
                               for run in base})


def train_run(run, study, workdir: epath.Path, cache_dir: str) -> tuple[float, float]:
    """(final held-out loss, FLOPs) of one planned run; inf for a diverged one."""
    from neoscale.runner.study import run_config
    from neoscale.training.loop import NonFiniteLossError, train

    try:
        result = train(run_config(run, study, workdir, cache_dir))
    except NonFiniteLossError:
        return math.inf, run.flops
    return float(result.eval_loss), float(result.flops)


def finished_runs(root: epath.Path, sizes: list[str]):
    """(size, k, (final held-out loss, FLOPs)) of every finished run under root/lr2x{k}."""
    for directory in sorted(root.glob("lr2x*")):
        k = int(directory.name[len("lr2x"):])
        for size in sizes:
            path = directory / "runs" / f"{size}_tpp1.5" / "finished.json"
            if path.exists():
                d = json.loads(path.read_text())
                yield size, k, (float(d["eval_loss"]), float(d["flops"]))


def demo_losses(demo_workdir: str | None, sizes: list[str]) -> dict[str, tuple[float, float, int]]:
    """{size: (final held-out loss, FLOPs, steps)} of a finished demo study's main runs."""
    out = {}
    for size in sizes if demo_workdir else []:
        path = epath.Path(demo_workdir) / "runs" / f"{size}_tpp1.5" / "finished.json"
        if path.exists():
            d = json.loads(path.read_text())
            out[size] = (float(d["eval_loss"]), float(d["flops"]), int(d["step"]))
    return out


def context_free_loss(demo_workdir: str | None, study, cache_dir: str) -> float:
    """H of the ladder's law: the demo's recorded one, else measured on the prepared data."""
    if demo_workdir and (path := epath.Path(demo_workdir) / "fit.json").exists():
        return float(json.loads(path.read_text())["context_free_loss"])
    from neoscale.data import prepare
    from neoscale.runner.study import study_data_config

    return float(prepare(study_data_config(study, cache_dir)).context_free_loss())


def fits(compute, loss, h: float, check_compute) -> dict[str, list[float]]:
    """Predictions at check_compute of the pure power law and the ladder's law fitted to a ladder."""
    pure = power_law.fit_power_law(compute, loss, with_offset=False)
    ladder = ladder_law.fit_ladder_law(compute, loss, h)
    return {"power law A*C^-a": [float(pure.predict(c)) for c in check_compute],
            "ladder law 1/(1/H+C^a/A)": [float(ladder.predict(c)) for c in check_compute],
            "alphas": [float(pure.alpha), float(ladder.alpha)]}


def main(argv):
    del argv
    root = epath.Path(_WORKDIR.value)
    cache_dir = _CACHE.value or str(root / "cache")
    demo_study = cpu_demo.get_config()
    sizes = _SIZES.value
    study = study_config(sizes, cache_dir)
    ks = [int(k) for k in _MULTIPLIERS.value]
    batches = equal_step_batches(study, sizes, _SMALLEST_BATCH.value)
    plans = {k: sweep_plan(study, sizes, batches, k) for k in ks}
    steps = {run.size: run.steps for run in plans[ks[0]]}
    if steps[sizes[0]] < max(steps.values()):
        raise SystemExit(f"the smallest size trains {steps[sizes[0]]} steps, fewer than another's")
    print("size       batch  steps  demo rate   rates x2^k, k in " + ",".join(map(str, ks)))
    for run in plans[0] if 0 in plans else plans[ks[0]]:
        print(f"{run.size:10s} {batches[run.size]:5d} {run.steps:6d}  "
              f"{law_rate(study, run.params_active):.3g}")
    if _DRY_RUN.value:
        return 0

    losses: dict[str, dict[int, tuple[float, float]]] = {s: {} for s in sizes}

    def sweep(k: int, only: list[str]) -> None:
        runs = plans.setdefault(k, sweep_plan(study, sizes, batches, k))
        for run in runs:
            if run.size in only:
                losses[run.size][k] = train_run(run, study, root / f"lr2x{k:+d}", cache_dir)
                print(f"[confound] {run.size} batch {run.batch_size} steps {run.steps} "
                      f"lr {run.learning_rate:.3g} (x2^{k}): {losses[run.size][k][0]:.4f}", flush=True)

    first = min(ks, key=abs)  # the law's rate (k = 0) for the whole ladder first
    swept = _SWEEP_SIZES.value or sizes
    if _TRAIN.value:
        sweep(first, sizes)
    for size in [s for s in sizes if s in swept and _TRAIN.value]:  # then each size's sweep
        for k in sorted(set(ks) - {first}, key=lambda k: (abs(k), -k)):
            sweep(k, [size])
        for _ in range(_EXTEND.value):  # a best rate at the edge: one k further
            tried = losses[size]
            best = min(tried, key=lambda k: tried[k][0])
            for edge, step in ((min(tried), -1), (max(tried), 1)):
                if best == edge and edge + step not in tried:
                    sweep(edge + step, [size])

    for size, k, result in finished_runs(root, sizes):  # and any other rate trained before
        losses[size].setdefault(k, result)
    if any(not losses[s] for s in sizes):
        raise SystemExit(f"no finished run of {', '.join(s for s in sizes if not losses[s])} in "
                         f"{root}: run without --notrain first")
    demo = demo_losses(_DEMO.value, sizes)
    best_k = {s: min(losses[s], key=lambda k: losses[s][k][0]) for s in sizes}
    best = {s: losses[s][best_k[s]] for s in sizes}
    rate = {run.size: law_rate(study, run.params_active) for run in plans[ks[0]]}
    print("\nsize       batch steps  best rate (x2^k)   sweep losses by k            final  "
          "| demo: steps  loss")
    for s in sizes:
        sweep_text = " ".join(f"{k:+d}:{loss:.3f}" for k, (loss, _) in sorted(losses[s].items()))
        d = demo.get(s)
        print(f"{s:10s} {batches[s]:5d} {steps[s]:5d}  {rate[s] * 2.0 ** best_k[s]:.3g} ({best_k[s]:+d})"
              f"   {sweep_text:28s} {best[s][0]:.4f} | "
              + (f"{d[2]:5d} {d[0]:.4f}" if d else "-"))
    compute = np.array([best[s][1] for s in sizes])
    loss = np.array([best[s][0] for s in sizes])
    at_law = np.array([losses[s].get(0, (math.nan,))[0] for s in sizes])
    summary = {"sizes": sizes, "batches": [batches[s] for s in sizes], "steps": [steps[s] for s in sizes],
               "best_log2_multiplier": [best_k[s] for s in sizes],
               "best_rate": [rate[s] * 2.0 ** best_k[s] for s in sizes],
               "sweep": {s: {str(k): v[0] for k, v in losses[s].items()} for s in sizes},
               "loss": loss.tolist(), "flops": compute.tolist(),
               "slopes": local_slopes(compute, loss).tolist()}
    print("\nlocal slopes -d ln L / d ln C between consecutive sizes:")
    print("  equal steps, best rate: " + " ".join(f"{x:.3f}" for x in summary["slopes"]))
    if np.all(np.isfinite(at_law)):
        summary["slopes_at_law_rate"] = local_slopes(compute, at_law).tolist()
        print("  equal steps, law rate:  " + " ".join(f"{x:.3f}" for x in summary["slopes_at_law_rate"]))
    if len(demo) == len(sizes):
        demo_c = np.array([demo[s][1] for s in sizes])
        demo_l = np.array([demo[s][0] for s in sizes])
        summary["demo_loss"], summary["demo_slopes"] = demo_l.tolist(), local_slopes(demo_c, demo_l).tolist()
        print("  demo (batch 8, law):    " + " ".join(f"{x:.3f}" for x in summary["demo_slopes"]))
        checks = [(c.split(":")[0], float(c.split(":")[1])) for c in _CHECKS.value]
        check_runs = plan(demo_study, [name for name, _ in checks], {})
        check_c = [run.flops for run in check_runs]
        h = context_free_loss(_DEMO.value, study, cache_dir)
        summary["checks"] = {name: {"measured": measured, "compute_x": c / demo_c.max()}
                             for (name, measured), c in zip(checks, check_c, strict=True)}
        print(f"\npredictions at the check sizes (H = {h:.4f}; measured with the demo's settings, "
              "known before this study):")
        for ladder, (c_fit, l_fit) in (("equal steps", (compute, loss)), ("demo", (demo_c, demo_l))):
            predicted = fits(c_fit, l_fit, h, check_c)
            alphas = predicted.pop("alphas")
            summary[f"alphas_{ladder.replace(' ', '_')}"] = alphas
            for law, values in predicted.items():
                cells = []
                for (name, measured), value in zip(checks, values, strict=True):
                    summary["checks"][name][f"{ladder}: {law}"] = value
                    cells.append(f"{name} {value:.3f} ({100 * (value / measured - 1):+.1f}%)")
                print(f"  {ladder:11s} {law:26s} " + "  ".join(cells))
        print("  measured: " + "  ".join(f"{name} {m:.3f} ({summary['checks'][name]['compute_x']:.1f}x)"
                                        for name, m in checks))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    app.run(main)
