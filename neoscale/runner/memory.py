"""Device memory of a training step, and the micro-batch / rematerialisation choice that fits.

The estimate (bytes per device) adds up, for a micro-batch of ``b`` sequences of ``s`` tokens:

* **state**: float32 parameters, gradients and two AdamW moments (16 bytes per parameter) sharded
  over the mesh's fsdp x tensor x expert axes; a float32 gradient accumulator when
  ``micro_batches > 1``; one layer group's weights gathered in the compute dtype, twice (FSDP:
  the forward's copy and the backward's), and that group's weight gradient whole on every device,
  in the parameters' dtype, before it is reduced over the batch shards. For routed layers these
  weight-sized terms carry all E experts: at 8192 tokens per device (v5e-64), 125M-e32k1's group
  gradient alone is 1.1 GiB, a quarter of its step (benchmarks/RESULTS.md, "A routed step").
* **activations** saved for the backward pass: the bytes per token per layer that the model's own
  jaxpr keeps under the remat policy (``saved_per_token_layer``: JAX's saved residuals of one
  layer group on abstract shapes, with the attention kernel of the target's platform, laid out in
  the TPU's tiles there), for every layer, since a scanned stack keeps every residual JAX saves.
  The XLA attention paths' score tensors come with the kernel (the dense path keeps its float32
  scores and probabilities).
* **working set**: one layer group's activations as the backward pass recomputes them (the
  ``none`` policy's residuals), with the XLA paths' scores of one layer (keys: the whole sequence
  for dense layers, half of it plus half a block for blocked causal ones, two windows for banded
  local layers).
* **loss**: float32 logits and their gradient for the tokens the loss holds at once: the whole
  micro-batch for the plain loss, one chunk (``model.loss_chunk_tokens``) for the fused one.

Activations and the working set are multiplied by ``XLA_OVERHEAD`` for XLA's temporaries. The
planner's choice (``fit``): among the remat policies and micro-batch counts whose estimate fits the
device's usable memory, the one with the lowest relative step time ``REMAT_COST x (1 +
MICRO_BATCH_COST x log2(micro_batches))``; ``neoscale.runner.plan`` can instead ask the target's
compiler (``neoscale.aot``) about the candidates in that order. ``neoscale.bench`` prints the
estimate beside the allocator's peak on a real device.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from neoscale import accounting
from neoscale.hardware import GiB, Target
from neoscale.model import ModelConfig
from neoscale.model.attention import GLOBAL_BLOCK, resolve

# Relative step time of each rematerialisation policy (full = one extra forward pass: 4/3).
REMAT_COST = {"none": 1.0, "dots": 1.08, "dots_no_batch": 1.15, "full": 4 / 3}
MICRO_BATCH_COST = 0.03  # per doubling of the micro-batch count (accumulation, smaller matmuls)
XLA_OVERHEAD = 1.1  # XLA temporaries beyond the saved residuals: compiler / estimate 0.9-1.05 (RESULTS.md)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of one training step (and of one evaluation micro-batch)."""

    state: int
    activations: int
    working_set: int
    loss: int
    eval: int

    @property
    def train(self) -> int:
        return self.state + self.activations + self.working_set + self.loss

    @property
    def peak(self) -> int:
        return max(self.train, self.state + self.eval)


@dataclasses.dataclass(frozen=True)
class MemoryChoice:
    """What the planner picked: remat policy, gradient accumulation and the estimate."""

    remat: str
    micro_batches: int
    micro_batch_per_device: int  # sequences per device per micro-batch
    estimate: MemoryEstimate


def _attention_keys(model: ModelConfig, layer: int, seq_len: int) -> float:
    """Keys per query whose scores the XLA attention paths compute."""
    if model.attention_impl == "dense":
        return seq_len
    if model.attention_kind(layer) == "local":
        return min(seq_len, 2 * model.window_size)
    return min(seq_len, (seq_len + GLOBAL_BLOCK) / 2)


def saved_per_token_layer(model: ModelConfig, seq_len: int, remat: str, platform: str) -> float:
    """Bytes per token per layer the backward pass keeps, laid out as on ``platform``
    (``accounting.saved_residual_bytes``: the model's own jaxpr, its weights not counted)."""
    return accounting.saved_residual_bytes(model, seq_len, remat, platform, laid_out=True)["per_token_layer"]


def estimate(model: ModelConfig, seq_len: int, micro_batch_per_device: int, state_shards: int,
             micro_batches: int, *, platform: str = "cpu",
             remat: str | None = None) -> MemoryEstimate:
    """The estimate described in the module docstring, for ``model.remat`` (or ``remat``), the
    model's ``loss_impl`` and the attention kernel ``model.attention_impl`` stands for on
    ``platform`` ('tpu', 'gpu' or 'cpu')."""
    remat = model.remat if remat is None else remat
    impl = resolve(model.attention_impl, model.dtype, platform)
    a = 4 if model.dtype == "float32" else 2
    tokens = seq_len * micro_batch_per_device
    params = accounting.param_counts(model)["total"]
    state = accounting.model_state_bytes(model)["total"] / state_shards
    if micro_batches > 1:
        state += 4 * params / state_shards
    group_params = (params - accounting.param_counts(model)["embedding"]) / model.num_groups
    state += (2 * a + np.dtype(model.param_dtype).itemsize) * group_params

    def scores(layer: int) -> float:  # per token: what an XLA path holds while a layer attends
        if impl in ("splash", "cudnn"):
            return 0.0
        return (4 + a) * model.num_heads * _attention_keys(model, layer, seq_len)

    saved = model.num_layers * saved_per_token_layer(model, seq_len, remat, platform)
    period = model.layer_period
    working = (period * saved_per_token_layer(model, seq_len, "none", platform)
               + sum(scores(i) for i in range(period)))
    fused = model.loss_impl == "fused"
    loss_tokens = min(tokens, model.loss_chunk_tokens) if fused else tokens
    loss = loss_tokens * model.vocab_size * (8 + a)
    eval_bytes = XLA_OVERHEAD * tokens * working / 2 + loss_tokens * model.vocab_size * (4 + a)
    return MemoryEstimate(state=int(state), activations=int(XLA_OVERHEAD * tokens * saved),
                          working_set=int(XLA_OVERHEAD * tokens * working), loss=int(loss),
                          eval=int(eval_bytes))


def candidates(model: ModelConfig, batch_size: int, mesh: dict[str, int], *,
               process_count: int = 1, remat: str | None = None,
               micro_batches: int | None = None) -> list[tuple[str, int]]:
    """Every valid (remat policy, micro-batch count), cheapest first (``relative_cost``).

    A micro-batch count must divide the per-device batch, and the global batch must be a multiple
    of lcm(batch shards x micro_batches, process_count); fixed ones are kept.
    """
    batch_shards = mesh["data"] * mesh["fsdp"]
    per_device = max(1, batch_size // batch_shards)
    policies = [remat] if remat else list(REMAT_COST)
    counts = [micro_batches] if micro_batches else [m for m in range(1, per_device + 1)
                                                     if per_device % m == 0]
    valid = [(policy, count) for policy in policies for count in counts
             if not batch_size % math.lcm(batch_shards * count, process_count)]
    return sorted(valid, key=lambda c: (relative_cost(*c), c[1]))


def relative_cost(remat: str, micro_batches: int) -> float:
    return REMAT_COST[remat] * (1 + MICRO_BATCH_COST * math.log2(micro_batches))


def fit(model: ModelConfig, seq_len: int, batch_size: int, mesh: dict[str, int], target: Target,
        *, process_count: int = 1, remat: str | None = None,
        micro_batches: int | None = None) -> MemoryChoice:
    """The cheapest (remat, micro_batches) whose estimate fits ``target``; fixed ones are kept.

    ``batch_size`` is global (sequences); see ``candidates``. Raises a one-line ValueError when
    nothing fits.
    """
    batch_shards = mesh["data"] * mesh["fsdp"]
    state_shards = mesh["fsdp"] * mesh["tensor"] * mesh["expert"]
    per_device = max(1, batch_size // batch_shards)
    smallest = None
    for policy, count in candidates(model, batch_size, mesh, process_count=process_count,
                                    remat=remat, micro_batches=micro_batches):
        est = estimate(model, seq_len, max(1, per_device // count), state_shards, count,
                       platform=target.kind.platform, remat=policy)
        if est.peak <= target.usable_memory:
            return MemoryChoice(policy, count, max(1, per_device // count), est)
        if smallest is None or est.peak < smallest.peak:
            smallest = est
    need = f"{smallest.peak / GiB:.1f} GiB" if smallest else "a valid micro-batch count"
    raise ValueError(
        f"does not fit on {target.name} ({target.kind.name}): needs at least {need} per device "
        f"(batch {batch_size}, seq_len {seq_len}, {per_device} sequence(s) per device), "
        f"{target.usable_memory / GiB:.1f} GiB usable; use more devices, a smaller batch or "
        "seq_len, or an accelerator with more memory")
