"""RunConfig: everything that defines one training run (one model size, one schedule)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from neoscale.data.pipeline import DataConfig
from neoscale.model import ModelConfig
from neoscale.training.optimizer import COOLDOWN_SHAPES, SCHEDULES

SYNTHETIC = "synthetic"  # DataConfig.data of random tokens (neoscale.training.synthetic)
SYNTHETIC_VOCAB_SIZE = 256
# neoscale.train's flat flags (and config.json written before RunConfig nested its data) -> the
# DataConfig field each one sets.
FLAT_DATA_FIELDS = {"data": "data", "tokenizer": "tokenizer", "seq_len": "seq_len",
                    "heldout_tokens": "heldout_tokens", "data_seed": "seed",
                    "data_cache_dir": "cache_dir", "tfds_data_dir": "tfds_data_dir",
                    "tfds_split": "tfds_split", "text_field": "text_field",
                    "max_documents": "max_documents"}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run: the model it trains, the data it reads, and how. ``None`` hyper-parameters take
    the one per-size rule (``neoscale.training.hparams``).

    model: the ModelConfig trained (a study passes the one its plan printed; its vocab_size
      covers the data's). data: the ``neoscale.data.DataConfig`` read (``data.data ==
      "synthetic"``: random tokens over the model's vocabulary); ``data.seed`` is the data seed
      (held-out documents, window order, the tokenizer's training order) and ``seed`` the model
      seed (initialisation): replicates that vary one keep the other fixed.
    batch_size: sequences per optimizer step (global); None: the table's tokens / seq_len.
    micro_batches: gradient accumulation: the batch is processed in this many slices.
    mesh: "--mesh" syntax, e.g. "data:2,fsdp:-1"; "" = every device on fsdp.
    eval_batch_size: sequences (global) per evaluation micro-batch; None: the training
      micro-batch (batch_size // micro_batches), which the planner has already fitted in memory.
    schedule: "cosine" | "wsd" | "constant"; cooldown_steps (if set) or cooldown_fraction of the
      steps is the WSD cooldown, ``cooldown_shape`` "linear" or "1-sqrt".
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

    model: ModelConfig
    data: DataConfig = DataConfig()
    workdir: str = ""
    steps: int = 1000
    batch_size: int | None = None
    micro_batches: int = 1
    mesh: str = ""
    seed: int = 0
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
    init_from: tuple[str, int] | None = None
    eval_tasks: str = ""
    eval_task_examples: int | None = None

    def __post_init__(self) -> None:
        validate(self)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @property
    def seq_len(self) -> int:
        return self.data.seq_len

    @property
    def synthetic(self) -> bool:
        return self.data.data == SYNTHETIC

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["init_from"] = list(self.init_from) if self.init_from else None
        d["learning_rate_law"] = list(self.learning_rate_law) if self.learning_rate_law else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], model: dict[str, Any] | None = None) -> RunConfig:
        """From ``to_dict``'s output, or from the flat "run" of a config.json written before
        RunConfig nested its data and model (``from_flat``; ``model``: that file's "model")."""
        if not isinstance(d.get("model"), dict):
            return cls.from_flat(d, model)
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in fields}
        d["model"] = _model_from_dict(d["model"])
        data_fields = {f.name for f in dataclasses.fields(DataConfig)}
        d["data"] = DataConfig(**{k: v for k, v in d["data"].items() if k in data_fields})
        if d.get("init_from"):
            d["init_from"] = (str(d["init_from"][0]), int(d["init_from"][1]))
        if d.get("learning_rate_law"):
            d["learning_rate_law"] = tuple(float(x) for x in d["learning_rate_law"])
        return cls(**d)

    @classmethod
    def from_flat(cls, flat: dict[str, Any], model: dict[str, Any] | None = None) -> RunConfig:
        """From flat settings: ``neoscale.train``'s flags, or a config.json's "run" written before
        the nesting (``size``, ``model_overrides``, the data fields of ``FLAT_DATA_FIELDS``,
        ``vocab_size`` for synthetic data). ``model``: the model as saved; else built from
        ``size`` and ``model_overrides`` with the data's vocabulary."""
        from neoscale.presets import model_config

        flat = dict(flat)
        data = DataConfig(**{FLAT_DATA_FIELDS[k]: flat.pop(k) for k in list(flat)
                             if k in FLAT_DATA_FIELDS})
        size, overrides = flat.pop("size", None), dict(flat.pop("model_overrides", None) or {})
        vocab_size = flat.pop("vocab_size", None)
        if model is not None:
            model_cfg = _model_from_dict(model)
        else:
            if not size:
                raise ValueError("a model size is required, e.g. --size=cpu-100k")
            overrides.setdefault("vocab_size", _data_vocab_size(data, vocab_size))
            model_cfg = model_config(size, **overrides)
        return cls.from_dict({**flat, "model": dataclasses.asdict(model_cfg),
                              "data": dataclasses.asdict(data)})

    def to_flat(self, size: str) -> dict[str, Any]:
        """The flat settings ``from_flat`` reads back (``neoscale.train``'s flags): ``size`` names
        the preset the model was built from; every model field but the vocabulary is an override."""
        d = self.to_dict()
        model, data = d.pop("model"), d.pop("data")
        flat_names = {field: flag for flag, field in FLAT_DATA_FIELDS.items()}
        d.update({flat_names[k]: v for k, v in data.items()})
        vocab_size = model.pop("vocab_size")
        return {**d, "size": size, "model_overrides": model,
                "vocab_size": vocab_size if self.synthetic else None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _model_from_dict(d: dict[str, Any]) -> ModelConfig:
    """A saved ModelConfig; fields added since it was saved take their defaults."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in d.items() if k in fields})


def _data_vocab_size(data: DataConfig, vocab_size: int | None) -> int:
    """The vocabulary ``data`` gives (synthetic: ``vocab_size`` or the default)."""
    if data.data == SYNTHETIC:
        return vocab_size or SYNTHETIC_VOCAB_SIZE
    if vocab_size is not None:
        raise ValueError("vocab_size applies to --data=synthetic only; real data takes the "
                         "tokenizer's vocabulary (set --tokenizer=train:VOCAB)")
    from neoscale.data.tokenizer import vocab_size_of

    return vocab_size_of(data.tokenizer)


def validate(c: RunConfig) -> None:
    """One-line ValueError for a bad setting (before anything is built or compiled)."""
    if not c.workdir:
        raise ValueError("workdir is required: pass --workdir=DIR (a local path or gs://...)")
    if c.data.seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {c.data.seq_len}")
    for name in ("steps", "micro_batches", "log_every", "eval_every",
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
    if c.data.seq_len > c.model.max_positions:
        raise ValueError(f"seq_len={c.data.seq_len} exceeds the model's max_positions="
                         f"{c.model.max_positions}; lower --seq_len")
    if c.eval_tasks:
        from neoscale.evaluation.tasks import parse_tasks

        parse_tasks(c.eval_tasks, flag="eval_tasks")
        if c.synthetic:
            raise ValueError("eval_tasks needs real data (a tokenizer for the tasks' text); "
                             "use --data=builtin or set eval_tasks to ''")
    if c.eval_task_examples is not None and c.eval_task_examples < 1:
        raise ValueError(f"eval_task_examples must be >= 1 (None: all), got {c.eval_task_examples}")
