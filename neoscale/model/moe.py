"""Routed mixture-of-experts MLP: float32 router, top-k, dropless or capacity dispatch, aux losses.

Dropless dispatch comes in two implementations (``ModelConfig.moe_dispatch``), equal up to float
rounding:

* ``ragged``: rows sorted by expert, ``jax.lax.ragged_dot`` grouped matmuls. TPU compilers have a
  grouped-matmul kernel for it; the CPU backend lowers it to one dense matmul over all E experts
  with the other experts' rows masked out (E x the FLOPs: the layer's gradient takes 7.4x the
  dense MLP's at E=8, 35x at E=32, under load; benchmarks/RESULTS.md).
* ``blocked``: rows sorted by expert, each expert's group padded to whole blocks of
  ``moe_block_rows`` rows, then a scan over the blocks, each a [B, d] x [d, f] matmul with its own
  expert's weights. It computes T·k rows plus at most E·(B-1) padding rows, whatever E.
* ``auto``: ragged on TPU, blocked elsewhere (``resolve_dispatch``).

Both run on each device's own tokens (``per_batch_shard``: ``jax.shard_map`` over the batch axes),
with the expert weights gathered whole once per layer, as FSDP gathers the dense MLP's.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from neoscale.model.attention import attention_platform
from neoscale.model.config import ModelConfig
from neoscale.model.layers import ACTIVATIONS, PRE_ACTIVATION, dtype_of, normal_init
from neoscale.model.partitioning import batch_axes, batch_shards, constrain, param_init


class MoeMlp(nnx.Module):
    """E experts of width ``config.expert_dim``; each token goes to its top-k experts.

    Returns ``(y, aux)`` where aux holds float32 scalars ``load_balancing_loss`` (Switch/GShard,
    1.0 under perfect balance), ``router_z_loss`` (ST-MoE), ``dropped_fraction`` (of token-expert
    assignments; 0 when dropless) and ``expert_load`` [E] (fraction of assignments per expert).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, f, e = config.d_model, config.expert_dim, config.num_experts
        pdtype = dtype_of(config.param_dtype)
        init = normal_init(config)
        zeros = nnx.initializers.zeros
        # The experts draw the keys the dense Mlp's fc and proj draw, and the router a key folded
        # from the second (no extra draw): at one seed, e1k1's expert is the dense model's MLP.
        key_in, key_out = rngs.params(), rngs.params()
        self.w_in = nnx.Param(
            param_init(init, ("expert", "embed", "mlp"))(key_in, (e, d, f), pdtype))
        self.b_in = nnx.Param(param_init(zeros, ("expert", "mlp"))(None, (e, f), pdtype))
        self.w_out = nnx.Param(
            param_init(init, ("expert", "mlp", "embed"))(key_out, (e, f, d), pdtype))
        # The router stays float32 whatever the parameter dtype: routing decisions are brittle.
        self.router = nnx.Param(param_init(normal_init(config, "router"), ("embed", None))(
            jax.random.fold_in(key_out, 1), (d, e), jnp.float32))
        self.b_out = nnx.Param(param_init(zeros, ("expert", "embed"))(None, (e, d), pdtype))
        self.num_experts, self.top_k = e, config.top_k
        self.renormalize = config.renormalize_top_k
        self.capacity_factor = config.capacity_factor
        self.dispatch = config.moe_dispatch
        self.block_rows = config.moe_block_rows
        self.activation = ACTIVATIONS[config.activation]
        self.dtype = dtype_of(config.dtype)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """x: [batch, seq, d_model] -> ([batch, seq, d_model], aux)."""
        batch, seq, d = x.shape
        tokens = x.reshape(batch * seq, d)
        logits = tokens.astype(jnp.float32) @ self.router[...]  # [T, E]
        probs = jax.nn.softmax(logits, axis=-1)
        weights, experts = jax.lax.top_k(probs, self.top_k)  # [T, k]
        if self.renormalize:
            weights = weights / weights.sum(-1, keepdims=True)

        counts = jnp.zeros(self.num_experts, jnp.int32).at[experts.reshape(-1)].add(1)
        load = counts / experts.size  # f_e, sums to 1
        aux = {
            "load_balancing_loss": self.num_experts * jnp.sum(load * probs.mean(0)),
            # One expert: the router cannot change the output (probability 1), so its z-loss
            # would only add a gradient to the clipped norm; 0, so that e1k1 trains as dense.
            "router_z_loss": (jnp.mean(jnp.square(jax.nn.logsumexp(logits, axis=-1)))
                              if self.num_experts > 1 else jnp.zeros((), jnp.float32)),
            "expert_load": load,
        }
        if self.capacity_factor is None:
            dispatch = self._blocked if resolve_dispatch(self.dispatch) == "blocked" else self._dropless
            dt = self.dtype
            expert_params = tuple(p[...].astype(dt) for p in (self.w_in, self.b_in, self.w_out, self.b_out))
            y = per_batch_shard(dispatch, expert_params, tokens.astype(dt), experts, weights)
            aux["dropped_fraction"] = jnp.zeros((), jnp.float32)
        else:
            y, kept = self._with_capacity(tokens, experts, weights)
            aux["dropped_fraction"] = 1.0 - kept.mean(dtype=jnp.float32)
        return y.reshape(batch, seq, d), aux

    def _dropless(self, params, tokens, experts, weights) -> jax.Array:
        """Every assignment is computed: sort by expert, ragged_dot grouped matmuls, unsort, combine.

        params: (w_in [E, d, f], b_in [E, f], w_out [E, f, d], b_out [E, d]) in the compute dtype;
        tokens [T, d], experts and weights [T, k] -> [T, d].
        """
        w_in, b_in, w_out, b_out = params
        k = self.top_k
        flat_experts = experts.reshape(-1)  # [T*k], token-major
        counts = jnp.zeros(self.num_experts, jnp.int32).at[flat_experts].add(1)
        order = jnp.argsort(flat_experts, stable=True)
        sorted_experts = flat_experts[order]
        h = jax.lax.ragged_dot(tokens[order // k], w_in, counts)
        h = self.activation(checkpoint_name(h + b_in[sorted_experts], PRE_ACTIVATION))
        sorted_out = jax.lax.ragged_dot(h, w_out, counts) + b_out[sorted_experts]
        out = jnp.zeros_like(sorted_out).at[order].set(sorted_out)  # back to token-major
        out = out.reshape(-1, k, out.shape[-1])
        return jnp.einsum("tkd,tk->td", out, weights.astype(out.dtype))

    def _blocked(self, params, tokens, experts, weights) -> jax.Array:
        """Dropless, every assignment computed in blocks of B rows of one expert each.

        params as ``_dropless``'s; tokens [T, d], experts and weights [T, k] -> [T, d]. The
        assignments are laid out expert by expert, each expert's group starting on a block
        boundary, in a buffer of ``num_blocks`` = floor((T·k + E·(B-1)) / B) blocks (enough for any
        routing); the scan computes all of them (blocks past the last used one compute zeros:
        skipping them with ``lax.cond`` made the gradient 1.3-2.7x slower on a CPU).
        """
        w_in, b_in, w_out, b_out = params
        k, e, rows = self.top_k, self.num_experts, self.block_rows
        flat_experts = experts.reshape(-1)  # [A], A = T*k, token-major
        assignments = flat_experts.shape[0]
        num_blocks = (assignments + e * (rows - 1)) // rows
        # Row of each assignment in the padded layout: its expert's first row plus its rank among
        # that expert's assignments. Sort-free (a one-hot cumsum, [A, E] int32): a GPU compiler
        # needs the CUDA libraries to size a sort's scratch space, even ahead of time.
        onehot = jax.nn.one_hot(flat_experts, e, dtype=jnp.int32)
        counts = onehot.sum(0)
        group_blocks = -(-counts // rows)
        block_end = jnp.cumsum(group_blocks)
        padded_start = (block_end - group_blocks) * rows
        rank = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=-1)
        row = padded_start[flat_experts] + rank
        block_expert = jnp.minimum(
            jnp.sum(jnp.arange(num_blocks)[:, None] >= block_end[None, :], axis=1), e - 1)
        xs = jnp.zeros((num_blocks * rows, tokens.shape[-1]), tokens.dtype).at[row].set(
            tokens[jnp.arange(assignments) // k], unique_indices=True)

        # The backward pass keeps each block's hidden before its nonlinearity (as the dense Mlp
        # does) and slices the block's expert weights again: without the policy the scan saves
        # everything its body computes, [num_blocks, d, f] copies of the weights among it (4.5 GiB
        # each, four per layer group, for 125M-e8k1 on h100x8: 38.4 GiB compiled, not 16).
        @functools.partial(jax.checkpoint,
                           policy=jax.checkpoint_policies.save_only_these_names(PRE_ACTIVATION))
        def block(x, expert):  # [B, d] -> [B, d]
            h = x @ w_in[expert]
            h = self.activation(checkpoint_name(h + b_in[expert], PRE_ACTIVATION))
            return h @ w_out[expert] + b_out[expert]

        def step(carry, inputs):
            return carry, block(*inputs)

        _, ys = jax.lax.scan(step, None, (xs.reshape(num_blocks, rows, -1), block_expert))
        out = ys.reshape(num_blocks * rows, -1)[row].reshape(-1, k, tokens.shape[-1])
        return jnp.einsum("tkd,tk->td", out, weights.astype(tokens.dtype))

    def _with_capacity(self, tokens, experts, weights) -> tuple[jax.Array, jax.Array]:
        """GShard dispatch: each expert takes at most C = ceil(T·k/E·factor) assignments, first
        choices before second choices; overflowing assignments are dropped (residual only)."""
        num_tokens, k = experts.shape
        e = self.num_experts
        capacity = math.ceil(num_tokens * k / e * self.capacity_factor)
        choice_major = experts.T.reshape(-1)  # [k*T]: all first choices, then all second ...
        token_index = jnp.tile(jnp.arange(num_tokens), k)
        onehot = jax.nn.one_hot(choice_major, e, dtype=jnp.int32)
        position = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=-1)  # [k*T]
        kept = position < capacity
        slot = jnp.where(kept, position, capacity)  # out-of-range slot: dropped by the scatter
        dt = self.dtype
        buffer = jnp.zeros((e, capacity, tokens.shape[-1]), dt)
        buffer = buffer.at[choice_major, slot].set(tokens.astype(dt)[token_index], mode="drop")
        buffer = constrain(buffer, ("act_expert", "act_capacity", "act_embed"))
        h = jnp.einsum("ecd,edf->ecf", buffer, self.w_in[...].astype(dt))
        h = self.activation(checkpoint_name(h + self.b_in[...].astype(dt)[:, None, :], PRE_ACTIVATION))
        h = constrain(h, ("act_expert", "act_capacity", "act_mlp"))
        out = jnp.einsum("ecf,efd->ecd", h, self.w_out[...].astype(dt))
        out = out + self.b_out[...].astype(dt)[:, None, :]
        gathered = out[choice_major, jnp.minimum(slot, capacity - 1)]  # [k*T, d]
        gathered = gathered * kept[:, None].astype(dt)
        combine = weights.T.reshape(-1).astype(dt)[:, None]
        y = jnp.zeros((num_tokens, tokens.shape[-1]), dt).at[token_index].add(gathered * combine)
        return y, kept


def per_batch_shard(dispatch, params, tokens: jax.Array, experts: jax.Array,
                    weights: jax.Array) -> jax.Array:
    """Runs a dropless ``dispatch(params, tokens, experts, weights)`` on each device's own tokens.

    Dropless routing is per token, so grouping changes no result. Under a mesh whose rules split
    the batch, ``jax.shard_map`` over the batch axes gives every device its own tokens' routing,
    sort or layout and grouped matmuls, with the expert weights whole on every device (the FSDP
    all-gather the dense MLP does too); the weights' gradient is summed over the batch axes once per
    layer. Without the map, the compiler partitions the sort or the block scan over devices and
    moves the rows between them every block: 237 GB of all-to-all per step for 125M-e8k1 on h100x8
    (benchmarks/RESULTS.md). tokens [T, d], experts and weights [T, k] -> [T, d].
    """
    axes = batch_axes()
    if not axes or tokens.shape[0] % batch_shards():
        return dispatch(params, tokens, experts, weights)
    rows = jax.sharding.PartitionSpec(axes, None)
    whole = jax.sharding.PartitionSpec()
    local = jax.shard_map(dispatch, in_specs=((whole,) * len(params), rows, rows, rows),
                          out_specs=rows, axis_names=set(axes), check_vma=False)
    return local(params, tokens, experts, weights)


def resolve_dispatch(dispatch: str, platform: str | None = None) -> str:
    """The dropless implementation ``dispatch`` stands for on ``platform`` (default: the mesh's,
    ``attention_platform``): 'auto' is ragged on TPU, blocked elsewhere."""
    if dispatch != "auto":
        return dispatch
    return "ragged" if (platform or attention_platform()) == "tpu" else "blocked"
