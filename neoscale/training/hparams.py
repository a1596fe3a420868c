"""Default training hyper-parameters per model size: the GPT-3 table, interpolated.

THE rule (one rule for every size, used by ``neoscale.train`` and the study runner):

* Anchors: the GPT-3 paper's batch size (tokens) and peak learning rate for the five GPT-Neo
  shapes (REFERENCE.md §1), keyed by their *non-embedding* parameter count, which does not depend
  on the tokenizer's vocabulary (for mixture-of-experts models: the *active* non-embedding
  count, ``hparams_for``).
* Between anchors: straight lines in log(non-embedding params) vs log(value).
* Beyond the anchors: the peak learning rate follows the power law ``lr ∝ N^-b`` least-squares
  fitted to all five anchors (b ≈ 0.38), continued from the nearest anchor (so the 100k-parameter
  end of the CPU ladder trains at ~7.9e-3, 14M at ~1.2e-3); the batch size stays at the nearest
  anchor's value.
* A batch other than the table's: the peak learning rate follows the square-root rule for Adam,
  ``lr * sqrt(B / B_table)`` (``learning_rate_for``), for batches smaller than the table's only.
* Warmup: GPT-3's 375M tokens for every size, capped at 10% of the run's steps so that short
  runs still spend most of their steps at the peak (``warmup_steps``).
"""

from __future__ import annotations

import dataclasses
import math

from neoscale.accounting import param_counts
from neoscale.model import ModelConfig

# (non-embedding params, batch tokens, peak learning rate), from REFERENCE.md §1.
GPT3_TABLE: tuple[tuple[int, int, float], ...] = (
    (85_028_352, 2**19, 6e-4),        # 125M
    (302_237_696, 2**19, 3e-4),       # 350M
    (679_848_960, 2**19, 2.5e-4),     # 760M
    (1_208_455_168, 2**20, 2e-4),     # 1.3B
    (2_517_406_720, 2**20, 1.6e-4),   # 2.7B
)
WARMUP_TOKENS = 375_000_000  # GPT-3: linear warmup over the first 375M tokens, every size.
MAX_WARMUP_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class HParams:
    """Defaults for one size."""

    batch_tokens: int
    peak_learning_rate: float
    warmup_tokens: int = WARMUP_TOKENS


def _fitted_lr_exponent() -> float:
    """Least-squares slope of log(lr) against log(N) over the table (negative)."""
    xs = [math.log(n) for n, _, _ in GPT3_TABLE]
    ys = [math.log(lr) for _, _, lr in GPT3_TABLE]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)


LR_EXPONENT = _fitted_lr_exponent()


def _interpolate(n: float, points: list[tuple[float, float]]) -> float:
    """Piecewise-linear in log-log between sorted (n, value) points; n inside their range."""
    x = math.log(n)
    for (n0, v0), (n1, v1) in zip(points, points[1:], strict=False):
        if n <= n1:
            t = (x - math.log(n0)) / (math.log(n1) - math.log(n0))
            return math.exp(math.log(v0) + t * (math.log(v1) - math.log(v0)))
    return points[-1][1]


def gpt3_hparams(non_embedding_params: int) -> HParams:
    """Batch tokens, peak learning rate and warmup tokens for a model of this size."""
    if non_embedding_params <= 0:
        raise ValueError(f"non_embedding_params must be positive, got {non_embedding_params}")
    n = float(non_embedding_params)
    lo, hi = GPT3_TABLE[0], GPT3_TABLE[-1]
    if n < lo[0]:
        lr = lo[2] * (n / lo[0]) ** LR_EXPONENT
        batch = lo[1]
    elif n > hi[0]:
        lr = hi[2] * (n / hi[0]) ** LR_EXPONENT
        batch = hi[1]
    else:
        lr = _interpolate(n, [(p, v) for p, _, v in GPT3_TABLE])
        batch = _interpolate(n, [(p, float(b)) for p, b, _ in GPT3_TABLE])
    return HParams(batch_tokens=int(round(batch)), peak_learning_rate=lr)


def hparams_for(config: ModelConfig) -> HParams:
    """The rule's defaults for a model, keyed by its *active* non-embedding parameters, so that a
    mixture-of-experts model trains like the dense model of the same per-token compute."""
    counts = param_counts(config)
    return gpt3_hparams(counts["active"] - counts["embedding"])


def default_batch_size(hparams: HParams, seq_len: int, multiple_of: int = 1) -> int:
    """Sequences per step closest to the table's batch tokens, a multiple of ``multiple_of``."""
    sequences = max(1, round(hparams.batch_tokens / seq_len / multiple_of)) * multiple_of
    return sequences


def learning_rate_for(hparams: HParams, batch_tokens: int) -> float:
    """Peak learning rate for a batch of ``batch_tokens`` tokens (the table's is for its batch).

    The square-root scaling rule for adaptive optimizers, lr ∝ sqrt(B): Malladi et al. 2022 ("On
    the SDEs and scaling rules for adaptive gradient algorithms") derive it for Adam (keeping the
    gradient noise the update sees constant), as Hoffer et al. 2017 did for SGD; the linear rule
    holds for SGD only. Applied to smaller batches only: the table's batches are near GPT-3's
    critical batch size, beyond which larger batches stop tolerating larger steps, so a larger
    batch keeps the table's rate. E.g. 4096-token CPU batches at 100k parameters (table rate
    7.9e-3 for 2^19 tokens) train at 7.9e-3 * sqrt(4096 / 2^19) = 7.0e-4.
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
    return hparams.peak_learning_rate * math.sqrt(min(1.0, batch_tokens / hparams.batch_tokens))


def warmup_steps(hparams: HParams, batch_tokens: int, total_steps: int) -> int:
    """Warmup steps: the table's warmup tokens, capped at 10% of the run (at least 1 step)."""
    steps = math.ceil(hparams.warmup_tokens / batch_tokens)
    return max(1, min(steps, int(MAX_WARMUP_FRACTION * total_steps)))


def learning_rate_from_law(law: tuple[float, float], params: float) -> float:
    """Peak learning rate ``coef * params ** exponent`` from ``law = (coef, exponent)``.

    For a study that measured its own optimum: fit log(lr_opt) against log(N) over a sweep of its
    smaller sizes and give the two constants (``train.learning_rate_law``); larger sizes then get
    the law's extrapolation rather than a rate tuned on them (experiments/cpu_demo.py).
    """
    coef, exponent = (float(x) for x in law)
    if coef <= 0 or params <= 0:
        raise ValueError(f"learning_rate_law={tuple(law)} must have a positive coefficient "
                         f"(and the model positive parameters, got {params})")
    return coef * params ** exponent


# --- The one resolver of a run's per-size settings (the planner and neoscale.train both call it).

def resolve_batch_size(model: ModelConfig, seq_len: int, batch_size: int | None, multiple: int) -> int:
    """Sequences per optimizer step: ``batch_size`` if set, else the table's batch tokens in
    sequences, rounded to ``multiple`` = lcm(the mesh's data x fsdp shards x micro-batches, the
    process count). A one-line ValueError when a set batch is not a positive multiple of it."""
    if batch_size is None:
        batch_size = default_batch_size(hparams_for(model), seq_len, multiple)
    if batch_size < 1 or batch_size % multiple:
        raise ValueError(f"batch_size={batch_size} must be a positive multiple of {multiple}, lcm(the "
                         "mesh's data x fsdp shards x micro_batches, the process count); set another "
                         "batch size (--batch_size, --config.train.batch_size)")
    return int(batch_size)


def resolve_learning_rate(model: ModelConfig, batch_tokens: int, learning_rate: float | None = None,
                          law: tuple[float, float] | None = None) -> float:
    """The peak learning rate: ``learning_rate`` if set, else ``law`` = (coef, exponent) at the
    model's active parameters, else the table's rule scaled to the batch (``learning_rate_for``)."""
    if learning_rate is not None:
        return float(learning_rate)
    if law:
        return learning_rate_from_law(law, param_counts(model)["active"])
    return learning_rate_for(hparams_for(model), batch_tokens)


def resolve_warmup_steps(model: ModelConfig, batch_tokens: int, steps: int,
                         warmup: int | None = None) -> int:
    """Warmup steps: ``warmup`` if set, else the table's warmup tokens capped at 10% of the run."""
    return warmup_steps(hparams_for(model), batch_tokens, steps) if warmup is None else int(warmup)
