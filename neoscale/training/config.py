"""RunConfig: everything that defines one training run (one model size, one schedule)."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from neoscale.training.optimizer import COOLDOWN_SHAPES, SCHEDULES

if TYPE_CHECKING:
    from neoscale.data import DataConfig

SYNTHETIC = "synthetic"
SYNTHETIC_VOCAB_SIZE = 256


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run. ``None`` hyper-parameters take the GPT-3-table defaults (``hparams``).

    size: a name accepted by ``neoscale.presets.model_config`` (e.g. "cpu-100k", "125M").
    model_overrides: ModelConfig fields to replace (e.g. {"dtype": "bfloat16"}).
    batch_size: sequences per optimizer step (global); None: the table's tokens / seq_len.
    micro_batches: gradient accumulation: the batch is processed in this many slices.
    mesh: "--mesh" syntax, e.g. "data:2,fsdp:-1"; "" = every device on fsdp.
    seed: the model seed (parameter initialisation); data_seed: the data seed (held-out
      documents, training-window order, the tokenizer's training order): replicates that vary
      one keep the other fixed.
    eval_batch_size: sequences (global) per evaluation micro-batch; None: the training
      micro-batch (batch_size // micro_batches), which the planner has already fitted in memory.
    schedule: "cosine" | "wsd" | "constant"; cooldown_steps (if set) or cooldown_fraction of the
      steps is the WSD cooldown, ``cooldown_shape`` "linear" or "1-sqrt".
    data: "synthetic" or a ``neoscale.data`` source ("builtin", "text:GLOB", "tfds:NAME");
      tokenizer, heldout_tokens, tfds_data_dir, tfds_split, text_field and max_documents are
      passed on to ``neoscale.data.DataConfig``.
    vocab_size: synthetic data only (real data: the tokenizer's).
    init_from: (run_dir, step): start from that run's checkpoint (state and data position),
      e.g. a WSD cooldown branch with ``steps = step + cooldown_steps``; the learning rate and
      warmup default to the parent run's resolved values. A relative run_dir is a sibling of
      ``workdir`` (a study's runs name each other so, and survive a copy or move of the study).
    eval_tasks: downstream tasks scored at every evaluation ("" none, "all", or e.g.
      "arc_easy,piqa": ``neoscale.evaluation.tasks``), on the first ``eval_task_examples``
      examples of each (None: all shipped, up to 1,000); real data only (the run's tokenizer).
    keep_checkpoint_every: also keep every checkpoint whose step is a multiple of this
      (orbax keep_period), e.g. the fork points of cooldown branches.
    """

    size: str = "cpu-100k"
    workdir: str = ""
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps: int = 1000
    batch_size: int | None = None
    seq_len: int = 256
    micro_batches: int = 1
    mesh: str = ""
    seed: int = 0
    data_seed: int = 0
    learning_rate: float | None = None
    learning_rate_law: tuple[float, float] | None = None  # (coef, exponent): lr = coef * N_active^exponent
    schedule: str = "cosine"
    warmup_steps: int | None = None
    cooldown_fraction: float = 0.2
    cooldown_steps: int | None = None
    cooldown_shape: str = "linear"
    weight_decay: float = 0.1
    decay_embeddings: bool = False
    decay_norms_and_biases: bool = False
    clip_norm: float = 1.0
    log_every: int = 10
    eval_every: int = 100
    eval_batch_size: int | None = None
    checkpoint_every: int = 100
    checkpoint_minutes: float | None = 30.0  # also save when this long has passed since the last save
    keep_checkpoints: int = 3
    keep_checkpoint_every: int | None = None
    async_checkpoints: bool = True
    tensorboard: bool = True
    data: str = "builtin"
    tokenizer: str = "train:8192"
    heldout_tokens: int = 65536
    data_cache_dir: str = "~/.cache/neoscale"
    tfds_data_dir: str | None = None
    tfds_split: str = "train"
    text_field: str = "text"
    max_documents: int | None = None
    vocab_size: int | None = None
    init_from: tuple[str, int] | None = None
    eval_tasks: str = ""
    eval_task_examples: int | None = None

    def __post_init__(self) -> None:
        validate(self)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["init_from"] = list(self.init_from) if self.init_from else None
        d["learning_rate_law"] = list(self.learning_rate_law) if self.learning_rate_law else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in fields}
        if d.get("init_from"):
            d["init_from"] = (str(d["init_from"][0]), int(d["init_from"][1]))
        if d.get("learning_rate_law"):
            d["learning_rate_law"] = tuple(float(x) for x in d["learning_rate_law"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def data_config(self) -> DataConfig:
        """The ``neoscale.data.DataConfig`` this run reads (real data; the one place it is built)."""
        from neoscale.data import DataConfig

        return DataConfig(data=self.data, tokenizer=self.tokenizer, seq_len=self.seq_len,
                          heldout_tokens=self.heldout_tokens, seed=self.data_seed,
                          cache_dir=self.data_cache_dir, tfds_data_dir=self.tfds_data_dir,
                          tfds_split=self.tfds_split, text_field=self.text_field,
                          max_documents=self.max_documents)


def validate(c: RunConfig) -> None:
    """One-line ValueError for a bad setting (before anything is built or compiled)."""
    if not c.workdir:
        raise ValueError("workdir is required: pass --workdir=DIR (a local path or gs://...)")
    for name in ("steps", "seq_len", "micro_batches", "log_every", "eval_every",
                 "checkpoint_every", "keep_checkpoints"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
    if c.checkpoint_minutes is not None and not c.checkpoint_minutes > 0:
        raise ValueError(f"checkpoint_minutes must be > 0 (None: by steps only), got {c.checkpoint_minutes}")
    if c.batch_size is not None and c.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {c.batch_size}")
    if c.eval_batch_size is not None and c.eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be >= 1, got {c.eval_batch_size}")
    if c.batch_size is not None and c.batch_size % c.micro_batches:
        raise ValueError(f"batch_size={c.batch_size} is not divisible by "
                         f"micro_batches={c.micro_batches}")
    if c.learning_rate is not None and not c.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {c.learning_rate}")
    if c.learning_rate_law is not None and (len(c.learning_rate_law) != 2
                                            or not float(c.learning_rate_law[0]) > 0):
        raise ValueError(f"learning_rate_law={c.learning_rate_law} must be (coef, exponent) with a "
                         "positive coef: lr = coef * active_params ** exponent")
    if c.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {c.schedule!r}; valid: {', '.join(SCHEDULES)}")
    if c.cooldown_shape not in COOLDOWN_SHAPES:
        raise ValueError(f"unknown cooldown_shape {c.cooldown_shape!r}; "
                         f"valid: {', '.join(COOLDOWN_SHAPES)}")
    if not 0 <= c.cooldown_fraction <= 1:
        raise ValueError(f"cooldown_fraction must be in [0, 1], got {c.cooldown_fraction}")
    if c.warmup_steps is not None and not 0 <= c.warmup_steps <= c.steps:
        raise ValueError(f"warmup_steps={c.warmup_steps} must be between 0 and steps={c.steps}")
    if c.init_from is not None and not 0 < int(c.init_from[1]) < c.steps:
        raise ValueError(f"init_from step {c.init_from[1]} must be between 1 and steps-1 "
                         f"({c.steps - 1})")
    if c.eval_tasks:
        from neoscale.evaluation.tasks import parse_tasks

        parse_tasks(c.eval_tasks, flag="eval_tasks")
        if c.data == SYNTHETIC:
            raise ValueError("eval_tasks needs real data (a tokenizer for the tasks' text); "
                             "use --data=builtin or set eval_tasks to ''")
    if c.eval_task_examples is not None and c.eval_task_examples < 1:
        raise ValueError(f"eval_task_examples must be >= 1 (None: all), got {c.eval_task_examples}")
    if c.vocab_size is not None and c.data != SYNTHETIC:
        raise ValueError("vocab_size applies to --data=synthetic only; real data takes the "
                         "tokenizer's vocabulary (set --tokenizer=train:VOCAB)")
