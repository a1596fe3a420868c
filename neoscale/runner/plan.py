"""Turning a study config into a list of planned runs (no training, no memory: seconds even for 2.7B).

A study is a set of sizes and one compute budget rule. Per size the plan fixes the model shape, the
parameter counts (from ``neoscale.accounting``, abstractly), the tokens, the training FLOPs, the
steps, the batch, the peak learning rate and warmup (``neoscale.training.hparams``: the GPT-3 table,
interpolated; every value can be overridden in the study config), the epochs of the corpus it reads,
and, for a target accelerator (``neoscale.hardware``), the rematerialisation policy and gradient
accumulation that fit its memory (``neoscale.runner.memory``).

Budget modes (exactly one):

* ``tokens_per_param=K`` (the default, K = 20, Chinchilla's compute-optimal ratio): D = K * N with
  N the *active* parameters including embeddings (Chinchilla's convention, the one accounting uses).
  Several comma-separated ratios (``3,35``) train every size at each: a study's token arms.
* ``tokens=D``: the same data for every size.
* ``flops=C`` (one or several budgets, comma-separated): an IsoFLOP slice,
  D = C / (training FLOPs per token). Several budgets x several sizes is Chinchilla's Approach 2.
* ``steps=S``: the same number of optimizer steps for every size.

Replicate seeds (``parse_replicates``): a size trained with K seeds gets K runs per budget value,
the first named as usual, replicate i >= 1 named ``{size}-seed{i}_{tag}``; replicate i's model seed
is the study's ``train.seed`` + i. The data seed is the same for every replicate: it fixes the
held-out set every loss is measured on (and the tokenizer and the order of the training windows),
so replicates measure the noise of initialisation, with the data held fixed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Sequence

import ml_collections

from neoscale import accounting, presets
from neoscale.data import check_seq_len
from neoscale.hardware import Target
from neoscale.model import ModelConfig
from neoscale.runner import memory as memory_lib
from neoscale.sharding.mesh import abstract_mesh, parse_mesh
from neoscale.training import hparams as hparams_rule
from neoscale.training.state import ModelParams

BUDGET_MODES = ("tokens_per_param", "tokens", "flops", "steps")
DEFAULT_TOKENS_PER_PARAM = 20.0
DEFAULT_MAX_EPOCHS = 4.0  # Muennighoff et al. 2023: up to ~4 epochs of repetition cost little
BUDGET_HELP = ("give exactly one budget: --tokens_per_param=K (default 20), --tokens=D, "
               "--flops=C[,C2,...] or --steps=S")


@dataclasses.dataclass(frozen=True)
class Budget:
    """One compute-budget rule: ``mode`` in BUDGET_MODES and its value(s)."""

    mode: str
    values: tuple[float, ...]

    def describe(self) -> str:
        return f"{self.mode}=" + ",".join(f"{v:g}" for v in self.values)

    def tag(self, value: float) -> str:
        """The budget part of a run's name: 'tpp20', 'D1e6', 'D204800', 'C3e13', 'S500'."""
        prefix = {"tokens_per_param": "tpp", "tokens": "D", "flops": "C", "steps": "S"}[self.mode]
        text = f"{value:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
        return prefix + text


@dataclasses.dataclass(frozen=True)
class Branch:
    """A WSD cooldown branch: forked from its run's checkpoint at ``fork_step`` (in the stable
    phase), it cools down over ``cooldown_steps`` and ends at about ``fraction`` of the run."""

    name: str
    fraction: float
    fork_step: int
    cooldown_steps: int

    @property
    def steps(self) -> int:
        return self.fork_step + self.cooldown_steps


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """Everything decided about one run before it trains (JSON-able through ``to_dict``)."""

    name: str  # the run's directory under WORKDIR/runs
    size: str  # the size name it was built from, e.g. "cpu-400k" or "125M"
    model: ModelConfig
    params_total: int
    params_non_embedding: int
    params_active: int
    seq_len: int
    batch_size: int  # sequences per optimizer step (global)
    steps: int
    tokens: int  # steps * batch_size * seq_len
    flops_per_token: float  # training FLOPs per token (accounting's convention)
    flops: float  # flops_per_token * tokens
    learning_rate: float
    warmup_steps: int
    micro_batches: int  # gradient accumulation: the batch is processed in this many slices
    memory: memory_lib.MemoryEstimate  # per device, for the micro-batch and remat policy chosen
    budget_flops: float | None  # the IsoFLOP budget this run belongs to (flops mode), else None
    eval_every: int  # steps between evaluations (rows of results.csv)
    checkpoint_every: int
    schedule: str  # "wsd" when cooldown branches are forked, else the study's schedule
    branches: tuple[Branch, ...] = ()  # WSD cooldown branches forked from this run
    overrides: dict = dataclasses.field(default_factory=dict)  # per-size RunConfig overrides
    epochs: float | None = None  # passes over the corpus's training tokens (None: size unknown)
    compiled: dict | None = None  # the target compiler's verdict (neoscale.aot.Verdict.to_dict())
    seed: int | None = None  # the model seed (train.seed + replicate); None: plans from before seeds
    replicate: int = 0  # 0: the size's first run; i >= 1: its i-th replicate seed

    @property
    def memory_bytes_per_device(self) -> int:
        return self.memory.peak

    @property
    def step_flops(self) -> float:
        return self.batch_size * self.seq_len * self.flops_per_token

    @property
    def cooldown_flops(self) -> float:
        """FLOPs of all cooldown branches (each branch's steps past its fork point)."""
        return sum(branch.cooldown_steps for branch in self.branches) * self.step_flops

    @property
    def total_flops(self) -> float:
        return self.flops + self.cooldown_flops

    def branch_names(self) -> list[str]:
        return [branch.name for branch in self.branches]

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        out["memory_bytes_per_device"] = self.memory_bytes_per_device
        return out

    @classmethod
    def from_dict(cls, data: dict) -> PlannedRun:
        """The run ``to_dict`` wrote (plan.json's "runs" after a JSON round trip)."""
        fields = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in fields}
        values.update(model=ModelConfig(**data["model"]),
                      memory=memory_lib.MemoryEstimate(**data["memory"]),
                      branches=tuple(Branch(**branch) for branch in data.get("branches", ())))
        return cls(**values)


def branch_name(run: str, fraction: float) -> str:
    """Directory name of the cooldown branch ending at ``fraction`` of ``run``: 'cpu-400k_cd0.25'."""
    return f"{run}_cd{fraction:g}"


def plan_branches(run: str, steps: int, fractions: Sequence[float], cooldown_fraction: float,
                  checkpoint_every: int) -> tuple[Branch, ...]:
    """Cooldown branches of a WSD run of ``steps`` steps (Hägele et al. 2024).

    The branch for fraction f < 1 ends near step f * steps; its last ``cooldown_fraction`` decays
    the learning rate, so it forks at (1 - cooldown_fraction) * f * steps, rounded to a checkpoint
    step (a multiple of ``checkpoint_every``), which lies in the run's stable phase. f = 1 is the
    run itself (its own cooldown at the end), so it needs no branch.
    """
    stable_end = steps - round(cooldown_fraction * steps)
    ratio = cooldown_fraction / max(1e-9, 1 - cooldown_fraction)
    branches = {}
    for fraction in fractions:
        if fraction >= 1:
            continue
        fork = round((1 - cooldown_fraction) * fraction * steps / checkpoint_every) * checkpoint_every
        fork = min(max(fork, checkpoint_every), stable_end // checkpoint_every * checkpoint_every)
        if fork < 1:
            raise ValueError(f"run {run!r} of {steps} steps is too short for cooldown branches; "
                             "train more steps or drop --cooldowns")
        branches[fork] = Branch(branch_name(run, fraction), fraction, fork, max(1, round(ratio * fork)))
    return tuple(branches[fork] for fork in sorted(branches))


def _as_float(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number; {BUDGET_HELP}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name}={value!r} must be a positive number; {BUDGET_HELP}")
    return number


def parse_budget(tokens_per_param=None, tokens=None, flops=None, steps=None) -> Budget:
    """The one budget among the given (None = not given); none given: tokens_per_param=20.

    ``flops`` may be a comma-separated string of several budgets. Raises a one-line ValueError for
    conflicting or malformed budgets.
    """
    given = {"tokens_per_param": tokens_per_param, "tokens": tokens, "flops": flops, "steps": steps}
    given = {k: v for k, v in given.items() if v is not None and str(v).strip() != ""}
    if len(given) > 1:
        raise ValueError(f"conflicting budgets {', '.join(f'{k}={v}' for k, v in given.items())}; "
                         + BUDGET_HELP)
    if not given:
        return Budget("tokens_per_param", (DEFAULT_TOKENS_PER_PARAM,))
    ((mode, value),) = given.items()
    if mode in ("flops", "tokens_per_param"):
        if isinstance(value, str):
            parts = [p for p in value.split(",") if p.strip()]
        else:  # a number, or a tuple from a command-line override (--config.budget.X=3,35)
            parts = list(value) if isinstance(value, tuple | list) else [value]
        if not parts:
            raise ValueError(f"empty flops budget {value!r}; {BUDGET_HELP}")
        return Budget(mode, tuple(sorted(_as_float(mode, p) for p in parts)))
    number = _as_float(mode, value)
    if mode in ("tokens", "steps"):
        if number != int(number):
            raise ValueError(f"{mode}={value!r} must be a whole number; {BUDGET_HELP}")
        number = float(int(number))
    return Budget(mode, (number,))


def parse_cooldowns(spec) -> tuple[float, ...]:
    """'0.25,0.5,1.0' -> (0.25, 0.5, 1.0); each fraction in (0, 1]. Empty -> ()."""
    if spec is None:
        return ()
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    fractions = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            value = float("nan")
        if not 0 < value <= 1:
            raise ValueError(f"bad cooldown fraction {part!r} in --cooldowns={spec!r}; give fractions "
                             "of the run in (0, 1], comma-separated, e.g. 0.25,0.5,1.0")
        fractions.append(value)
    return tuple(sorted(set(fractions)))


def _get(config: ml_collections.ConfigDict, key: str, default=None):
    return config.get(key, default) if config is not None else default


def plan_size(
    name: str,
    size: str,
    model: ModelConfig,
    budget_mode: str,
    budget_value: float,
    seq_len: int,
    train: ml_collections.ConfigDict | None,
    mesh: dict[str, int],
    cooldowns: tuple[float, ...] = (),
    overrides: dict | None = None,
    process_count: int = 1,
    target: Target | None = None,
    remat_fixed: bool = True,
    corpus_tokens: int | None = None,
    compile_check: bool = False,
    seed: int | None = None,
    replicate: int = 0,
) -> PlannedRun:
    """Plans one run of ``model`` under one budget value (see the module docstring).

    With a ``target``, the remat policy (unless ``remat_fixed``) and the micro-batch count (unless
    set) are chosen to fit its memory (a one-line ValueError when nothing fits); without one, the
    model's remat and the set micro-batch count (default 1) are kept and only estimated.
    ``compile_check``: the target's compiler decides instead of the estimate (``fit_compiled``).
    ``corpus_tokens``: training tokens in one epoch of the corpus, for ``epochs``.
    """
    overrides = dict(overrides or {})

    def setting(key):
        return overrides.get(key, _get(train, key))

    try:
        check_seq_len(seq_len, model.max_positions)
    except ValueError as error:
        raise ValueError(f"size {size!r}: {error}") from None
    counts = accounting.param_counts(model)
    batch_shards = mesh["data"] * mesh["fsdp"]
    micro_batches = setting("micro_batches")
    micro_batches = int(micro_batches) if micro_batches else None
    multiple = math.lcm(batch_shards * (micro_batches or 1), process_count)
    batch_size = setting("batch_size")
    try:
        batch_size = hparams_rule.resolve_batch_size(
            model, seq_len, None if batch_size is None else int(batch_size), multiple)
    except ValueError as error:
        raise ValueError(f"size {size!r}: {error}") from None
    compiled = None
    if target is not None:
        fit = fit_compiled if compile_check else memory_lib.fit
        try:
            choice = fit(model, seq_len, batch_size, mesh, target, process_count=process_count,
                         remat=model.remat if remat_fixed else None, micro_batches=micro_batches)
        except ValueError as error:
            raise ValueError(f"size {size!r} {error}") from None
        if compile_check:
            choice, verdict = choice
            compiled = verdict.to_dict()
        model = model.replace(remat=choice.remat)
        micro_batches, estimate = choice.micro_batches, choice.estimate
    else:
        micro_batches = micro_batches or 1
        state_shards = mesh["fsdp"] * mesh["tensor"] * mesh["expert"]
        estimate = memory_lib.estimate(model, seq_len, max(1, batch_size // batch_shards // micro_batches),
                                       state_shards, micro_batches, platform="cpu")
    batch_tokens = batch_size * seq_len
    flops_per_token = accounting.train_flops_per_token(model, seq_len)
    budget_flops = None
    if budget_mode == "steps":
        steps = int(budget_value)
    else:
        if budget_mode == "tokens_per_param":
            tokens = budget_value * counts["active"]
        elif budget_mode == "tokens":
            tokens = budget_value
        else:  # flops
            tokens = budget_value / flops_per_token
            budget_flops = budget_value
            if tokens < batch_tokens:  # one step would overshoot the budget: not an IsoFLOP run
                raise ValueError(
                    f"--flops={budget_value:.3g} buys {tokens / batch_tokens:.2g} of one training "
                    f"step of {size} (batch {batch_size} x seq_len {seq_len}: "
                    f"{flops_per_token * batch_tokens:.3g} FLOPs per step); raise the budget to "
                    f"at least {flops_per_token * batch_tokens:.3g}, or use smaller sizes")
        steps = max(1, round(tokens / batch_tokens))
    learning_rate = hparams_rule.resolve_learning_rate(
        model, batch_tokens, setting("learning_rate"), setting("learning_rate_law"))
    warmup = hparams_rule.resolve_warmup_steps(model, batch_tokens, steps, setting("warmup_steps"))
    tokens = steps * batch_tokens
    evals = int(_get(train, "evals_per_run", 10) or 1)
    checkpoints = int(_get(train, "checkpoints_per_run", 10) or 1)
    checkpoint_every = max(1, steps // checkpoints)
    schedule = str(setting("schedule") or "cosine")
    branches: tuple[Branch, ...] = ()
    if cooldowns:
        schedule = "wsd"
        cooldown_fraction = float(setting("cooldown_fraction") or 0.2)
        branches = plan_branches(name, steps, cooldowns, cooldown_fraction, checkpoint_every)
    return PlannedRun(
        name=name, size=size, model=model,
        params_total=counts["total"], params_non_embedding=counts["non_embedding"],
        params_active=counts["active"], seq_len=seq_len, batch_size=batch_size, steps=steps,
        tokens=tokens, flops_per_token=flops_per_token, flops=flops_per_token * tokens,
        learning_rate=learning_rate, warmup_steps=warmup, micro_batches=micro_batches,
        memory=estimate, budget_flops=budget_flops, eval_every=max(1, steps // evals),
        checkpoint_every=checkpoint_every, schedule=schedule, branches=branches,
        overrides={k: v for k, v in overrides.items()
                   if k not in ("batch_size", "learning_rate", "warmup_steps", "schedule",
                                "micro_batches")},
        epochs=tokens / corpus_tokens if corpus_tokens else None, compiled=compiled,
        seed=seed, replicate=replicate,
    )


# Candidates whose estimate exceeds the memory by more than this factor are not compiled: the
# estimate is within 25% of the compiler (benchmarks/RESULTS.md), and a refusal costs ~25 s.
SKIP_COMPILE_ABOVE = 1.5


def fit_compiled(model: ModelConfig, seq_len: int, batch_size: int, mesh: dict[str, int],
                 target: Target, *, process_count: int = 1, remat: str | None = None,
                 micro_batches: int | None = None, log=None):
    """(MemoryChoice, aot.Verdict): the cheapest (remat, micro_batches) the target's compiler
    accepts, trying ``memory.candidates`` in cost order (cached verdicts: ``neoscale.aot``).

    Raises a one-line ValueError naming the smallest program found when the compiler accepts
    none. ``log``: called with one line per compile (default: stderr).
    """
    from neoscale import aot

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    batch_shards = mesh["data"] * mesh["fsdp"]
    state_shards = mesh["fsdp"] * mesh["tensor"] * mesh["expert"]
    per_device = max(1, batch_size // batch_shards)
    best = None  # (bytes, description) of the smallest program compiled
    for policy, count in memory_lib.candidates(model, batch_size, mesh, process_count=process_count,
                                               remat=remat, micro_batches=micro_batches):
        est = memory_lib.estimate(model, seq_len, max(1, per_device // count), state_shards, count,
                                  platform=target.kind.platform, remat=policy)
        if est.peak > SKIP_COMPILE_ABOVE * target.usable_memory:
            continue
        candidate = model.replace(remat=policy)
        verdict = aot.check(candidate, seq_len, batch_size, count, mesh, target)
        how = "cached" if verdict.cached else f"{verdict.seconds:.0f} s"
        log(f"[compile] {model.d_model}x{model.num_layers} remat={policy} micro_batches={count} on "
            f"{target.name}: {verdict.describe()} (estimate {est.peak / 2**30:.1f} GiB; {how})")
        if verdict.fits:
            return memory_lib.MemoryChoice(policy, count, max(1, per_device // count), est), verdict
        if verdict.failed:  # not a memory verdict: other candidates would fail the same way
            raise ValueError(f"the {target.name} compiler failed on this host ({verdict.error}); "
                             "no memory verdict: run the dry run where the compiler works")
        found = verdict.bytes or _bytes_in(verdict.error)
        if found and (best is None or found < best[0]):
            best = (found, f"remat={policy} x {count} micro-batches needs {found / 2**30:.1f} GiB")
    named = best[1] if best else "no candidate within 1.5x of its memory by the estimate"
    raise ValueError(
        f"does not fit on {target.name} ({target.kind.name}) by its compiler: the best found, "
        f"{named} per device, {target.usable_memory / 2**30:.1f} GiB usable (batch {batch_size}, "
        f"seq_len {seq_len}); use more devices, a smaller batch or seq_len, or more memory")


def _bytes_in(error: str) -> int | None:
    """The bytes a TPU refusal names ('... HLO temporaries (37.52G) exceeds available HBM ...',
    or '... 36.38G of 30.75G hbm')."""
    match = re.search(r"(\d+(?:\.\d+)?)G\)? (?:exceeds|of \d)", error)
    return int(float(match[1]) * 2**30) if match else None


def model_for(size: str, model_overrides: dict, vocab_size: int) -> ModelConfig:
    """The size's ModelConfig with the study's model overrides and the tokenizer's vocabulary."""
    return presets.model_config(size, **{**model_overrides, "vocab_size": vocab_size})


def make_plan(
    sizes: Sequence[str],
    budget: Budget,
    *,
    vocab_size: int,
    seq_len: int,
    train: ml_collections.ConfigDict | None = None,
    model_overrides: dict | None = None,
    size_overrides: dict | None = None,
    cooldowns: tuple[float, ...] = (),
    num_devices: int = 1,
    mesh: str = "",
    process_count: int = 1,
    target: Target | None = None,
    corpus_tokens: int | None = None,
    max_epochs: float = DEFAULT_MAX_EPOCHS,
    allow_repetition: bool = False,
    compile_check: bool = False,
    replicates: dict[str, int] | None = None,
) -> list[PlannedRun]:
    """One PlannedRun per (budget value, size, replicate seed), smallest budget first, sizes in the
    given order, a size's replicates after it.

    Runs are named ``{size}_{budget tag}`` (``125M_tpp20``, ``cpu-100k_C3e13``), so a study rerun
    with another budget never reuses a run of the old one. ``target``: fit each run's memory to
    these devices (see ``plan_size``), by its compiler when ``compile_check``. ``replicates``:
    {size: seeds} (``parse_replicates``; missing sizes train one seed). ``corpus_tokens``:
    training tokens of one epoch; a run reading more than ``max_epochs`` epochs is refused unless
    ``allow_repetition``.

    Raises a one-line ValueError for a bad size name, a seq_len beyond a size's positions, a bad
    mesh, a run that does not fit the target, or data repeated beyond ``max_epochs``.
    """
    if not sizes:
        raise ValueError("empty size list; " + presets.VALID_FORMS)
    repeated_sizes = sorted({size for size in sizes if list(sizes).count(size) > 1})
    if repeated_sizes:
        raise ValueError(f"size {', '.join(repeated_sizes)} is listed more than once in "
                         f"{','.join(sizes)}; list each size once")
    mesh_sizes = parse_mesh(mesh, num_devices)
    size_overrides = dict(size_overrides or {})
    unknown = sorted(set(size_overrides) - set(sizes))
    if unknown:
        raise ValueError(f"size_overrides for {', '.join(unknown)}, which are not among the sizes "
                         f"{', '.join(sizes)}: fix the names or drop them")
    models = {}  # size -> (model, its model overrides, its other RunConfig overrides)
    for size in sizes:
        overrides = dict(size_overrides.get(size, {}))
        model_fields = {k: overrides.pop(k) for k in list(overrides) if k in MODEL_FIELDS}
        model_fields = {**(model_overrides or {}), **model_fields}
        model = model_for(size, model_fields, vocab_size)
        try:  # every parameter dimension divisible by its mesh axes, before anything trains
            ModelParams(model, seed=0).shardings(abstract_mesh(mesh_sizes))
        except ValueError as error:
            raise ValueError(f"size {size!r}: {error}") from None
        models[size] = model, model_fields, overrides
    runs = []
    base_seed = int(_get(train, "seed", 0) or 0)
    for value in budget.values:
        for size in sizes:
            model, model_fields, overrides = models[size]
            for replicate in range(int((replicates or {}).get(size, 1))):
                runs.append(plan_size(
                    run_name(size, budget.tag(value), replicate), size, model, budget.mode, value,
                    seq_len, train, mesh_sizes, cooldowns, overrides, process_count, target=target,
                    remat_fixed="remat" in model_fields, corpus_tokens=corpus_tokens,
                    compile_check=compile_check, seed=base_seed + replicate, replicate=replicate))
    repeated = [run for run in runs if run.epochs is not None and run.epochs > max_epochs]
    if repeated and not allow_repetition:
        worst = max(repeated, key=lambda run: run.epochs)
        raise ValueError(
            f"{len(repeated)} run(s) would repeat the data beyond {max_epochs:g} epochs ({worst.name} "
            f"reads {worst.epochs:.1f} epochs of {corpus_tokens:,} training tokens); returns fall off "
            "past ~4 epochs (Muennighoff et al. 2023): lower the budget, use a larger corpus, or "
            "pass --allow_repetition")
    return runs


def run_name(size: str, tag: str, replicate: int = 0) -> str:
    """A run's directory name: ``{size}_{tag}``, replicate i >= 1 ``{size}-seed{i}_{tag}``."""
    return f"{size}_{tag}" if replicate == 0 else f"{size}-seed{replicate}_{tag}"


REPLICATES_HELP = ("give --seeds=K (every size K seeds) and/or config.replicates as size:K pairs, "
                   "e.g. 'w64d2h2:2,w96d2h2:2'")


def parse_replicates(spec: str | None, sizes: Sequence[str], seeds: int = 1) -> dict[str, int]:
    """{size: seeds}: ``seeds`` for every size, raised for the sizes ``spec`` names ('size:K,...').

    One-line ValueError for a size not in ``sizes``, a malformed pair or a count below 1.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds={seeds}: seeds per size, an integer >= 1; {REPLICATES_HELP}")
    out = {size: seeds for size in sizes}
    for part in [p.strip() for p in str(spec or "").split(",") if p.strip()]:
        size, _, count = part.rpartition(":")
        if not size or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"bad replicates entry {part!r}: size:K with K >= 1; {REPLICATES_HELP}")
        if size.strip() not in out:
            raise ValueError(f"replicates name {size.strip()!r}, which is not among the sizes "
                             f"{', '.join(sizes)}; fix the name or drop it")
        out[size.strip()] = max(seeds, int(count))
    return out


def fit_warnings(runs: Sequence[PlannedRun]) -> list[str]:
    """Why the study's fits could not be checked, one line each (none when they can be).

    L(C) has three constants: three final points determine it exactly (no interval, no held-out
    check); Chinchilla's Approach 3 needs >= 6 final points with >= 3 token counts
    (``neoscale.scaling.study``). Cooldown branches add final points at other token counts.
    """
    points = len(runs) + sum(len(run.branches) for run in runs)
    tokens = {run.tokens for run in runs} | {branch.steps * run.batch_size * run.seq_len
                                             for run in runs for branch in run.branches}
    hint = "add sizes or cooldown branches (--cooldowns=0.25,0.5,1.0)"
    lines = []
    if points <= 3:
        lines.append(f"{points} final point(s): L(C)'s three constants are exactly determined, with "
                     f"no interval and no held-out check; {hint}")
    if points < 6 or len(tokens) < 3:
        lines.append(f"Chinchilla's Approach 3 needs >= 6 final points with >= 3 token counts, the "
                     f"plan has {points} and {len(tokens)}; {hint}")
    return lines


def headroom_warnings(runs: Sequence[PlannedRun], usable_bytes: float) -> list[str]:
    """One line per run whose compiled program libtpu accepted but which exceeds the memory this
    planner keeps usable (the chip less its headroom): it may fail at run time from fragmentation."""
    lines = []
    for run in runs:
        compiled = run.compiled or {}
        used = max((b for b in (compiled.get("train_bytes"), compiled.get("eval_bytes")) if b),
                   default=None)
        if compiled.get("fits") and used and used > usable_bytes:
            lines.append(f"{run.name}: the compiler accepts {used / 2**30:.1f} GiB per device, above the "
                         f"{usable_bytes / 2**30:.1f} GiB kept usable (little headroom for fragmentation "
                         f"at run time); --config.train.micro_batches={2 * run.micro_batches} or remat "
                         "leaves more")
    return lines


def repetition_warnings(runs: Sequence[PlannedRun], max_epochs: float = DEFAULT_MAX_EPOCHS) -> list[str]:
    """One line per run that repeats its data more than ``max_epochs`` times (when allowed)."""
    return [f"{run.name} reads {run.epochs:.1f} epochs of its corpus (more than {max_epochs:g})"
            for run in runs if run.epochs is not None and run.epochs > max_epochs]


MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))

PLAN_COLUMNS = ("run", "shape", "params", "non-emb", "active", "tokens", "epochs", "FLOPs", "steps",
                "batch", "micro", "remat", "lr", "warmup", "mem/device")


def format_bytes(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def plan_columns(runs: Sequence[PlannedRun]) -> tuple[str, ...]:
    """PLAN_COLUMNS, and "compiled" (the compiler's bytes per device) when a run was compiled."""
    return PLAN_COLUMNS + (("compiled",) if any(run.compiled for run in runs) else ())


def plan_rows(runs: Sequence[PlannedRun]) -> list[list[str]]:
    """The plan as table cells (``plan_columns``), one row per run."""
    fmt = accounting.format_count
    rows = []
    for run in runs:
        m = run.model
        shape = f"d{m.d_model} L{m.num_layers} H{m.num_heads}" + (
            f" E{m.num_experts}k{m.top_k}" if m.is_moe else "")
        epochs = "?" if run.epochs is None else f"{run.epochs:.2f}"
        rows.append([run.name, shape, f"{run.params_total:,}", fmt(run.params_non_embedding),
                     fmt(run.params_active), f"{run.tokens:,}", epochs, f"{run.flops:.3g}",
                     str(run.steps), str(run.batch_size), str(run.micro_batches), m.remat,
                     f"{run.learning_rate:.3g}", str(run.warmup_steps),
                     format_bytes(run.memory_bytes_per_device)])
        if any(other.compiled for other in runs):
            rows[-1].append(format_bytes(max(run.compiled["train_bytes"], run.compiled["eval_bytes"]))
                            if run.compiled else "-")
    return rows


def total_flops(runs: Sequence[PlannedRun]) -> float:
    """FLOPs of the whole study: every main run plus its cooldown branches."""
    return sum(run.total_flops for run in runs)


def format_table(runs: Sequence[PlannedRun], markdown: bool = False) -> str:
    """The plan table (plain aligned text, or markdown) followed by the study's total FLOPs."""
    rows, columns = plan_rows(runs), plan_columns(runs)
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(str(c)) for c in col) for col in zip(columns, *rows, strict=True)]
        lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                           enumerate(zip(cells, widths, strict=True)))
                 for cells in [list(columns), *rows]]
    branches = sum(len(run.branch_names()) for run in runs)
    extra = f" (incl. {branches} cooldown branches)" if branches else ""
    lines.append("")
    lines.append(f"total training FLOPs: {total_flops(runs):.4g}{extra}; {len(runs)} runs; FLOPs "
                 "= 3 x forward incl. LM head and attention (neoscale.accounting)")
    lines += [f"warning: {line}" for line in repetition_warnings(runs)]
    return "\n".join(lines)
