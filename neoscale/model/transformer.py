"""GPT-Neo: embeddings, a scanned stack of layer groups, final LayerNorm and tied logits."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from neoscale.model import parametrization
from neoscale.model.config import ModelConfig
from neoscale.model.layers import PRE_ACTIVATION, Attention, LayerNorm, Mlp, dtype_of, normal_init
from neoscale.model.lm_head import cross_entropy_sum, head_logits
from neoscale.model.moe import MoeMlp
from neoscale.model.partitioning import constrain, param_init

MOE_SCALARS = ("load_balancing_loss", "router_z_loss", "dropped_fraction")
MOE_PER_LAYER = ("load_balancing_loss", "router_z_loss")  # the auxiliary losses, one per MoE layer

REMAT_POLICIES = {
    "full": None,  # save nothing, recompute everything in the backward pass
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nnx.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); each branch
    times ``parametrization.residual_multiplier`` (CompleteP; 1 otherwise)."""

    def __init__(self, config: ModelConfig, layer: int, *, rngs: nnx.Rngs):
        self.ln_1 = LayerNorm(config)
        self.attn = Attention(config, config.attention_kind(layer), rngs=rngs)
        self.ln_2 = LayerNorm(config)
        self.is_moe = config.is_moe_layer(layer)
        self.mlp = MoeMlp(config, rngs=rngs) if self.is_moe else Mlp(config, rngs=rngs)
        self.branch_multiplier = parametrization.residual_multiplier(config)
        # Unrolled groups: stop XLA from merging the recomputation back into the forward pass.
        self.prevent_cse = config.unroll_groups

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """x: [batch, seq, d_model] -> (same shape, MoE aux dict or {}).

        The backward pass keeps each LayerNorm's input, q, k, v, the attention kernel's output
        and log-sum-exp, and the MLP hidden before its nonlinearity; the LayerNorms, the GELU and
        the weights' compute-dtype copies are recomputed from them (``jax.checkpoint``), about a
        quarter of the bytes per token that keeping every intermediate took
        (``neoscale.accounting.saved_residual_bytes``).
        """
        recompute = functools.partial(jax.checkpoint, prevent_cse=self.prevent_cse)
        qkv = recompute(lambda x: self.attn.project(self.ln_1(x)))(x)
        x = x + self._branch(self.attn.attend(*qkv))
        keep = jax.checkpoint_policies.save_only_these_names(PRE_ACTIVATION)
        y, aux = recompute(self._mlp, policy=keep)(x)
        y = self._branch(y)
        x = constrain(x + y, ("act_batch", "act_length", "act_embed"))
        return x, aux

    def _mlp(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """ln_2, then the dense or mixture-of-experts MLP: (output, MoE aux dict or {})."""
        h = self.ln_2(x)
        return self.mlp(h) if self.is_moe else (self.mlp(h), {})

    def _branch(self, y: jax.Array) -> jax.Array:
        return y if self.branch_multiplier == 1.0 else y * jnp.asarray(self.branch_multiplier, y.dtype)


class LayerGroup(nnx.Module):
    """One period of the layer pattern (e.g. [global, local]): the unit the scan repeats."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.blocks = nnx.List([Block(config, i, rngs=rngs) for i in range(config.layer_period)])

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """x: [batch, seq, d_model] -> (same shape, aux with a leading MoE-layer axis)."""
        collected: list[dict[str, jax.Array]] = []
        for block in self.blocks:
            x, aux = block(x)
            if aux:
                collected.append(aux)
        stacked = {k: jnp.stack([a[k] for a in collected]) for k in collected[0]} if collected else {}
        return x, stacked


class GPTNeo(nnx.Module):
    """GPT-Neo language model, dense or mixture-of-experts.

    ``model(tokens)`` with int tokens [batch, seq] returns float32 logits [batch, seq, vocab] and an
    aux dict: ``load_balancing_loss``, ``router_z_loss``, ``dropped_fraction`` (float32 scalars,
    means over MoE layers, zero for dense) and, for MoE, ``expert_load`` [num_moe_layers, experts]
    and ``load_balancing_loss_per_layer``, ``router_z_loss_per_layer`` [num_moe_layers] (the
    objective adds each coefficient times the *sum* over layers, as Switch and ST-MoE do).
    ``model.hidden(tokens)`` stops before the LM head; ``model.cross_entropy_sum`` adds the head
    and the loss (fused or plain, ``config.loss_impl``).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        pdtype = dtype_of(config.param_dtype)
        init = normal_init(config, "embedding")
        vocab = config.padded_vocab_size  # rows past vocab_size: masked out of every logit
        self.wte = nnx.Param(param_init(init, ("vocab", "embed"))(
            rngs.params(), (vocab, config.d_model), pdtype))
        self.wpe = nnx.Param(param_init(init, ("positions", "embed"))(
            rngs.params(), (config.max_positions, config.d_model), pdtype))

        @nnx.split_rngs(splits=config.num_groups)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_groups(rngs: nnx.Rngs) -> LayerGroup:
            return LayerGroup(config, rngs=rngs)

        self.groups = make_groups(rngs)
        self.ln_f = LayerNorm(config)
        if not config.tie_embeddings:
            self.lm_head = nnx.Param(param_init(normal_init(config, "readout"), ("embed", "vocab"))(
                rngs.params(), (config.d_model, vocab), pdtype))

    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """tokens int [batch, seq] -> (float32 logits [batch, seq, vocab], aux)."""
        hidden, aux = self.hidden(tokens)
        logits = head_logits(hidden, self.output_embedding())
        return logits[..., :self.config.vocab_size], aux  # without the padding rows' logits

    def hidden(self, tokens: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """tokens int [batch, seq] -> (final LayerNorm output [batch, seq, d_model], aux).

        What the LM head reads: the fused loss (``neoscale.model.lm_head``) starts here.
        """
        dt = dtype_of(self.config.dtype)
        seq = tokens.shape[1]
        x = self.wte[...].astype(dt)[tokens] + self.wpe[...].astype(dt)[:seq]
        x = constrain(x, ("act_batch", "act_length", "act_embed"))
        x, moe_aux = self._apply_groups(x)
        return self.ln_f(x), _summarise_aux(moe_aux)

    def output_embedding(self) -> jax.Array:
        """The LM head as [padded vocab, d_model] in the compute dtype (the token embedding when tied),
        times the readout multiplier (μP: 1/m_N, parametrization.readout_multiplier; SP: none)."""
        dt = dtype_of(self.config.dtype)
        head = self.wte[...].astype(dt) if self.config.tie_embeddings else self.lm_head[...].astype(dt).T
        multiplier = parametrization.readout_multiplier(self.config)
        return head if multiplier == 1.0 else head * jnp.asarray(multiplier, dt)

    def cross_entropy_sum(self, tokens: jax.Array, targets: jax.Array,
                          weights: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(sum of weights * next-token cross-entropy, float32 scalar; aux) through the LM head
        chosen by ``config.loss_impl``. tokens, targets int [batch, seq]; weights float32 [batch, seq]."""
        hidden, aux = self.hidden(tokens)
        total = cross_entropy_sum(hidden, self.output_embedding(), targets, weights,
                                   self.config.loss_impl, self.config.loss_chunk_tokens,
                                   self.config.vocab_size)
        return total, aux

    def _apply_groups(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Applies the stacked layer groups: a scan (compile time flat in depth), unrolled when
        there are at most ``config.max_unrolled_groups`` of them (faster steps, same parameters)."""

        def apply_group(x: jax.Array, group: LayerGroup):
            return group(x)

        if self.config.remat != "none":
            apply_group = nnx.remat(apply_group, policy=REMAT_POLICIES[self.config.remat])
        scan = nnx.scan(apply_group, in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0),
                        unroll=self.config.unroll_groups,
                        transform_metadata={nnx.PARTITION_NAME: "layers"})
        return scan(x, self.groups)


def _summarise_aux(moe_aux: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """[groups, moe-per-group, ...] per-layer values -> means over MoE layers, per-layer losses and load."""
    if not moe_aux:
        return {name: jnp.zeros((), jnp.float32) for name in MOE_SCALARS}
    summary = {name: moe_aux[name].mean() for name in MOE_SCALARS}
    for name in MOE_PER_LAYER:
        summary[f"{name}_per_layer"] = moe_aux[name].reshape(-1)
    load = moe_aux["expert_load"]
    summary["expert_load"] = load.reshape(-1, load.shape[-1])
    return summary
