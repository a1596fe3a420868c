"""Times neoscale's own train step: the state and the jitted step come from ``neoscale.training``."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh

from neoscale.benchmarking.memory import minor_page_faults
from neoscale.benchmarking.timing import compile_seconds, median, time_calls
from neoscale.model import ModelConfig
from neoscale.sharding import sharding_context
from neoscale.training.hparams import hparams_for
from neoscale.training.optimizer import make_optimizer, make_schedule, weight_decay_mask
from neoscale.training.state import ModelParams, create_train_state, state_shardings
from neoscale.training.step import global_batch, grads_and_metrics, make_train_step

PROFILED_STEPS = 3


@dataclasses.dataclass(frozen=True)
class StepTiming:
    """compile_seconds: trace + lower + XLA compile of the step; step_seconds: each timed step;
    page_faults_per_step: the host's minor page faults per timed step (``minor_page_faults``)."""

    compile_seconds: float
    first_step_seconds: float
    step_seconds: list[float]
    page_faults_per_step: float

    @property
    def median_step_seconds(self) -> float:
        return median(self.step_seconds)


def peak_learning_rate(config: ModelConfig) -> float:
    """The learning rate training uses by default for this size (GPT-3 table rule)."""
    return hparams_for(config).peak_learning_rate


class TrainStepRunner:
    """neoscale's jitted train step on a sharded state and one fixed batch, ready to be timed.

    The batch (random int32 tokens [batch_size, seq_len]) is placed on the devices once, so the
    timing is of the step alone; the data pipeline is measured separately.
    """

    def __init__(self, config: ModelConfig, mesh: Mesh, batch_size: int, seq_len: int,
                 total_steps: int):
        schedule = make_schedule("constant", peak_learning_rate(config), total_steps, warmup_steps=0)
        self.model_params = ModelParams(config, seed=0)
        optimizer = make_optimizer(schedule, weight_decay_mask(self.model_params.logical_specs))
        shardings = state_shardings(self.model_params, optimizer, mesh)
        self.state = create_train_state(self.model_params, optimizer, mesh)
        self.mesh = mesh
        self.train_step = make_train_step(self.model_params, optimizer, schedule, mesh, shardings)
        tokens = np.random.default_rng(0).integers(0, config.vocab_size, (batch_size, seq_len + 1))
        self.batch = global_batch({"inputs": tokens[:, :-1].astype(np.int32),
                                   "targets": tokens[:, 1:].astype(np.int32)}, mesh)

    def step(self):
        self.state, metrics = self.train_step(self.state, self.batch)
        return self.state, metrics

    def gradient_memory_bytes(self) -> int:
        """XLA's memory analysis of the loss-and-gradient computation alone (arguments, outputs and
        temporaries of the compiled executable): a per-configuration figure, unlike the process RSS."""
        fn = jax.jit(lambda p, b: grads_and_metrics(p, self.model_params, b))
        with sharding_context(self.mesh):
            analysis = fn.lower(self.state.params, self.batch).compile().memory_analysis()
        return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                   + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def time_train_step(config: ModelConfig, mesh: Mesh, batch_size: int, seq_len: int, steps: int,
                    warmup_steps: int, profile_dir: str | None = None) -> StepTiming:
    """Creates the sharded train state, compiles the train step and times ``steps`` steps.

    With ``profile_dir``, a JAX profiler trace of ``PROFILED_STEPS`` more steps is written there.
    """
    total_steps = warmup_steps + steps + 1 + (PROFILED_STEPS if profile_dir else 0)
    runner = TrainStepRunner(config, mesh, batch_size, seq_len, total_steps)
    with compile_seconds() as compiled:
        first = time_calls(runner.step, 1)[0]
    time_calls(runner.step, warmup_steps)
    faults_before = minor_page_faults()
    seconds = time_calls(runner.step, steps)
    faults = (minor_page_faults() - faults_before) / steps
    if profile_dir:
        with jax.profiler.trace(profile_dir):
            time_calls(runner.step, PROFILED_STEPS)
    return StepTiming(compile_seconds=compiled[0], first_step_seconds=first, step_seconds=seconds,
                      page_faults_per_step=faults)


def time_interleaved(configs: list[ModelConfig], mesh: Mesh, batch_size: int, seq_len: int,
                     steps: int, warmup_steps: int, rounds: int) -> list[StepTiming]:
    """Times several configurations in alternation: ``rounds`` rounds, each running every
    configuration for ``ceil(steps / rounds)`` steps, so that all of them see the same machine
    conditions (a shared or thermally throttled machine shifts all of them together)."""
    per_round = -(-steps // rounds)
    total_steps = warmup_steps + per_round * rounds + 1
    runners, compiled_seconds, first = [], [], []
    for config in configs:
        runner = TrainStepRunner(config, mesh, batch_size, seq_len, total_steps)
        with compile_seconds() as compiled:
            first.append(time_calls(runner.step, 1)[0])
        compiled_seconds.append(compiled[0])
        time_calls(runner.step, warmup_steps)
        runners.append(runner)
    seconds: list[list[float]] = [[] for _ in configs]
    faults = [0] * len(configs)
    for _ in range(rounds):
        for index, runner in enumerate(runners):
            faults_before = minor_page_faults()
            seconds[index].extend(time_calls(runner.step, per_round))
            faults[index] += minor_page_faults() - faults_before
    return [StepTiming(compile_seconds=c, first_step_seconds=f, step_seconds=s,
                       page_faults_per_step=n / len(s))
            for c, f, s, n in zip(compiled_seconds, first, seconds, faults, strict=True)]
