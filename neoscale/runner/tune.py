"""Tune at the base size, transfer: one learning-rate sweep of a small size sets every size's rate.

Under μP or CompleteP (``model.parametrization``) the best Adam rate of the base size is the best
rate of the whole ladder (``benchmarks/RESULTS.md``, "μP transfer"). A study config with
``tune.size`` set (one of its sizes) first trains that size's planned run once per rate 2^k,
k in ``tune.log2_rates``, then trains every size at the rate with the lowest final held-out loss
(the study is re-planned with it as ``train.learning_rate``, overriding the GPT-3 table and any
``learning_rate_law``).
With ``tune.output_multipliers`` and / or ``tune.hidden_init_stds`` (comma-separated), the sweep
is the grid of rates x μP's base output multipliers x base hidden init stds, and the best point
sets ``model.output_multiplier`` and ``model.hidden_init_std`` as well: μP's base hyper-parameters
transfer like the rate, and at small bases they matter (benchmarks/RESULTS.md).

The sweep lives in ``tune.dir`` (default ``WORKDIR/tune``) under ``{size}_{key}/lr2^k``
(``lr2^k_out…_init…`` on a grid): ordinary runs, so an interrupted sweep resumes and a finished
one is skipped. ``key`` hashes the base run's settings other than its rate and directory (model,
data, batch, steps, schedule, seeds): a later study pointing ``tune.dir`` at the same place with
the same base run reuses the sweep. The points and their losses are recorded in ``sweep.json``
beside the runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence

import ml_collections
from etils import epath

from neoscale.runner.plan import PlannedRun
from neoscale.training.config import RunConfig

SWEEP_FILE = "sweep.json"
# Settings that do not change what a run computes (or that the sweep itself sets).
UNKEYED = ("workdir", "learning_rate", "learning_rate_law", "log_every", "eval_every", "checkpoint_every",
           "keep_checkpoints", "keep_checkpoint_every", "async_checkpoints", "tensorboard", "mesh",
           "micro_batches", "eval_batch_size", "data_cache_dir", "eval_tasks",  # flat names
           "eval_task_examples")  # (RunConfig.to_flat)


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


def _floats(study: ml_collections.ConfigDict, field: str) -> list[float | None]:
    """tune.<field> as positive floats, or [None] when unset (that hyper-parameter is not swept)."""
    text = str(study.tune.get(field) or "").strip()
    if not text:
        return [None]
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(v > 0 for v in values):
        raise ValueError(f"tune.{field}={text!r}: give comma-separated positive numbers, e.g. 1,2,4,8")
    return values


def grid(study: ml_collections.ConfigDict) -> list[dict]:
    """The swept points: {"learning_rate", "output_multiplier", "hidden_init_std"} (None: not swept)."""
    return [{"learning_rate": lr, "output_multiplier": out, "hidden_init_std": std}
            for out in _floats(study, "output_multipliers") for std in _floats(study, "hidden_init_stds")
            for lr in rates(study)]


def _label(point: dict) -> str:
    """'lr2^-7', or 'lr2^-7_out4_init0.16' when the base multipliers are swept."""
    label = f"lr2^{int(math.log2(point['learning_rate']))}"
    if point["output_multiplier"] is not None:
        label += f"_out{point['output_multiplier']:g}"
    if point["hidden_init_std"] is not None:
        label += f"_init{point['hidden_init_std']:g}"
    return label


def _key(point: dict) -> str:
    """sweep.json's key of a point: its rate ('0.0078125'), then any swept multiplier."""
    extra = [f"{k}={point[k]:g}" for k in ("output_multiplier", "hidden_init_std") if point[k] is not None]
    return " ".join([f"{point['learning_rate']:.6g}", *extra])


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
    """Where this base run's sweep lives: ``tune.dir``/``{size}_{hash of its settings}`` (hashed
    in their flat form, so sweeps recorded before RunConfig nested its model and data are found)."""
    size = str(study.tune.size)
    settings = {k: v for k, v in config.to_flat(size).items() if k not in UNKEYED}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    root = epath.Path(str(study.tune.get("dir") or "") or epath.Path(workdir) / "tune")
    return root / f"{size}_{key}"


def sweep_configs(study: ml_collections.ConfigDict, plan: Sequence[PlannedRun], workdir: str,
                  cache_dir: str) -> tuple[epath.Path, list[tuple[dict, RunConfig]]]:
    """(the sweep's directory, (point, RunConfig) for every point of the grid)."""
    from neoscale.runner.study import run_config

    template = run_config(base_run(study, plan), study, epath.Path(workdir), cache_dir).replace(
        eval_tasks="")  # a sweep compares held-out losses: no downstream tasks
    directory = sweep_dir(study, workdir, template)
    configs = []
    for point in grid(study):
        base = {k: point[k] for k in ("output_multiplier", "hidden_init_std") if point[k] is not None}
        configs.append((point, template.replace(
            workdir=str(directory / _label(point)), learning_rate=point["learning_rate"],
            model=template.model.replace(**base))))
    return directory, configs


def describe(study: ml_collections.ConfigDict, plan: Sequence[PlannedRun], workdir: str,
             cache_dir: str) -> str:
    """One line for the dry run: what the sweep trains, where, and its result if it has one."""
    directory, configs = sweep_configs(study, plan, workdir, cache_dir)
    recorded = read_sweep(directory)
    state = (f"done: best {recorded.get('best') or recorded['best_learning_rate']}" if recorded
             else "not run yet; the plan's rates are replaced by its best")
    swept = "".join(f" x {field} {study.tune[field]}" for field in ("output_multipliers", "hidden_init_stds")
                    if str(study.tune.get(field) or "").strip())
    return (f"learning rate: tuned at {study.tune.size} ({len(configs)} runs of "
            f"{configs[0][1].steps} steps, rates 2^k for k in {study.tune.log2_rates}{swept}) "
            f"in {directory}, then used at every size ({state})")


def read_sweep(directory: epath.Path) -> dict | None:
    path = directory / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else None


def run_sweep(study: ml_collections.ConfigDict, plan: Sequence[PlannedRun], workdir: str,
              cache_dir: str) -> float:
    """Trains (resumes, or skips) every rate of the sweep; records and returns the best rate."""
    from neoscale.training.loop import NonFiniteLossError, train

    directory, configs = sweep_configs(study, plan, workdir, cache_dir)
    losses = {}  # sweep.json key -> final held-out loss
    points = {}
    for point, config in configs:
        key = _key(point)
        points[key] = point
        try:
            losses[key] = float(train(config).eval_loss)
        except NonFiniteLossError:  # too high a rate: a result of the sweep, not a failure
            losses[key] = math.inf
        print(f"[tune] {study.tune.size} {_label(point)}: eval loss {losses[key]:.4f}", flush=True)
    finite = {key: loss for key, loss in losses.items() if math.isfinite(loss)}
    if not finite:
        raise ValueError(f"every rate of the sweep in {directory} diverged: lower tune.log2_rates")
    best = points[min(finite, key=finite.get)]
    if best["learning_rate"] in (min(rates(study)), max(rates(study))):
        print(f"[tune] warning: the best rate {best['learning_rate']:.3g} is at the edge of the "
              "sweep; widen tune.log2_rates", flush=True)
    record = {"size": str(study.tune.size), "best_learning_rate": best["learning_rate"],
              "best": _label(best), "best_point": best, "losses": losses,
              "steps": configs[0][1].steps}
    (directory / SWEEP_FILE).write_text(json.dumps(record, indent=2))
    return best


def transfer(study: ml_collections.ConfigDict, plan: Sequence[PlannedRun], workdir: str,
             cache_dir: str) -> dict:
    """The sweep's choice, to re-plan with (``make_plan``'s ``tuned``): {"learning_rate", and
    "output_multiplier" / "hidden_init_std" when swept}; {} when the study does not tune. The study
    config itself is left as parsed."""
    if not enabled(study):
        return {}
    best = run_sweep(study, plan, workdir, cache_dir)
    return {key: value for key, value in best.items() if value is not None}
