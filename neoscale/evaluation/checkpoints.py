"""Scoring after training: a study's finished runs at their final checkpoints, or a released
GPT-Neo (``neoscale.eval`` is the command line)."""

from __future__ import annotations

import fnmatch
import sys
from typing import Any

import jax
from etils import epath

from neoscale.evaluation.scoring import TOKENS_PER_CALL, TaskScorer
from neoscale.files import read_json, to_json, write_atomic
from neoscale.sharding import make_mesh


def restore_run(run_dir: epath.Path, mesh: jax.sharding.Mesh):
    """(RunConfig, ModelParams, params on ``mesh``, step) of a run's newest checkpoint."""
    from neoscale.training import loop
    from neoscale.training.checkpoint import Checkpointer
    from neoscale.training.config import RunConfig
    from neoscale.training.state import ModelParams, abstract_state

    description = read_json(run_dir / loop.CONFIG_FILE, what="the run's settings",
                            if_deleted=loop.CONFIG_IF_DELETED)
    config = RunConfig.from_dict({**description["run"], "workdir": str(run_dir)},
                                 model=description["model"])
    model_params = ModelParams(config.model, config.seed)
    _, optimizer = loop.run_optimizer(config, loop.Resolved(**description["resolved"]), model_params)
    checkpointer = Checkpointer(run_dir / loop.CHECKPOINT_DIR, save_every=1, keep=1, read_only=True)
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise FileNotFoundError(f"run {str(run_dir)!r} has no checkpoint to score")
        state, _ = checkpointer.restore(step, abstract_state(model_params, optimizer, mesh))
    finally:
        checkpointer.close()
    return config, model_params, state.params, step


def score_study(workdir: str | epath.Path, tasks: list[str], max_examples: int | None,
                mesh_spec: str = "", tokens_per_call: int = TOKENS_PER_CALL,
                runs: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Scores every finished run of a study (or those whose name matches one of the shell
    patterns ``runs``) at its final checkpoint; writes finished.json, results.csv and the report
    (process 0). Returns {run: metrics}."""
    from neoscale.data import prepare
    from neoscale.runner import results as results_lib
    from neoscale.runner import study as study_lib
    from neoscale.training import loop

    workdir = epath.Path(workdir)
    runs_dir = workdir / study_lib.RUNS_DIR
    if not (workdir / study_lib.PLAN_FILE).exists():
        raise FileNotFoundError(f"{workdir} holds no study ({study_lib.PLAN_FILE} missing); give the "
                                "--workdir of a neoscale.run study")
    mesh = make_mesh(mesh_spec)
    scored: dict[str, dict[str, float]] = {}
    for run_dir in sorted(runs_dir.iterdir(), key=lambda p: p.name) if runs_dir.exists() else []:
        if not loop.is_finished(run_dir) or (
                runs and not any(fnmatch.fnmatchcase(run_dir.name, p) for p in runs)):
            continue
        config, model_params, params, step = restore_run(run_dir, mesh)
        if config.synthetic:
            print(f"[eval] {run_dir.name}: synthetic data has no tokenizer for the tasks; skipped",
                  file=sys.stderr)
            continue
        data = prepare(config.data)  # the run's prepared data: its tokenizer
        scorer = TaskScorer(tasks, data.tokenizer, config.seq_len, model_params, mesh,
                            model_params.shardings(mesh), max_examples, tokens_per_call)
        metrics = scorer(params)
        result = read_json(run_dir / loop.FINISHED_FILE, what="a finished run's result",
                           if_deleted=loop.FINISHED_IF_DELETED)
        points = result["eval_points"]
        if not points or points[-1]["step"] != step:
            print(f"[eval] {run_dir.name}: its checkpoint {step} is not its last evaluation; "
                  "skipped", file=sys.stderr)
            continue
        points[-1]["tasks"] = {**(points[-1].get("tasks") or {}), **metrics}
        if jax.process_index() == 0:
            write_atomic(run_dir / loop.FINISHED_FILE, to_json(result, indent=2))
        scored[run_dir.name] = metrics
        print(f"[eval] {run_dir.name} (step {step}): " + format_metrics(metrics), file=sys.stderr)
    if jax.process_index() == 0 and scored:
        results_lib.write_results(workdir, results_lib.collect(runs_dir))
        study, plan = study_lib.load_plan(workdir)
        study_lib.finish_study(workdir, study, plan, {}, study_lib.load_measured(workdir))
    return scored


def hf_scorer(path: str, tasks: list[str], max_examples: int | None, tokenizer_name: str = "gpt2",
              seq_len: int | None = None, mesh_spec: str = "",
              tokens_per_call: int = TOKENS_PER_CALL) -> tuple[TaskScorer, Any]:
    """(a TaskScorer for a transformers GPT-Neo checkpoint, its parameters on the mesh)."""
    from neoscale.convert import load_hf_gpt_neo
    from neoscale.data import tokenizer as tokenizer_lib
    from neoscale.training.state import ModelParams

    config, model = load_hf_gpt_neo(path)
    tokenizer = tokenizer_lib.load(tokenizer_name)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"--tokenizer={tokenizer_name} has {tokenizer.vocab_size} tokens, more than "
                         f"the checkpoint's vocabulary {config.vocab_size}; pass its own tokenizer")
    seq_len = seq_len or config.max_positions
    if not 1 <= seq_len <= config.max_positions:
        raise ValueError(f"--seq_len={seq_len} must be between 1 and the model's max_positions "
                         f"{config.max_positions}")
    mesh = make_mesh(mesh_spec)
    model_params = ModelParams(config, seed=0)
    shardings = model_params.shardings(mesh)
    params = jax.device_put(model_params.params_of(model), shardings)
    scorer = TaskScorer(tasks, tokenizer, seq_len, model_params, mesh, shardings, max_examples,
                        tokens_per_call)
    return scorer, params


def format_metrics(metrics: dict[str, float]) -> str:
    names = sorted({key[len("task_"):].rsplit("_", 1)[0] for key in metrics})
    return ", ".join(f"{n} bpb {metrics[f'task_{n}_bpb']:.3f} acc {metrics[f'task_{n}_acc']:.3f}"
                     for n in names)


def table(metrics: dict[str, float]) -> str:
    """A plain-text table: task, bits per byte, accuracy, chance."""
    names = sorted({key[len("task_"):].rsplit("_", 1)[0] for key in metrics})
    lines = [f"{'task':<16}{'bpb':>8}{'acc':>8}{'chance':>8}"]
    lines += [f"{n:<16}{metrics[f'task_{n}_bpb']:>8.4f}{metrics[f'task_{n}_acc']:>8.4f}"
              f"{metrics[f'task_{n}_chance']:>8.4f}" for n in names]
    return "\n".join(lines)
