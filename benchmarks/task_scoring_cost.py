"""What scoring downstream tasks in the loop costs the CPU demo, against its training.

  python benchmarks/task_scoring_cost.py [--examples 100,20] [--tasks ...] [--sizes ...]

Prepares the demo's data (its 2048-piece tokenizer, sequence length 128) and plan, then per size,
in one process (so a loaded machine slows both sides alike): the training step (the demo's batch,
after compilation), and the scorer of ``--tasks`` on the first E examples per task: its first
pass (compilation of its few row lengths included) and one pass after it (median of
``--repeat``). The demo's training time is estimated as its steps (runs and cooldown branches)
times the step time, without its held-out evaluations, checkpoints, fits and figures: the
share printed is an upper bound. The demo scores each size ``evals_per_run`` times plus once per
cooldown branch; the branches reuse their run's compiled scorer.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import statistics
import time

import jax
import numpy as np

from neoscale.data import DataConfig, prepare
from neoscale.evaluation import scoring
from neoscale.evaluation.scoring import TaskScorer
from neoscale.evaluation.tasks import parse_tasks
from neoscale.runner import plan as plan_lib
from neoscale.sharding import make_mesh
from neoscale.training.config import RunConfig
from neoscale.training.loop import Resolved, run_optimizer
from neoscale.training.state import ModelParams, create_train_state, state_shardings
from neoscale.training.step import global_batch, make_train_step

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_TASKS = "arc_easy,piqa,winogrande,csqa,openbookqa"


def demo_config():
    spec = importlib.util.spec_from_file_location("cpu_demo", REPO / "experiments" / "cpu_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def step_seconds(run: plan_lib.PlannedRun, mesh, repeat: int = 20) -> float:
    """Seconds per training step of a planned run (after compilation)."""
    config = RunConfig(workdir="/tmp/unused", size=run.size, steps=run.steps, seq_len=run.seq_len,
                       batch_size=run.batch_size, learning_rate=run.learning_rate, schedule=run.schedule)
    resolved = Resolved(run.batch_size, run.learning_rate, run.warmup_steps, 0, run.batch_size)
    model_params = ModelParams(run.model, 0)
    schedule, optimizer = run_optimizer(config, resolved, model_params)
    shardings = state_shardings(model_params, optimizer, mesh)
    state = create_train_state(model_params, optimizer, mesh)
    step = make_train_step(model_params, optimizer, schedule, mesh, shardings)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, run.model.vocab_size, (run.batch_size, run.seq_len + 1)).astype(np.int32)
    batch = global_batch({"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}, mesh)
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(repeat):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", default="100,20")
    parser.add_argument("--tasks", default=None, help=f"default: the demo's eval.tasks, else {DEFAULT_TASKS}")
    parser.add_argument("--sizes", default=None, help="default: the demo's sizes")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cache", default="/tmp/neoscale_demo_cache")
    args = parser.parse_args()
    c = demo_config()
    tasks = parse_tasks(args.tasks or c.eval.tasks or DEFAULT_TASKS)
    data = prepare(DataConfig(data=c.data.data, tokenizer=c.data.tokenizer, seq_len=c.data.seq_len,
                              heldout_tokens=c.data.heldout_tokens, seed=c.data.seed,
                              cache_dir=args.cache))
    cooldowns = tuple(float(f) for f in c.cooldowns.split(",") if f)
    plan = plan_lib.make_plan((args.sizes or c.sizes).split(","),
                              plan_lib.parse_budget(tokens_per_param=c.budget.tokens_per_param),
                              vocab_size=data.vocab_size, seq_len=c.data.seq_len, train=c.train,
                              model_overrides={k: v for k, v in c.model.items() if v is not None},
                              cooldowns=cooldowns, corpus_tokens=data.train_tokens)
    mesh = make_mesh("")
    examples = [int(e) for e in args.examples.split(",")]
    print(f"load {os.getloadavg()[0]:.1f}; tasks {', '.join(tasks)}; {c.train.evals_per_run} evaluations "
          f"per run + 1 per cooldown branch ({len(cooldowns)})")
    print("| size | training steps | s/step | training s | "
          + " | ".join(f"E={e}: first pass, pass, total s" for e in examples) + " |")
    print("|---|---|---|---|" + "---|" * len(examples))
    train_total, score_total = 0.0, dict.fromkeys(examples, 0.0)
    for run in plan:
        steps = run.steps + sum(b.cooldown_steps for b in run.branches)
        seconds = step_seconds(run, mesh)
        train_total += steps * seconds
        cells = []
        model_params = ModelParams(run.model, 0)
        shardings = model_params.shardings(mesh)
        params = jax.jit(model_params.init, out_shardings=shardings)()
        for e in examples:
            scoring._LOGLIK_FUNCTIONS.clear()  # each E pays its compilation, as the demo does
            scorer = TaskScorer(tasks, data.tokenizer, run.seq_len, model_params, mesh, shardings, e)
            tick = time.perf_counter()
            scorer(params)
            first = time.perf_counter() - tick
            passes = []
            for _ in range(args.repeat):
                tick = time.perf_counter()
                scorer(params)
                passes.append(time.perf_counter() - tick)
            one = statistics.median(passes)
            total = first + (c.train.evals_per_run + len(run.branches) - 1) * one
            score_total[e] += total
            cells.append(f"{first:.2f}, {one:.2f}, {total:.1f}")
        print(f"| {run.size} | {steps} | {seconds:.4f} | {steps * seconds:.0f} | " + " | ".join(cells)
              + " |", flush=True)
    for e in examples:
        print(f"E={e} examples per task: scoring {score_total[e]:.0f} s against training "
              f"{train_total:.0f} s = {score_total[e] / train_total:.1%} (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
