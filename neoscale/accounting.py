"""Parameter and FLOP accounting: the one source of truth used by training, the runner and fits.

Conventions (stated here once, printed by the tools that use them):

* Parameters are counted from the real model's parameter tree, abstractly (no memory allocated).
  ``embedding`` = token + position embeddings (the tied LM head is not counted again);
  ``non_embedding`` = everything else (blocks and the final LayerNorm); ``active`` = parameters one
  token touches: total minus the (E - k) unused experts of every MoE layer.
* Training FLOPs = 3 x forward (backward = 2 x forward, Kaplan et al. 2020). Two conventions
  (``CONVENTIONS``) for the forward pass, per token, multiply-add = 2 FLOPs:

  - ``"neoscale"`` (the default, used for every FLOP count a study records): every matmul, i.e. the
    q/k/v/output projections, the MLP (or the router and the k routed experts of an MoE layer) and
    the LM head (logits, as Porian et al. 2024 argue it must be), plus attention scores and the
    weighted sum of values over the *mean number of keys a query attends* (causal: (S+1)/2;
    GPT-Neo's local window w: w - w(w-1)/(2S)). Embedding lookups, LayerNorms, biases, softmax and
    nonlinearities are not counted.
  - ``"chinchilla"``: Hoffmann et al. 2022, Appendix F, term by term: the embedding as a matmul
    (2·V·d), q/k/v projections, scores and values over the *full context* (2·S·d_attn each: no
    causal mask, no local window), softmax (3·H·S), output projection, MLP, logits (2·d·V). For
    comparing with published compute. At 125M and S = 2048 the neoscale forward count is 32.5%
    below it, 16.4% below it without App. F's embedding term (tests/test_accounting.py). Chinchilla's
    models were dense: for MoE layers the router and the k routed experts are counted as in the
    neoscale convention.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from neoscale.model import GPTNeo, ModelConfig


@functools.lru_cache(maxsize=256)
def _param_shapes(config: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{path of names (e.g. ('groups', 'blocks', '0', 'mlp', 'w_in')): shape}, without allocating."""
    abstract = nnx.eval_shape(lambda: GPTNeo(config, rngs=nnx.Rngs(0)))
    flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    return {tuple(str(key) for key in path): tuple(variable.shape) for path, variable in flat}


EXPERT_PARAMS = ("w_in", "b_in", "w_out", "b_out")


def param_counts(config: ModelConfig) -> dict[str, int]:
    """Parameter counts from the model's parameter tree (abstract: a 2.7B count takes seconds).

    Returns a mapping with ``total``, ``embedding``, ``non_embedding``, ``active``, ``expert``
    (all routed-expert weights) and ``router``, all without the vocabulary padding
    (``ModelConfig.vocab_pad_multiple``), and ``stored``: the parameters as held, padding included.
    """
    sizes = {path: math.prod(shape) for path, shape in _param_shapes(config).items()}
    # Padding rows of the embedding (and columns of an untied head) are not the model's parameters.
    padding = (config.padded_vocab_size - config.vocab_size) * config.d_model
    stored = sum(sizes.values())
    total = stored - padding * (1 if config.tie_embeddings else 2)
    embedding = sum(n for path, n in sizes.items() if path[-1] in ("wte", "wpe")) - padding
    expert = sum(n for path, n in sizes.items() if path[-1] in EXPERT_PARAMS)
    router = sum(n for path, n in sizes.items() if path[-1] == "router")
    unused_fraction = 1 - config.top_k / config.num_experts
    active = total - round(expert * unused_fraction)
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding,
            "active": active, "expert": expert, "router": router, "stored": stored}


def mean_keys_per_query(kind: str, seq_len: int, window: int) -> float:
    """Mean number of keys a query attends: global (S+1)/2; local w - w(w-1)/(2S) for w <= S."""
    if kind == "global" or window >= seq_len:
        return (seq_len + 1) / 2
    return window - window * (window - 1) / (2 * seq_len)


CONVENTIONS = {
    "neoscale": "training = 3 x forward; every matmul incl. the LM head (logits); attention scores "
                "and values over the mean keys per query (causal, local window); no embedding term",
    "chinchilla": "Hoffmann et al. 2022 App. F: training = 3 x forward; embedding and logits "
                  "matmuls, attention over the full context, softmax 3·H·S",
}


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown FLOP convention {convention!r}: use one of {sorted(CONVENTIONS)}")


def _mlp_flops(config: ModelConfig, layer: int) -> float:
    """Forward FLOPs per token of one layer's MLP (an MoE layer: router and k routed experts)."""
    d = config.d_model
    if config.is_moe_layer(layer):
        return 2.0 * d * config.num_experts + config.top_k * 2.0 * 2 * d * config.expert_dim
    return 2.0 * 2 * d * config.ffn_dim


def forward_flops_per_token(config: ModelConfig, seq_len: int, convention: str = "neoscale") -> float:
    """Forward FLOPs per token (multiply-add = 2 FLOPs) under ``convention`` (module docstring)."""
    _check_convention(convention)
    d, d_attn = config.d_model, config.d_model
    flops = 2.0 * d * config.vocab_size  # logits
    if convention == "chinchilla":
        flops += 2.0 * config.vocab_size * d  # the embedding, counted as a matmul
    for layer in range(config.num_layers):
        flops += 2.0 * 4 * d * d_attn  # q, k, v and output projections
        if convention == "chinchilla":
            flops += 2 * 2.0 * seq_len * d_attn + 3.0 * config.num_heads * seq_len  # full context
        else:
            keys = mean_keys_per_query(config.attention_kind(layer), seq_len, config.window_size)
            flops += 4.0 * d_attn * keys  # scores q.k and the weighted sum of values
        flops += _mlp_flops(config, layer)
    return flops


def train_flops_per_token(config: ModelConfig, seq_len: int, convention: str = "neoscale") -> float:
    """Training (forward + backward) FLOPs per token = 3 x forward; see the module docstring."""
    return 3.0 * forward_flops_per_token(config, seq_len, convention)


def train_flops_6nd(config: ModelConfig, tokens: float) -> float:
    """The Kaplan/Chinchilla approximation C = 6 N D with N = active parameters (incl. embeddings)."""
    return 6.0 * param_counts(config)["active"] * tokens


def device_peak_flops(device: jax.Device | str, dtype: str = "bfloat16") -> float | None:
    """Peak FLOP/s of one device for ``dtype`` matmuls, or None when unknown (e.g. a CPU).

    The datasheet table is ``neoscale.hardware.DEVICE_KINDS`` (dense bf16). TPUs run float32
    matmuls through bf16 passes (same peak); NVIDIA GPUs run float32 as TF32 at half the peak.
    """
    from neoscale import hardware

    kind = hardware.kind_of_device(device if isinstance(device, str) else device.device_kind)
    if kind is None:
        return None
    if dtype == "float32" and not kind.name.startswith("TPU"):
        return kind.peak_flops / 2
    return kind.peak_flops


def bytes_in_memory(aval, platform: str | None) -> int:
    """Bytes of an array as the device lays it out: on TPU the two minor dimensions are padded
    to whole (8 x 128) tiles of 32-bit words (16 rows for 16-bit types), so a heads-major
    [B, H, S, 64] tensor takes twice its size; elsewhere its size."""
    shape, width = list(aval.shape), aval.dtype.itemsize
    if platform == "tpu" and shape:
        shape[-1] = math.ceil(shape[-1] / 128) * 128
        if len(shape) > 1:
            rows = 8 * max(1, 4 // width)
            shape[-2] = math.ceil(shape[-2] / rows) * rows
    return math.prod(shape) * width


def saved_residual_bytes(config: ModelConfig, seq_len: int, remat: str | None = None,
                         platform: str | None = None, *, laid_out: bool = False) -> dict[str, float]:
    """Bytes the backward pass keeps per layer, from the model's own jaxpr on abstract shapes.

    Traces the VJP of one layer group (``jax.ad_checkpoint``'s saved residuals; no device, no
    compilation) at one and two sequences of ``seq_len`` tokens and returns
    ``per_token_layer``: bytes per token per layer that grow with the batch (the activations a
    scanned stack keeps for every layer, plus the group's input that the scan carries), and
    ``per_layer``: bytes per layer that do not (e.g. compute-dtype copies of the weights).
    ``remat`` (default ``config.remat``) is applied as ``GPTNeo`` applies it; ``platform``
    ('tpu', 'gpu', 'cpu'; default: the current mesh's, ``attention.attention_platform``) picks the
    attention kernel that ``config.attention_impl='auto'`` stands for. Counts are for one device
    holding whole sequences and all heads (divide by the tensor-parallel degree where it splits).
    laid_out: count each array as the device lays it out (``bytes_in_memory``: TPU tiles), as the
    memory planner (``neoscale.runner.memory``) does; else its size.
    """
    from neoscale.model.attention import resolve
    from neoscale.model.moe import resolve_dispatch

    remat = config.remat if remat is None else remat
    impl = resolve(config.attention_impl, config.dtype, platform)
    # The dropless MoE dispatch 'auto' stands for on that platform (ragged on TPU, blocked elsewhere).
    config = config.replace(moe_dispatch=resolve_dispatch(config.moe_dispatch, platform))
    try:
        one, two = _saved_bytes(config.replace(attention_impl=impl), seq_len, remat,
                                platform if laid_out else None)
    except RuntimeError:  # "cuDNN is not detected"
        if impl != "cudnn":
            raise
        # cuDNN's fused attention keeps what splash keeps (q, k, v, output, log-sum-exp; measured
        # equal where cuDNN traces), and tracing it needs cuDNN on this host: count it as splash.
        one, two = _saved_bytes(config.replace(attention_impl="splash"), seq_len, remat,
                                platform if laid_out else None)
    return {"per_token_layer": (two - one) / seq_len / config.layer_period,
            "per_layer": (2 * one - two) / config.layer_period}


@functools.lru_cache(maxsize=256)
def _saved_bytes(config: ModelConfig, seq_len: int, remat: str, tiles: str | None) -> tuple[int, int]:
    """(bytes kept by one layer group's VJP at batch 1, at batch 2): its saved residuals less the
    weights (in memory anyway), plus the group's input that the scan keeps; arrays laid out as on
    platform ``tiles`` (None: their size)."""
    from jax._src.ad_checkpoint import saved_residuals  # print_saved_residuals's list

    from neoscale.model.transformer import REMAT_POLICIES, LayerGroup

    graphdef, state = nnx.split(nnx.eval_shape(lambda: LayerGroup(config, rngs=nnx.Rngs(0))))

    def group(state, x):
        return nnx.merge(graphdef, state)(x)[0]

    if remat != "none":
        group = jax.checkpoint(group, policy=REMAT_POLICIES[remat])

    def total(batch: int) -> int:
        x = jax.ShapeDtypeStruct((batch, seq_len, config.d_model), jnp.dtype(config.dtype))
        kept = sum(bytes_in_memory(aval, tiles) for aval, source in saved_residuals(group, state, x)
                   if not source.startswith("from the argument"))  # weights: in memory anyway
        return kept + bytes_in_memory(x, tiles)  # the scan keeps every group's input too

    return total(1), total(2)


def model_state_bytes(config: ModelConfig) -> dict[str, int]:
    """Bytes of parameters, gradients and AdamW moments (two float32 moments per parameter)."""
    params = param_counts(config)["stored"]
    param_bytes = params * np.dtype(config.param_dtype).itemsize
    return {"params": param_bytes, "grads": param_bytes, "optimizer": params * 2 * 4,
            "total": 2 * param_bytes + params * 8}


def format_count(n: float) -> str:
    """1.3e9 -> '1.30B', 125e6 -> '125M'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{n:.3g}"


__all__ = ["param_counts", "train_flops_per_token", "forward_flops_per_token", "train_flops_6nd",
           "mean_keys_per_query", "device_peak_flops", "model_state_bytes", "saved_residual_bytes",
           "bytes_in_memory", "format_count",
           "CONVENTIONS"]
