"""The training loop: ``train(run_config) -> RunResult``.

A run directory holds::

    config.json         the RunConfig, resolved hyper-parameters, model and data description
    metrics.jsonl       one JSON object per logged step (process 0)
    tensorboard/        event files (process 0)
    checkpoints/STEP/   orbax checkpoints: train state, data position, run progress
    finished.json       written last (atomically): the RunResult; a finished run is skipped

Starting ``train`` again on the same directory resumes from the latest complete checkpoint, or
returns a finished run's result, only if the settings are those saved in config.json (the whole
resolved configuration: ``run_identity``; cadence, paths and device layout may change): otherwise
it stops with one line naming the differing fields. ``metrics.jsonl`` keeps only the records up
to the step a run starts from.
A non-finite loss, gradient or update raises ``NonFiniteLossError`` without saving the bad
state; SIGTERM or Ctrl-C (single process; ``stopping``) or JAX's preemption sync point (multi-process)
saves a checkpoint and raises ``stopping.Preempted`` (``stopping.Interrupted`` for Ctrl-C).
"""

from __future__ import annotations

import dataclasses
import json
import math
import posixpath
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath

from neoscale import accounting, workdir_lock
from neoscale.files import jsonable, read_json, to_json, write_atomic
from neoscale.model import ModelConfig, parametrization
from neoscale.sharding import batch_divisor, describe, make_mesh
from neoscale.training import hparams as hparams_lib
from neoscale.training.checkpoint import Checkpointer
from neoscale.training.config import RunConfig
from neoscale.training.metrics import MetricsWriter
from neoscale.training.optimizer import make_optimizer, make_schedule, weight_decay_mask
from neoscale.training.state import ModelParams, abstract_state, create_train_state, state_shardings
from neoscale.training.step import global_batch, make_evaluate, make_train_step, stack_batches
from neoscale.training.stopping import stop_signals
from neoscale.training.synthetic import SyntheticData

CONFIG_FILE = "config.json"
FINISHED_FILE = "finished.json"
CHECKPOINT_DIR = "checkpoints"
NON_FINITE_EXIT_CODE = 3
# What deleting a corrupt run file does (the one-line error says it).
FINISHED_IF_DELETED = ("deleting it is safe: the run then resumes from its last checkpoint and "
                       "writes it again")
CONFIG_IF_DELETED = ("deleting it is safe: a resumed run writes it again (its settings unchecked "
                     "this once); a finished run keeps its result in finished.json")
# What may differ when a run directory is reused (resumed, or its result returned); everything
# else in config.json must match. Cadence and paths: when and where things are written; and the
# downstream tasks scored (what is measured, not what is trained).
CADENCE_FIELDS = ("workdir", "log_every", "eval_every", "checkpoint_every", "checkpoint_minutes",
                  "keep_checkpoints", "keep_checkpoint_every", "async_checkpoints", "tensorboard",
                  "data.cache_dir", "eval_tasks", "eval_task_examples")
# Layout: how the same computation is placed on devices and which kernels compute it
# (checkpoints restore onto any mesh; gradient accumulation, evaluation micro-batches,
# rematerialisation, the loss and attention kernels change rounding only).
LAYOUT_FIELDS = ("mesh", "micro_batches", "eval_batch_size")
MODEL_LAYOUT_FIELDS = ("remat", "loss_impl", "loss_chunk_tokens", "attention_impl", "moe_dispatch",
                       "moe_block_rows")
RESOLVED_LAYOUT_FIELDS = ("eval_batch_size",)
# Data description entries that name paths or timings, not the data.
DATA_VOLATILE_FIELDS = ("cache", "tokenizer_path", "prepare_seconds",
                        # what extending a capped preparation changes (neoscale.data.shards: more
                        # training documents, the same held-out set): runs before it are the same runs
                        "train_stream_tokens", "train_documents", "documents", "bytes", "train_mixture",
                        "train_tokens", "shards", "max_train_tokens", "complete")


class NonFiniteLossError(RuntimeError):
    """The loss, gradient norm or update became NaN/inf; the last good checkpoint is intact."""


@dataclasses.dataclass(frozen=True)
class EvalPoint:
    """One evaluation: losses in nats per token, flops = training FLOPs so far; ``tasks`` the
    downstream metrics (``task_<name>_bpb/_acc/_chance``, ``neoscale.evaluation.scoring``)."""

    step: int
    tokens: int
    flops: float
    train_loss: float
    eval_loss: float
    wall_seconds: float
    eval_bits_per_byte: float | None = None
    tasks: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What a finished (or skipped, already finished) run returns."""

    run_dir: str
    step: int
    tokens: int
    flops: float
    train_loss: float
    eval_loss: float
    wall_seconds: float
    eval_points: list[EvalPoint]
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        d = dict(d)
        d["eval_points"] = [EvalPoint(**p) for p in d["eval_points"]]
        return cls(**d)


def is_finished(run_dir: str | epath.Path) -> bool:
    return (epath.Path(run_dir) / FINISHED_FILE).exists()


def load_result(run_dir: str | epath.Path) -> RunResult:
    """The RunResult of a finished run (``skipped=True``)."""
    d = read_json(epath.Path(run_dir) / FINISHED_FILE, what="a finished run's result",
                  if_deleted=FINISHED_IF_DELETED)
    return dataclasses.replace(RunResult.from_dict(d), skipped=True)


def prepare_run_dir(workdir: str) -> epath.Path:
    """Creates the run directory and checks it is writable (one-line ValueError otherwise)."""
    run_dir = epath.Path(workdir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{jax.process_index()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"cannot write to workdir {workdir!r} ({reason}); "
                         "choose a writable --workdir") from None
    return run_dir


def _make_data(config: RunConfig):
    if config.synthetic:
        return SyntheticData(config.model.vocab_size, config.seq_len, seed=config.data.seed,
                             heldout_tokens=config.data.heldout_tokens)
    from neoscale.data import prepare

    return prepare(config.data)


def _read_config_json(run_dir: epath.Path) -> dict | None:
    path = run_dir / CONFIG_FILE
    return read_json(path, what="the run's settings", if_deleted=CONFIG_IF_DELETED) if (
        path.exists()) else None


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Hyper-parameters after defaults: what actually runs."""

    batch_size: int
    learning_rate: float
    warmup_steps: int
    cooldown_steps: int
    eval_batch_size: int  # sequences per evaluation micro-batch (global)


def resolve(config: RunConfig, model: ModelConfig, batch_multiple: int,
            parent: dict | None = None, eval_multiple: int = 1) -> Resolved:
    """Fills unset hyper-parameters: from the parent run (init_from), else the one per-size rule
    (``hparams.resolve_*``: the learning-rate law if set, else the GPT-3 table).

    batch_multiple: lcm(batch shards x micro_batches, process count); eval_multiple:
    lcm(batch shards, process count).
    """
    parent = parent or {}
    batch_size = hparams_lib.resolve_batch_size(
        model, config.seq_len, config.batch_size or parent.get("batch_size"), batch_multiple)
    batch_tokens = batch_size * config.seq_len
    learning_rate = hparams_lib.resolve_learning_rate(
        model, batch_tokens, config.learning_rate or parent.get("learning_rate"),
        config.learning_rate_law)
    eval_batch_size = config.eval_batch_size or max(
        eval_multiple, batch_size // config.micro_batches // eval_multiple * eval_multiple)
    if eval_batch_size % eval_multiple:
        raise ValueError(f"eval_batch_size={eval_batch_size} must be a multiple of {eval_multiple} "
                         "(the batch shards of the mesh's data x fsdp axes, and the process count)")
    warmup = config.warmup_steps if config.warmup_steps is not None else parent.get("warmup_steps")
    warmup = hparams_lib.resolve_warmup_steps(model, batch_tokens, config.steps, warmup)
    cooldown = 0
    if config.schedule == "wsd":
        cooldown = (config.cooldown_steps if config.cooldown_steps is not None
                    else round(config.cooldown_fraction * config.steps))
    return Resolved(batch_size=int(batch_size), learning_rate=float(learning_rate),
                    warmup_steps=int(warmup), cooldown_steps=int(cooldown),
                    eval_batch_size=int(eval_batch_size))


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """What a run's settings resolve to before anything is trained: its model, hyper-parameters,
    the description saved as config.json (compared on reuse) and the run it forks from."""

    model: ModelConfig
    resolved: Resolved
    description: dict[str, Any]
    parent_dir: epath.Path | None


def parent_run_dir(config: RunConfig) -> epath.Path | None:
    """The run directory ``init_from`` names: a relative path is relative to the directory that
    holds this run's own (sibling runs of a study), so a copied or moved study forks from its own
    runs; an absolute or gs:// path is used as it is."""
    if config.init_from is None:
        return None
    path = str(config.init_from[0])
    if "://" in path or path.startswith("/"):
        return epath.Path(path)
    return epath.Path(config.workdir).parent / path


def describe_run(config: RunConfig, mesh: jax.sharding.Mesh, data: Any) -> RunSetup:
    """Resolves a run's settings on ``mesh`` and ``data`` (ValueError on bad settings); reads the
    parent's config.json for ``init_from``. Writes nothing."""
    model_cfg = config.model
    if model_cfg.vocab_size < data.vocab_size:
        raise ValueError(f"model vocab_size={model_cfg.vocab_size} is smaller than the data's "
                         f"{data.vocab_size}")
    parent_dir = parent_run_dir(config)
    parent = None
    if parent_dir is not None:
        parent_json = _read_config_json(parent_dir)
        if parent_json is None:
            raise FileNotFoundError(f"init_from run {str(parent_dir)!r} has no {CONFIG_FILE}")
        parent = parent_json["resolved"]
    eval_multiple = math.lcm(batch_divisor(mesh), jax.process_count())
    batch_multiple = math.lcm(batch_divisor(mesh) * config.micro_batches, jax.process_count())
    resolved = resolve(config, model_cfg, batch_multiple, parent,
                       eval_multiple)
    description = {
        "run": config.to_dict(), "resolved": dataclasses.asdict(resolved),
        "model": model_cfg.to_dict(), "params": accounting.param_counts(model_cfg),
        "flops_per_token": accounting.train_flops_per_token(model_cfg, config.seq_len),
        "tokens_per_step": resolved.batch_size * config.seq_len, "mesh": describe(mesh),
        "num_devices": mesh.size, "process_count": jax.process_count(),
        "device_kind": mesh.devices.flat[0].device_kind, "data": data.description,
    }
    return RunSetup(model_cfg, resolved, description, parent_dir)


def settings_conflict(config: RunConfig, devices: Sequence[jax.Device] | None = None,
                      data: Any = None) -> list[str]:
    """The fields ("name old -> new") in which the run directory ``config.workdir`` holds a run
    (finished, or with a checkpoint) with other settings than ``config``; [] when it holds none or
    the same run. What ``train`` would refuse, found without writing anything."""
    run_dir = epath.Path(config.workdir)
    previous = _read_config_json(run_dir) if run_dir.exists() else None
    if previous is None:
        return []
    has_checkpoint = (run_dir / CHECKPOINT_DIR).exists() and any(
        p.name.isdigit() for p in (run_dir / CHECKPOINT_DIR).iterdir())
    if not (is_finished(run_dir) or has_checkpoint):
        return []
    data = _make_data(config) if data is None else data
    setup = describe_run(config, make_mesh(config.mesh, devices), data)
    return changed_fields(previous, setup.description)


def run_identity(description: dict) -> dict[str, Any]:
    """What makes two runs the same run: config.json's run settings, resolved hyper-parameters,
    model, data settings and corpus description, flattened ("resolved.learning_rate",
    "model.d_model", "data.seed", "corpus.tokens", ...), without cadence, paths and device layout.
    Settings added since a run was saved take their defaults; a config.json written before
    RunConfig nested its model and data reads as the same run."""
    described = jsonable(description)
    run = RunConfig.from_dict(described["run"], model=described["model"]).to_dict()
    model, data_settings = run.pop("model"), run.pop("data")
    run.update({f"data.{k}": v for k, v in data_settings.items()})
    if run.get("init_from"):  # a sibling run by name, however the study directory was reached
        path, step = run["init_from"]
        base = posixpath.dirname(str(run["workdir"]).rstrip("/")) + "/"
        run["init_from"] = [path[len(base):] if path.startswith(base) else path, step]
    identity: dict[str, Any] = {k: v for k, v in run.items()
                                if k not in (*CADENCE_FIELDS, *LAYOUT_FIELDS)}
    sections = {"resolved": (described["resolved"], RESOLVED_LAYOUT_FIELDS),
                "model": (jsonable(model), MODEL_LAYOUT_FIELDS),
                "corpus": (described["data"], DATA_VOLATILE_FIELDS)}
    for section, (values, skip) in sections.items():
        identity.update({f"{section}.{k}": v for k, v in values.items() if k not in skip})
    return identity


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[:width - 3] + "..."


def changed_fields(saved: dict, description: dict) -> list[str]:
    """Every field where ``description`` differs from ``saved``, as "name old -> new"."""
    old, new = run_identity(saved), run_identity(description)
    return [f"{name} {_short(old.get(name))} -> {_short(new.get(name))}"
            for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]


def check_same_run(workdir: str, saved: dict, description: dict, action: str) -> None:
    """One-line ValueError naming every field where ``description`` differs from ``saved``."""
    changed = changed_fields(saved, description)
    if changed:
        raise ValueError(f"workdir {workdir!r} holds a run with other settings ("
                         f"{', '.join(changed)}); use a new --workdir, or the same settings "
                         f"to {action}")


def _scalar(x: Any) -> float:
    return float(np.asarray(x))


def run_optimizer(config: RunConfig, resolved: Resolved, model_params: ModelParams):
    """(learning-rate schedule, optimizer) of a run: what its train state and checkpoints hold."""
    schedule = make_schedule(config.schedule, resolved.learning_rate, config.steps,
                             resolved.warmup_steps, resolved.cooldown_steps, config.cooldown_shape)
    optimizer = make_optimizer(
        schedule,
        weight_decay_mask(model_params.logical_specs, config.decay_embeddings,
                          config.decay_norms_and_biases),
        weight_decay=config.weight_decay, clip_norm=config.clip_norm,
        multipliers=parametrization.adam_multipliers(model_params.config, model_params.logical_specs))
    return schedule, optimizer


def train(config: RunConfig, *, devices: Sequence[jax.Device] | None = None,
          on_eval: Callable[[EvalPoint], None] | None = None) -> RunResult:
    """Trains (or resumes, or skips if finished) one run; returns its RunResult.

    devices: the devices of the mesh (default: all); ``on_eval`` is called on every process
    with each new EvalPoint. Raises ValueError (bad settings, before any compilation),
    NonFiniteLossError, Preempted, and WorkdirLocked when another process trains in
    ``config.workdir`` (process 0 holds the run directory's lock while it trains).
    """
    run_dir = prepare_run_dir(config.workdir)
    with workdir_lock.hold(run_dir, enabled=jax.process_index() == 0):
        return _train_holding_lock(config, run_dir, devices, on_eval)


def _train_holding_lock(config: RunConfig, run_dir: epath.Path,
                        devices: Sequence[jax.Device] | None,
                        on_eval: Callable[[EvalPoint], None] | None) -> RunResult:
    primary = jax.process_index() == 0
    mesh = make_mesh(config.mesh, devices)
    data = _make_data(config)
    setup = describe_run(config, mesh, data)
    model_cfg, resolved, description = setup.model, setup.resolved, setup.description
    tokens_per_step = resolved.batch_size * config.seq_len
    flops_per_token = description["flops_per_token"]
    device_peak = accounting.device_peak_flops(mesh.devices.flat[0], model_cfg.dtype)
    peak_flops = device_peak * mesh.size if device_peak else None
    parent_dir = setup.parent_dir
    checkpointer = Checkpointer(run_dir / CHECKPOINT_DIR, save_every=config.checkpoint_every,
                                keep=config.keep_checkpoints,
                                keep_period=config.keep_checkpoint_every,
                                save_minutes=config.checkpoint_minutes,
                                async_save=config.async_checkpoints)
    try:
        finished = is_finished(run_dir)
        previous = _read_config_json(run_dir)
        if previous is not None and (finished or checkpointer.latest_step() is not None):
            check_same_run(config.workdir, previous, description,
                           "reuse its result" if finished else "resume it")
        if finished:
            return load_result(run_dir)
        if primary:
            write_atomic(run_dir / CONFIG_FILE, to_json(description, indent=2))
        model_params = ModelParams(model_cfg, config.seed)
        schedule, optimizer = run_optimizer(config, resolved, model_params)
        shardings = state_shardings(model_params, optimizer, mesh)  # checks divisibility
        writer = MetricsWriter(run_dir, enabled=primary, tensorboard=config.tensorboard,
                               total_steps=config.steps)
        try:
            return _train_loop(config, mesh, data, model_params, optimizer, schedule, shardings,
                               resolved, checkpointer, writer, parent_dir, run_dir,
                               tokens_per_step, flops_per_token, peak_flops, on_eval)
        finally:
            writer.close()
    finally:
        checkpointer.close()


def _train_loop(config, mesh, data, model_params, optimizer, schedule, shardings, resolved,
                checkpointer, writer, parent_dir, run_dir, tokens_per_step, flops_per_token,
                peak_flops, on_eval) -> RunResult:
    primary = jax.process_index() == 0
    iterator = data.train_iterator(resolved.batch_size, process_index=jax.process_index(),
                                   process_count=jax.process_count())
    target = abstract_state(model_params, optimizer, mesh)
    progress: dict[str, Any] = {"wall_seconds": 0.0, "eval_points": []}
    restored = checkpointer.restore_newest_intact(target, iterator)
    latest = restored[0] if restored else None
    if restored is not None:
        _, state, progress = restored
    elif config.init_from is not None:
        parent = Checkpointer(parent_dir / CHECKPOINT_DIR, save_every=1, keep=1, read_only=True)
        fork_step = int(config.init_from[1])
        if fork_step not in parent.all_steps():
            raise FileNotFoundError(f"run {str(parent_dir)!r} has no checkpoint at step "
                                    f"{fork_step} (it has {parent.all_steps()}); keep it with "
                                    "keep_checkpoint_every")
        state, progress = parent.restore(fork_step, target, iterator)
        progress["eval_points"] = [p for p in progress["eval_points"] if p["step"] <= fork_step]
        parent.close()
    else:
        state = create_train_state(model_params, optimizer, mesh)
    step = int(np.asarray(state.step))
    writer.truncate_after(step)  # records of an earlier attempt past the starting point
    eval_points = [EvalPoint(**p) for p in progress["eval_points"]]
    wall_offset = float(progress["wall_seconds"])

    train_step = make_train_step(model_params, optimizer, schedule, mesh, shardings,
                                 config.micro_batches)
    evaluate_heldout = make_evaluate(model_params, mesh, shardings.params)
    heldout = stack_batches(data.eval_batches(
        resolved.eval_batch_size, process_index=jax.process_index(),
        process_count=jax.process_count()), mesh)

    def evaluate(params) -> float:
        return _scalar(evaluate_heldout(params, heldout))

    score_tasks = None
    if config.eval_tasks:
        from neoscale.evaluation.scoring import TaskScorer
        from neoscale.evaluation.tasks import parse_tasks

        score_tasks = TaskScorer(parse_tasks(config.eval_tasks), data.tokenizer, config.seq_len,
                                 model_params, mesh, shardings.params, config.eval_task_examples)

    start_time = time.monotonic()
    wall = lambda: wall_offset + time.monotonic() - start_time
    last_saved = step if latest is not None else None
    last_train_loss = eval_points[-1].train_loss if eval_points else math.nan
    last_eval_loss = eval_points[-1].eval_loss if eval_points else math.nan
    throughput_mark: tuple[float, int] | None = None
    pending: tuple[int, dict] | None = None  # a step whose finiteness is not yet checked

    def check(pending_step: int, metrics: dict) -> None:
        if _scalar(metrics["finite"]) != 1.0:
            raise NonFiniteLossError(
                f"non-finite loss, gradient or update at step {pending_step} (loss "
                f"{_scalar(metrics['loss'])}, grad_norm {_scalar(metrics['grad_norm'])}, "
                f"learning rate {_scalar(metrics['learning_rate'])}); stopped, the last good "
                f"checkpoint is step {checkpointer.latest_step()}; lower the learning rate "
                "or check the data")

    def run_progress() -> dict:
        return {"step": step, "tokens": step * tokens_per_step, "wall_seconds": wall(),
                "eval_points": [dataclasses.asdict(p) for p in eval_points],
                "config": config.to_dict()}

    def save(force: bool) -> None:
        nonlocal last_saved
        if last_saved == step:
            return
        if checkpointer.save(step, state, iterator, run_progress(), force=force):
            last_saved = step

    with stop_signals() as stop:
        while step < config.steps:
            batch = global_batch(next(iterator), mesh)
            state, metrics = train_step(state, batch)
            step += 1
            if pending is not None:
                check(*pending)
            pending = (step, metrics)
            if throughput_mark is None:
                jax.block_until_ready(metrics)
                throughput_mark = (time.monotonic(), step)
            is_last = step == config.steps
            do_log = step % config.log_every == 0 or is_last
            do_eval = step % config.eval_every == 0 or is_last
            preempted = stop.is_set() or checkpointer.reached_preemption(step)
            # The clock is read at logging steps only (every process alike: they save together).
            do_save = is_last or preempted or checkpointer.due(step, check_clock=do_log)
            if not (do_log or do_eval or do_save):
                continue
            check(*pending)
            pending = None
            record = jax.device_get(metrics)
            last_train_loss = float(record["loss"])
            tokens = step * tokens_per_step
            # Training throughput since the last mark, excluding evaluation and checkpointing.
            tokens_per_sec = None
            if step > throughput_mark[1]:
                tokens_per_sec = ((step - throughput_mark[1]) * tokens_per_step
                                  / (time.monotonic() - throughput_mark[0]))
            if do_eval:
                last_eval_loss = evaluate(state.params)
                task_metrics = score_tasks(state.params) if score_tasks is not None else {}
                point = EvalPoint(step=step, tokens=tokens, flops=tokens * flops_per_token,
                                  train_loss=last_train_loss, eval_loss=last_eval_loss,
                                  wall_seconds=wall(),
                                  eval_bits_per_byte=data.bits_per_byte(last_eval_loss),
                                  tasks=task_metrics)
                eval_points.append(point)
                if on_eval is not None:
                    on_eval(point)
            if do_log or do_eval:
                line = {name: value for name, value in record.items()
                        if name not in ("finite", "total_loss")}
                line.update(tokens=tokens, flops=tokens * flops_per_token,
                            tokens_per_sec=tokens_per_sec, epochs=data.epochs(tokens),
                            wall_seconds=wall())
                if tokens_per_sec is not None and peak_flops:
                    line["mfu"] = tokens_per_sec * flops_per_token / peak_flops
                if do_eval:
                    line.update(eval_loss=last_eval_loss,
                                eval_bits_per_byte=data.bits_per_byte(last_eval_loss),
                                **eval_points[-1].tasks)
                writer.write(step, line)
                writer.progress(step, line)
            if do_save:
                save(force=True)  # do_save decided: by step, clock, preemption or the end
            throughput_mark = (time.monotonic(), step)
            if preempted and not is_last:
                checkpointer.wait()
                raise stop.error(f"at step {step}: checkpoint saved to {checkpointer.directory}")
    checkpointer.wait()
    result = RunResult(run_dir=str(run_dir), step=step, tokens=step * tokens_per_step,
                       flops=step * tokens_per_step * flops_per_token,
                       train_loss=last_train_loss, eval_loss=last_eval_loss,
                       wall_seconds=wall(), eval_points=eval_points)
    if primary:
        write_atomic(run_dir / FINISHED_FILE, to_json(result.to_dict(), indent=2))
    return result
