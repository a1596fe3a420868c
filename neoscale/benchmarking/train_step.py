"""Times neoscale's own train step: the state and the jitted step come from ``neoscale.training``."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh

from neoscale.benchmarking.timing import compile_seconds, median, time_calls
from neoscale.model import ModelConfig
from neoscale.training.hparams import hparams_for
from neoscale.training.optimizer import make_optimizer, make_schedule, weight_decay_mask
from neoscale.training.state import ModelParams, create_train_state, state_shardings
from neoscale.training.step import global_batch, make_train_step

PROFILED_STEPS = 3


@dataclasses.dataclass(frozen=True)
class StepTiming:
    """compile_seconds: trace + lower + XLA compile of the step; step_seconds: each timed step."""

    compile_seconds: float
    first_step_seconds: float
    step_seconds: list[float]

    @property
    def median_step_seconds(self) -> float:
        return median(self.step_seconds)


def peak_learning_rate(config: ModelConfig) -> float:
    """The learning rate training uses by default for this size (GPT-3 table rule)."""
    return hparams_for(config).peak_learning_rate


def time_train_step(config: ModelConfig, mesh: Mesh, batch_size: int, seq_len: int, steps: int,
                    warmup_steps: int, profile_dir: str | None = None) -> StepTiming:
    """Creates the sharded train state, compiles the train step and times ``steps`` steps.

    The batch (random int32 tokens [batch_size, seq_len]) is placed on the devices once, so the
    timing is of the step alone; the data pipeline is measured separately. With ``profile_dir``,
    a JAX profiler trace of ``PROFILED_STEPS`` more steps is written there.
    """
    total_steps = warmup_steps + steps + 1 + (PROFILED_STEPS if profile_dir else 0)
    schedule = make_schedule("constant", peak_learning_rate(config), total_steps, warmup_steps=0)
    model_params = ModelParams(config, seed=0)
    optimizer = make_optimizer(schedule, weight_decay_mask(model_params.logical_specs))
    shardings = state_shardings(model_params, optimizer, mesh)
    state = create_train_state(model_params, optimizer, mesh)
    train_step = make_train_step(model_params, optimizer, schedule, mesh, shardings)
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (batch_size, seq_len + 1))
    batch = global_batch({"inputs": tokens[:, :-1].astype(np.int32),
                          "targets": tokens[:, 1:].astype(np.int32)}, mesh)

    def one_step():
        nonlocal state
        state, metrics = train_step(state, batch)
        return state, metrics

    with compile_seconds() as compiled:
        first = time_calls(one_step, 1)[0]
    time_calls(one_step, warmup_steps)
    seconds = time_calls(one_step, steps)
    if profile_dir:
        with jax.profiler.trace(profile_dir):
            time_calls(one_step, PROFILED_STEPS)
    return StepTiming(compile_seconds=compiled[0], first_step_seconds=first, step_seconds=seconds)
