"""The one configuration type for a GPT-Neo model: width, depth, sparsity and numerics."""

from __future__ import annotations

import dataclasses
import math

from neoscale.model.parametrization import PARAMETRIZATIONS

ATTENTION_PATTERNS = ("alternating", "global", "local")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16", "float16")
LOSS_IMPLS = ("fused", "plain")
ATTENTION_IMPLS = ("auto", "dense", "blocked", "splash", "cudnn")
MOE_DISPATCHES = ("auto", "ragged", "blocked")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a GPT-Neo model (dense when ``num_experts == 1`` and not ``routed``).

    Defaults are GPT-Neo 125M. ``attention_pattern="alternating"`` is GPT-Neo's: even layers
    global (causal), odd layers local with a window of ``window_size`` keys (query i sees keys
    i-window+1 ... i).
    """

    vocab_size: int = 50257
    # Embedding rows (and LM-head columns) are padded to a multiple of this, so the vocabulary
    # splits over a tensor axis and fills whole hardware tiles (GPT-Neo presets: 128; 50257 ->
    # 50304). Padded logits are masked out of the loss and sliced off the model's output; the
    # parameter counts and FLOPs are the unpadded model's (neoscale.accounting).
    vocab_pad_multiple: int = 1
    max_positions: int = 2048
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int | None = None  # None: 4 * d_model
    attention_pattern: str = "alternating"
    window_size: int = 256
    activation: str = "gelu_new"
    layer_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    attention_scale: str = "none"  # GPT-Neo: "none"; standard: "inverse_sqrt" (1/sqrt(d_head))
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    init_std: float = 0.02
    # "sp" (GPT-Neo as released), "mup" or "completep": per-kind init, Adam multipliers and forward
    # multipliers relative to a base width (and base depth for completep), defined in
    # neoscale.model.parametrization. base_head_dim None: base_d_model / num_heads.
    parametrization: str = "sp"
    base_d_model: int = 64
    base_num_layers: int = 2
    base_head_dim: int | None = None
    # μP's base hyper-parameters besides the rate (mup / completep only; they transfer like it):
    # the logits are x output_multiplier / m_N, hidden matrices start at hidden_init_std / sqrt(m_N)
    # (None: init_std). GPT-Neo's 0.02 is far below 1/sqrt(base width) for small bases, where
    # these need tuning (benchmarks/RESULTS.md, issue 21).
    output_multiplier: float = 1.0
    hidden_init_std: float | None = None
    # Sparsity: routed mixture-of-experts MLPs.
    num_experts: int = 1  # 1 = dense (unless routed)
    # True: the MLPs are routed MoE layers even with one expert (size grammar e1k1): the sanity arm
    # of a sparsity study, which must compute the dense model's function (tests/test_model.py).
    routed: bool = False
    top_k: int = 1
    moe_every: int = 1  # every n-th layer is MoE (layers n-1, 2n-1, ...)
    expert_mlp_dim: int | None = None  # None: mlp_dim (granularity 1)
    renormalize_top_k: bool = True  # Mixtral style; False = Switch style
    capacity_factor: float | None = None  # None = dropless dispatch
    # Dropless implementation (neoscale.model.moe): "ragged" (jax.lax.ragged_dot), "blocked" (a
    # scan over blocks of moe_block_rows rows of one expert each) or "auto" (ragged on TPU, blocked
    # elsewhere: the CPU lowers ragged_dot to a dense matmul over all experts).
    moe_dispatch: str = "auto"
    moe_block_rows: int = 64
    load_balancing_coef: float = 1e-2
    router_z_loss_coef: float = 1e-3
    # Compilation and kernels.
    remat: str = "none"
    # "fused": LM head + cross-entropy chunk by chunk, never holding [batch, seq, vocab] logits,
    # gradients taken in the same pass (neoscale.model.lm_head); "plain": full logits (reference).
    loss_impl: str = "fused"
    # Tokens per device per chunk of the fused loss: 1024 is as fast as 2048 on a CPU at vocab
    # 50257 and holds half the [chunk, vocab] buffers (benchmarks/RESULTS.md).
    loss_chunk_tokens: int = 1024
    # "auto": cuDNN on GPU for bf16/f16, splash on TPU, blocked elsewhere; "dense": masked S x S
    # scores (jax.nn.dot_product_attention, the reference); "blocked": only the window band
    # (local) or the lower block triangle (global); "splash": Pallas TPU kernel (neoscale.model.attention).
    attention_impl: str = "auto"
    # Layer groups up to this count run unrolled (no while loop: XLA keeps each layer's residuals
    # in place instead of copying them into stacked buffers; 1.3x faster steps for 2 groups on a
    # CPU, benchmarks/RESULTS.md); deeper stacks are scanned, so compile time stays flat in depth.
    # 0 = always scan.
    max_unrolled_groups: int = 4

    def __post_init__(self) -> None:
        validate(self)

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token embedding: vocab_size rounded up to ``vocab_pad_multiple``."""
        return -(-self.vocab_size // self.vocab_pad_multiple) * self.vocab_pad_multiple

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def ffn_dim(self) -> int:
        return self.mlp_dim if self.mlp_dim is not None else 4 * self.d_model

    @property
    def expert_dim(self) -> int:
        return self.expert_mlp_dim if self.expert_mlp_dim is not None else self.ffn_dim

    @property
    def granularity(self) -> float:
        """G = d_ff / d_expert (Krajewski et al. 2024)."""
        return self.ffn_dim / self.expert_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1 or self.routed

    def attention_kind(self, layer: int) -> str:
        """'global' or 'local' for layer index ``layer``."""
        if self.attention_pattern == "alternating":
            return "global" if layer % 2 == 0 else "local"
        return self.attention_pattern

    def is_moe_layer(self, layer: int) -> bool:
        return self.is_moe and layer % self.moe_every == self.moe_every - 1

    @property
    def layer_period(self) -> int:
        """Layers per scanned group: the period of the attention and MoE patterns."""
        attention_period = 2 if self.attention_pattern == "alternating" else 1
        moe_period = self.moe_every if self.is_moe else 1
        return math.lcm(attention_period, moe_period)

    @property
    def num_groups(self) -> int:
        return self.num_layers // self.layer_period

    @property
    def unroll_groups(self) -> bool:
        """Whether the layer groups run unrolled rather than in a scan (``max_unrolled_groups``)."""
        return self.num_groups <= self.max_unrolled_groups

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def validate(c: ModelConfig) -> None:
    """Raises ValueError with a one-line message for an inconsistent configuration."""

    def fail(message: str) -> None:
        raise ValueError(message)

    for name in ("vocab_size", "vocab_pad_multiple", "max_positions", "d_model", "num_layers", "num_heads",
                 "num_experts"):
        if getattr(c, name) < 1:
            fail(f"{name} must be a positive integer, got {getattr(c, name)}")
    if c.d_model % c.num_heads:
        fail(f"d_model={c.d_model} is not divisible by num_heads={c.num_heads}; "
             "choose heads that divide the width")
    if c.attention_pattern not in ATTENTION_PATTERNS:
        fail(f"attention_pattern={c.attention_pattern!r}; valid: {', '.join(ATTENTION_PATTERNS)}")
    if c.window_size < 1:
        fail(f"window_size must be >= 1 (GPT-Neo uses 256), got {c.window_size}")
    if c.activation not in ("gelu_new", "gelu", "relu", "silu"):
        fail(f"activation={c.activation!r}; valid: gelu_new, gelu, relu, silu")
    if c.attention_scale not in ("none", "inverse_sqrt"):
        fail(f"attention_scale={c.attention_scale!r}; valid: none (GPT-Neo), inverse_sqrt")
    if c.parametrization not in PARAMETRIZATIONS:
        fail(f"parametrization={c.parametrization!r}; valid: {', '.join(PARAMETRIZATIONS)}")
    for name in ("base_d_model", "base_num_layers"):
        if getattr(c, name) < 1:
            fail(f"{name} must be a positive integer, got {getattr(c, name)}")
    if c.parametrization == "sp" and (c.output_multiplier != 1.0 or c.hidden_init_std is not None):
        fail("output_multiplier and hidden_init_std are μP's base hyper-parameters: set them with "
             "parametrization=mup or completep (sp is GPT-Neo as released: use init_std)")
    if not c.output_multiplier > 0 or (c.hidden_init_std is not None and not c.hidden_init_std > 0):
        fail(f"output_multiplier ({c.output_multiplier}) and hidden_init_std ({c.hidden_init_std}) "
             "must be positive")
    if c.base_head_dim is not None and c.base_head_dim < 1:
        fail(f"base_head_dim must be positive (or None: base_d_model / num_heads), got {c.base_head_dim}")
    for name in ("dtype", "param_dtype"):
        if getattr(c, name) not in DTYPES:
            fail(f"{name}={getattr(c, name)!r}; valid: {', '.join(DTYPES)}")
    if c.remat not in REMAT_POLICIES:
        fail(f"remat={c.remat!r}; valid: {', '.join(REMAT_POLICIES)}")
    if c.loss_impl not in LOSS_IMPLS:
        fail(f"loss_impl={c.loss_impl!r}; valid: {', '.join(LOSS_IMPLS)}")
    if c.max_unrolled_groups < 0:
        fail(f"max_unrolled_groups must be >= 0 (0 = always scan), got {c.max_unrolled_groups}")
    if c.loss_chunk_tokens < 1:
        fail(f"loss_chunk_tokens must be positive, got {c.loss_chunk_tokens}")
    if c.attention_impl not in ATTENTION_IMPLS:
        fail(f"attention_impl={c.attention_impl!r}; valid: {', '.join(ATTENTION_IMPLS)}")
    if c.num_layers % c.layer_period:
        fail(f"num_layers={c.num_layers} must be a multiple of {c.layer_period} (the period of the "
             f"attention pattern {c.attention_pattern!r} and moe_every={c.moe_every})")
    if c.mlp_dim is not None and c.mlp_dim < 1:
        fail(f"mlp_dim must be positive, got {c.mlp_dim}")
    if c.is_moe:
        if not 1 <= c.top_k <= c.num_experts:
            fail(f"top_k={c.top_k} must be between 1 and num_experts={c.num_experts}")
        if c.moe_every < 1 or c.moe_every > c.num_layers:
            fail(f"moe_every={c.moe_every} must be between 1 and num_layers={c.num_layers}")
        if c.expert_mlp_dim is not None and c.expert_mlp_dim < 1:
            fail(f"expert_mlp_dim must be positive, got {c.expert_mlp_dim}")
        if c.moe_dispatch not in MOE_DISPATCHES:
            fail(f"moe_dispatch={c.moe_dispatch!r}; valid: {', '.join(MOE_DISPATCHES)}")
        if c.moe_block_rows < 1:
            fail(f"moe_block_rows must be positive, got {c.moe_block_rows}")
        if c.capacity_factor is not None and c.capacity_factor <= 0:
            fail(f"capacity_factor must be > 0 (or None for dropless), got {c.capacity_factor}")
