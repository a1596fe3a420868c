"""Tune at the base size, transfer: one learning-rate sweep of a small size sets every size's rate.

Under μP or CompleteP (``model.parametrization``) the best Adam rate of the base size is the best
rate of the whole ladder (``benchmarks/RESULTS.md``, "μP transfer"). A study config with
``tune.size`` set (one of its sizes) first trains that size's planned run once per rate 2^k,
k in ``tune.log2_rates``, then trains every size at the rate with the lowest final held-out loss
(it becomes ``train.learning_rate``, overriding the GPT-3 table and any ``learning_rate_law``).

The sweep lives in ``tune.dir`` (default ``WORKDIR/tune``) under ``{size}_{key}/lr2^k``: ordinary
runs, so an interrupted sweep resumes and a finished one is skipped. ``key`` hashes the base run's
settings other than its rate and directory (model, data, batch, steps, schedule, seeds): a later
study pointing ``tune.dir`` at the same place with the same base run reuses the sweep. The rates
and losses are recorded in ``sweep.json`` beside the runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence

import ml_collections
from etils import epath

from neoscale.runner.plan import PlannedRun
from neoscale.training.config import RunConfig

SWEEP_FILE = "sweep.json"
# Settings that do not change what a run computes (or that the sweep itself sets).
UNKEYED = ("workdir", "learning_rate", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
           "keep_checkpoint_every", "async_checkpoints", "tensorboard", "mesh", "micro_batches",
           "eval_batch_size", "data_cache_dir")


def enabled(study: ml_collections.ConfigDict) -> bool:
    return bool(study.get("tune") and study.tune.get("size"))


def rates(study: ml_collections.ConfigDict) -> list[float]:
    """The swept peak rates, 2^k for k in ``tune.log2_rates``."""
    text = str(study.tune.log2_rates)
    try:
        return [2.0 ** int(k) for k in text.split(",")]
    except ValueError:
        raise ValueError(f"tune.log2_rates={text!r}: give comma-separated integers k (rates 2^k), "
                         "e.g. -11,-10,-9,-8,-7,-6,-5") from None


def base_run(study: ml_collections.ConfigDict, plan: Sequence[PlannedRun]) -> PlannedRun:
    """The planned run the sweep repeats: ``tune.size``'s first (smallest-budget) run."""
    size = str(study.tune.size)
    parametrization = str(study.model.get("parametrization", "sp"))
    if parametrization == "sp":
        raise ValueError(f"tune.size={size!r} transfers a rate, which only μP does: set "
                         "--config.model.parametrization=mup (or completep), or drop tune.size")
    for run in plan:
        if run.size == size:
            return run
    raise ValueError(f"tune.size={size!r} is not among the study's sizes "
                     f"({', '.join(dict.fromkeys(run.size for run in plan))}): tune one of them")


def sweep_dir(study: ml_collections.ConfigDict, workdir: str, config: RunConfig) -> epath.Path:
    """Where this base run's sweep lives: ``tune.dir``/``{size}_{hash of its settings}``."""
    settings = {k: v for k, v in config.to_dict().items() if k not in UNKEYED}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    root = epath.Path(str(study.tune.get("dir") or "") or epath.Path(workdir) / "tune")
    return root / f"{config.size}_{key}"


def sweep_configs(study: ml_collections.ConfigDict, plan: Sequence[PlannedRun], workdir: str,
                  cache_dir: str) -> tuple[epath.Path, list[RunConfig]]:
    """(the sweep's directory, one RunConfig per rate)."""
    from neoscale.runner.study import run_config

    template = run_config(base_run(study, plan), study, epath.Path(workdir), cache_dir)
    directory = sweep_dir(study, workdir, template)
    return directory, [template.replace(workdir=str(directory / f"lr2^{int(math.log2(lr))}"),
                                        learning_rate=lr) for lr in rates(study)]


def describe(study: ml_collections.ConfigDict, plan: Sequence[PlannedRun], workdir: str,
             cache_dir: str) -> str:
    """One line for the dry run: what the sweep trains, where, and its result if it has one."""
    directory, configs = sweep_configs(study, plan, workdir, cache_dir)
    recorded = read_sweep(directory)
    state = (f"done: best rate {recorded['best_learning_rate']:.3g}" if recorded
             else "not run yet; the plan's rates are replaced by its best")
    return (f"learning rate: tuned at {study.tune.size} ({len(configs)} runs of "
            f"{configs[0].steps} steps, rates 2^k for k in {study.tune.log2_rates}) "
            f"in {directory}, then used at every size ({state})")


def read_sweep(directory: epath.Path) -> dict | None:
    path = directory / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else None


def run_sweep(study: ml_collections.ConfigDict, plan: Sequence[PlannedRun], workdir: str,
              cache_dir: str) -> float:
    """Trains (resumes, or skips) every rate of the sweep; records and returns the best rate."""
    from neoscale.training.loop import NonFiniteLossError, train

    directory, configs = sweep_configs(study, plan, workdir, cache_dir)
    losses = {}
    for config in configs:
        try:
            losses[config.learning_rate] = float(train(config).eval_loss)
        except NonFiniteLossError:  # too high a rate: a result of the sweep, not a failure
            losses[config.learning_rate] = math.inf
        print(f"[tune] {config.size} lr {config.learning_rate:.3g}: eval loss "
              f"{losses[config.learning_rate]:.4f}", flush=True)
    finite = {lr: loss for lr, loss in losses.items() if math.isfinite(loss)}
    if not finite:
        raise ValueError(f"every rate of the sweep in {directory} diverged: lower tune.log2_rates")
    best = min(finite, key=finite.get)
    if best in (min(losses), max(losses)):
        print(f"[tune] warning: the best rate {best:.3g} is at the edge of the sweep; widen "
              "tune.log2_rates", flush=True)
    record = {"size": configs[0].size, "best_learning_rate": best,
              "losses": {f"{lr:.6g}": loss for lr, loss in losses.items()}, "steps": configs[0].steps}
    (directory / SWEEP_FILE).write_text(json.dumps(record, indent=2))
    return best


def transfer(study: ml_collections.ConfigDict, plan: Sequence[PlannedRun], workdir: str,
             cache_dir: str, make_plan: Callable[[], list[PlannedRun]]) -> list[PlannedRun]:
    """The plan re-made at the sweep's best rate (the plan itself when the study does not tune)."""
    if not enabled(study):
        return list(plan)
    study.train.learning_rate = run_sweep(study, plan, workdir, cache_dir)
    return make_plan()
