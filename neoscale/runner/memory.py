"""Device memory of a training step, and the micro-batch / rematerialisation choice that fits.

The estimate (bytes per device) adds up, for a micro-batch of ``b`` sequences of ``s`` tokens:

* **state**: float32 parameters, gradients and two AdamW moments (16 bytes per parameter) sharded
  over the mesh's fsdp x tensor x expert axes; a float32 gradient accumulator when
  ``micro_batches > 1``; one layer group's weights gathered in the compute dtype (FSDP).
* **activations** saved for the backward pass, per token and layer, at the compute dtype's width
  ``a`` bytes (counted from this model's blocks; cf. Korthikanti et al. 2022):
  ``none`` keeps ~16·d (layer norms, q/k/v, attention output, residuals, the 4d MLP hidden before
  and after the GELU); ``dots`` keeps matmul outputs (~11·d); ``dots_no_batch`` only the weight
  matmuls (~10·d); ``full`` only each layer group's input (d). Attention keeps a float32
  log-sum-exp per head: splash (TPU) and cuDNN (GPU), and the blocked XLA path, whose backward
  pass recomputes its scores (``neoscale.model.attention.masked_attention``); the dense XLA path
  keeps its float32 scores and probabilities, heads x keys per token (the whole sequence).
* **working set**: one layer group's full activations, recomputed in the backward pass, with the
  XLA paths' scores of one layer (keys: the whole sequence for dense layers, half of it plus half
  a block for blocked causal ones, two windows for banded local layers).
* **loss**: float32 logits and their gradient for the tokens the loss holds at once: the whole
  micro-batch for the plain loss, one chunk (``model.loss_chunk_tokens``) for the fused one.

Activations and the working set are multiplied by ``XLA_OVERHEAD`` for XLA's temporaries. The
planner's choice (``fit``): among the remat policies and micro-batch counts whose estimate fits the
device's usable memory, the one with the lowest relative step time ``REMAT_COST x (1 +
MICRO_BATCH_COST x log2(micro_batches))``. ``neoscale.bench`` prints the estimate beside the
allocator's peak on a real device.
"""

from __future__ import annotations

import dataclasses
import math

from neoscale import accounting
from neoscale.hardware import GiB, Target
from neoscale.model import ModelConfig
from neoscale.model.attention import GLOBAL_BLOCK

# Relative step time of each rematerialisation policy (full = one extra forward pass: 4/3).
REMAT_COST = {"none": 1.0, "dots": 1.08, "dots_no_batch": 1.15, "full": 4 / 3}
SAVED_PER_TOKEN_LAYER = {"none": 16, "dots": 11, "dots_no_batch": 10, "full": 0}  # x d_model
MICRO_BATCH_COST = 0.03  # per doubling of the micro-batch count (accumulation, smaller matmuls)
XLA_OVERHEAD = 1.2


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


def estimate(model: ModelConfig, seq_len: int, micro_batch_per_device: int, state_shards: int,
             micro_batches: int, *, flash_attention: bool,
             remat: str | None = None) -> MemoryEstimate:
    """The estimate described in the module docstring, for ``model.remat`` (or ``remat``) and the
    model's ``loss_impl`` and ``attention_impl``."""
    remat = model.remat if remat is None else remat
    a = 4 if model.dtype == "float32" else 2
    d, tokens = model.d_model, seq_len * micro_batch_per_device
    params = accounting.param_counts(model)["total"]
    state = accounting.model_state_bytes(model)["total"] / state_shards
    if micro_batches > 1:
        state += 4 * params / state_shards
    group_params = (params - accounting.param_counts(model)["embedding"]) / model.num_groups
    state += 2 * a * group_params

    def attention_bytes(layer: int, *, kept: bool) -> float:
        """Per token: what one layer's attention keeps for the backward pass (``kept``), or holds
        while it runs (its scores, on the XLA paths)."""
        if flash_attention or (kept and model.attention_impl != "dense"):
            return 4 * model.num_heads  # the log-sum-exp
        return (4 + a) * model.num_heads * _attention_keys(model, layer, seq_len)

    def layer_bytes(layer: int, policy: str, *, kept: bool = True) -> float:  # per token
        saved = SAVED_PER_TOKEN_LAYER[policy] * d * a
        if policy in ("none", "dots"):
            saved += attention_bytes(layer, kept=kept)
        return saved

    layers = range(model.num_layers)
    saved = sum(layer_bytes(i, remat) for i in layers) + model.num_groups * d * a  # scan carries
    working = sum(layer_bytes(i, "none", kept=False) for i in range(model.layer_period))
    fused = model.loss_impl == "fused"
    loss_tokens = min(tokens, model.loss_chunk_tokens) if fused else tokens
    loss = loss_tokens * model.vocab_size * (8 + a)
    eval_bytes = XLA_OVERHEAD * tokens * working / 2 + loss_tokens * model.vocab_size * (4 + a)
    return MemoryEstimate(state=int(state), activations=int(XLA_OVERHEAD * tokens * saved),
                          working_set=int(XLA_OVERHEAD * tokens * working), loss=int(loss),
                          eval=int(eval_bytes))


def relative_cost(remat: str, micro_batches: int) -> float:
    return REMAT_COST[remat] * (1 + MICRO_BATCH_COST * math.log2(micro_batches))


def fit(model: ModelConfig, seq_len: int, batch_size: int, mesh: dict[str, int], target: Target,
        *, process_count: int = 1, remat: str | None = None,
        micro_batches: int | None = None) -> MemoryChoice:
    """The cheapest (remat, micro_batches) whose estimate fits ``target``; fixed ones are kept.

    ``batch_size`` is global (sequences); a micro-batch count must divide the per-device batch, and
    the global batch must be a multiple of lcm(batch shards x micro_batches, process_count).
    Raises a one-line ValueError when nothing fits.
    """
    batch_shards = mesh["data"] * mesh["fsdp"]
    state_shards = mesh["fsdp"] * mesh["tensor"] * mesh["expert"]
    per_device = max(1, batch_size // batch_shards)
    policies = [remat] if remat else list(REMAT_COST)
    counts = [micro_batches] if micro_batches else [m for m in range(1, per_device + 1)
                                                     if per_device % m == 0]
    candidates = []
    smallest = None
    for policy in policies:
        for count in counts:
            if batch_size % math.lcm(batch_shards * count, process_count):
                continue
            est = estimate(model, seq_len, max(1, per_device // count), state_shards, count,
                           flash_attention=target.kind.flash_attention, remat=policy)
            if smallest is None or est.peak < smallest.peak:
                smallest = est
            if est.peak <= target.usable_memory:
                candidates.append((relative_cost(policy, count), count, policy, est))
    if not candidates:
        need = f"{smallest.peak / GiB:.1f} GiB" if smallest else "a valid micro-batch count"
        raise ValueError(
            f"does not fit on {target.name} ({target.kind.name}): needs at least {need} per device "
            f"(batch {batch_size}, seq_len {seq_len}, {per_device} sequence(s) per device), "
            f"{target.usable_memory / GiB:.1f} GiB usable; use more devices, a smaller batch or "
            "seq_len, or an accelerator with more memory")
    _, count, policy, est = min(candidates, key=lambda c: (c[0], c[1]))
    return MemoryChoice(policy, count, max(1, per_device // count), est)
