"""How each kind of parameter is initialised, stepped and multiplied: SP, μP and CompleteP.

``ModelConfig.parametrization`` picks one of

* ``"sp"``: GPT-Neo as released (every matrix N(0, init_std²), one Adam learning rate, no
  multipliers). Nothing below changes the model, its optimizer or its checkpoints.
* ``"mup"``: the maximal-update parametrization for Adam (Yang et al. 2022, "Tensor Programs V"),
  relative to a base width: tune the learning rate at ``base_d_model``, reuse it at any width.
* ``"completep"``: μP plus depth-μP with α = 1 (Dey et al. 2025, "Don't be lazy: CompleteP
  enables compute-efficient deep transformers"), relative to a base width and a base depth: the
  rate also transfers across depth.

With m_N = d_model / base_d_model and m_L = num_layers / base_num_layers (both 1 at the base
size, where μP and CompleteP *are* SP except for the zero-initialised query), per kind
(``param_kind``):

==============  =====================  ======================  =======================
kind            init std               Adam LR multiplier      Adam ε multiplier
==============  =====================  ======================  =======================
embedding       init_std               1                       1
hidden          σ_base / √m_N          1 / m_N  (· m_L^(α-1))  1 / m_N  (· m_L^-α)
router          init_std / m_N         1 / m_N                 1 / m_N
block_vector    ones / zeros           1  (· m_L^(α-1))        1  (· m_L^-α)
vector          ones / zeros           1                       1
readout         init_std               1                       1
==============  =====================  ======================  =======================

(the factors in brackets are CompleteP's; α = ``COMPLETEP_ALPHA`` = 1 makes the LR factors 1)
and three forward multipliers: the output logits × α_out/m_N (α_out = ``output_multiplier``, 1 by
default; with ``hidden_init_std`` σ_base, hidden matrices start at σ_base/√m_N: μP's base
hyper-parameters, tuned at the base like the rate), attention logits × base_head_dim /
head_dim, and under CompleteP every residual branch × m_L^-α (``x + m_L^-α · attn(ln(x))``).

GPT-Neo's quirks, decided here:

* **Tied input and output embeddings.** ``wte`` is both the input embedding and the readout. μP's
  "shared readout" (mup's ``MuSharedReadout``): the weight keeps the embedding's rules (init
  ``init_std``, LR multiplier 1) and the *logits* are multiplied by 1/m_N. Both roles are then
  μP-correct: the readout's init term (wte·h ~ √d) vanishes like m_N^-1/2 and its update term
  (Adam moves every coordinate by ~lr, correlated with h: ~lr·d) is Θ(1) after the 1/m_N. An
  untied ``lm_head`` ("readout") gets the same rules.
* **No 1/√d attention scaling.** GPT-Neo's scores are q·k unscaled (``attention_scale="none"``).
  After training q and k are correlated, so q·k grows like head_dim, and μP wants 1/head_dim.
  We multiply the logits by base_head_dim / head_dim on top of the configured scale, which is
  exactly GPT-Neo's scale at the base size (so a μP model tuned at its base *is* the SP model
  there) and 1/head_dim scaling beyond it. ``base_head_dim`` defaults to base_d_model / num_heads
  (a ladder that keeps its head count); a ladder that widens by adding heads of a fixed size sets
  ``base_head_dim = head_dim`` and the multiplier is 1 (head count is width-like and needs
  nothing: each head's dot product has a fixed length).
* **The query projection starts at zero** under μP and CompleteP (Yang et al. 2022, Appendix
  D.2; init kind ``query``, a hidden matrix for the optimizer): attention logits are exactly 0 at
  init at every width, so after training they are the Θ(1) update term, not a random init term
  that shrinks like head_dim^-1/2 under the 1/head_dim scale (the coordinate check's attention
  logits fall with width without it). Keys, values and output stay random.
* **LayerNorm gains and biases, and all biases** are vector-like: init unchanged (ones / zeros),
  LR multiplier 1 (their gradients are Θ(1) per coordinate, so Adam's Θ(1) step is right). Inside
  residual blocks they are CompleteP's "hidden biases and LN" (depth factors); the final
  LayerNorm ``ln_f`` and the position table are not in a block and get none.
* **Weight decay** stays decoupled and is *independent of the LR multiplier*: the step is
  ``-lr(t) · (μ_p · adam_p + λ · p)`` (``neoscale.training.optimizer``), so the per-step decay
  lr(t)·λ is the same at every width and depth. This is the "independent" weight decay of
  Wortsman et al. 2023 and CompleteP's rule (λ_hidden = λ_base · m_N with PyTorch's lr-coupled
  AdamW gives the same lr·λ). Which parameters decay is unchanged (matrices; not embeddings,
  norms or biases: ``weight_decay_mask``).
* **Adam ε** follows each kind's gradient scale (Dey et al. 2025, Table 1): a hidden matrix's
  gradient shrinks like 1/m_N (and like m_L^-α under CompleteP's branch multiplier), so a fixed
  ε would come to dominate √v at large sizes and silently turn Adam into SGD.
* **MoE.** Expert matrices (``w_in``, ``w_out``) are hidden matrices: their fan-in and fan-out
  are d_model and expert_dim, which grow with width. The expert *count* is not treated as a
  width-like dimension: a token's output is a router-weighted average of top_k experts (weights
  summing to 1), so neither its forward scale nor an expert's update scale depends on E, and a
  ladder that grows E needs no multiplier for it. The router (d_model → E, a fixed fan-out) is
  an output layer in μP's sense: init std init_std / m_N (variance ∝ 1/fan_in²) and LR 1/m_N, so
  router logits start near 0 (uniform routing) and move by Θ(1) at every width.

Everything here is a pure function of the ``ModelConfig`` (and a parameter's name and logical
axes): the layers ask it for their init scale and multipliers, the optimizer for the per-parameter
Adam multipliers (``adam_multipliers``).
"""

from __future__ import annotations

from collections.abc import Mapping

from jax.sharding import PartitionSpec

PARAMETRIZATIONS = ("sp", "mup", "completep")
COMPLETEP_ALPHA = 1.0  # Dey et al. 2025: α = 1, the residual branch × (base_depth / depth)
KINDS = ("embedding", "hidden", "router", "block_vector", "vector", "readout")
EMBEDDING_AXES = ("vocab", "positions")  # first axis of a lookup table
STACKING_AXES = ("layers", "expert")  # axes that stack copies of one matrix or vector


def width_mult(config) -> float:
    """m_N = d_model / base_d_model (1.0 under SP)."""
    return 1.0 if config.parametrization == "sp" else config.d_model / config.base_d_model


def depth_mult(config) -> float:
    """m_L = num_layers / base_num_layers (CompleteP only; 1.0 otherwise)."""
    if config.parametrization != "completep":
        return 1.0
    return config.num_layers / config.base_num_layers


def base_head_dim(config) -> float:
    """The head dimension at the base width (``config.base_head_dim``, default base_d_model / heads)."""
    if config.base_head_dim is not None:
        return float(config.base_head_dim)
    return config.base_d_model / config.num_heads


def init_std(config, kind: str) -> float:
    """Standard deviation of a matrix of ``kind`` at initialisation (vectors: ones / zeros)."""
    if kind == "hidden":
        base = config.init_std if config.hidden_init_std is None else config.hidden_init_std
        return base / width_mult(config) ** 0.5
    if kind == "router":
        return config.init_std / width_mult(config)
    if kind in ("embedding", "readout"):
        return config.init_std
    if kind == "query":  # the query projection (a hidden matrix for the optimizer)
        return config.init_std if config.parametrization == "sp" else 0.0
    raise ValueError(f"parameter kind {kind!r} has no random init; matrices: embedding, hidden, "
                     "router, readout")


def attention_scale(config) -> float:
    """The factor on q·k: the configured one (GPT-Neo 1, or 1/√head_dim) times base_head_dim /
    head_dim under μP and CompleteP (μP's 1/head_dim beyond the base)."""
    scale = 1.0 if config.attention_scale == "none" else config.head_dim ** -0.5
    if config.parametrization == "sp":
        return scale
    return scale * base_head_dim(config) / config.head_dim


def readout_multiplier(config) -> float:
    """The factor on the output logits: output_multiplier / m_N (μP's shared readout with its base
    output multiplier α_out; 1 under SP)."""
    return config.output_multiplier / width_mult(config)


def residual_multiplier(config) -> float:
    """The factor on every residual branch (attention and MLP): m_L^-α under CompleteP, else 1."""
    return depth_mult(config) ** -COMPLETEP_ALPHA


def param_kind(name: str, spec: PartitionSpec | tuple) -> str:
    """The kind of the parameter called ``name`` with logical axes ``spec`` (see the table).

    From the logical axes, as ``weight_decay_mask`` does: after dropping the stacking axes a
    vector is a bias or norm (``block_vector`` when stacked over ``layers``, i.e. inside a
    residual block); a matrix starting with ``vocab`` / ``positions`` is an embedding table, one
    ending with ``vocab`` an untied readout, the MoE ``router`` is named; the rest are hidden.
    """
    axes = tuple(spec or ())
    core = [axis for axis in axes if axis not in STACKING_AXES]
    if len(core) < 2:
        return "block_vector" if "layers" in axes else "vector"
    if core[0] in EMBEDDING_AXES:
        return "embedding"
    if core[-1] == "vocab":
        return "readout"
    if name.rsplit("/", 1)[-1] == "router":
        return "router"
    return "hidden"


def adam_rule(config, kind: str) -> tuple[float, float]:
    """(learning-rate multiplier, ε multiplier) of a parameter of ``kind``."""
    m_n, m_l, alpha = width_mult(config), depth_mult(config), COMPLETEP_ALPHA
    if kind == "hidden":
        return m_l ** (alpha - 1) / m_n, 1.0 / (m_n * m_l ** alpha)
    if kind == "router":
        return 1.0 / m_n, 1.0 / m_n
    if kind == "block_vector":
        return m_l ** (alpha - 1), m_l ** -alpha
    if kind in ("embedding", "vector", "readout"):
        return 1.0, 1.0
    raise ValueError(f"unknown parameter kind {kind!r}; valid: {', '.join(KINDS)}")


def adam_multipliers(config, logical_specs: Mapping[str, PartitionSpec]
                     ) -> dict[str, tuple[float, float]] | None:
    """{parameter name: (LR multiplier, ε multiplier)} for ``make_optimizer``; None under SP
    (today's single-rate AdamW, unchanged)."""
    if config.parametrization == "sp":
        return None
    return {name: adam_rule(config, param_kind(name, spec)) for name, spec in logical_specs.items()}
