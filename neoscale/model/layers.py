"""GPT-Neo building blocks: LayerNorm, self-attention (global or local) and the dense MLP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from neoscale.model import parametrization
from neoscale.model.attention import attention, layout, resolve
from neoscale.model.config import ModelConfig
from neoscale.model.partitioning import constrain, param_init

PRE_ACTIVATION = "mlp_pre_activation"  # checkpoint name of the MLP hidden before its nonlinearity

ACTIVATIONS = {
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # GPT-Neo's tanh approximation
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def dtype_of(name: str) -> jnp.dtype:
    return jnp.dtype(name)


def normal_init(config: ModelConfig, kind: str = "hidden"):
    """N(0, std²) for a matrix of ``kind`` (neoscale.model.parametrization; SP: init_std for all)."""
    return nnx.initializers.normal(stddev=parametrization.init_std(config, kind))


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis, computed in float32, returned in the compute dtype."""

    def __init__(self, config: ModelConfig):
        d, pdtype = config.d_model, dtype_of(config.param_dtype)
        self.scale = nnx.Param(param_init(nnx.initializers.ones, ("norm",))(None, (d,), pdtype))
        self.bias = nnx.Param(param_init(nnx.initializers.zeros, ("norm",))(None, (d,), pdtype))
        self.eps = config.layer_norm_eps
        self.dtype = dtype_of(config.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [..., d_model] -> [..., d_model]."""
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


class Attention(nnx.Module):
    """Multi-head causal self-attention; ``kind`` 'global' or 'local' (GPT-Neo's sliding window).

    q, k, v have no bias; the output projection has one. Scores are *not* scaled by 1/sqrt(d_head)
    unless ``config.attention_scale == 'inverse_sqrt'``. Softmax runs in float32.
    """

    def __init__(self, config: ModelConfig, kind: str, *, rngs: nnx.Rngs):
        d, h, dh = config.d_model, config.num_heads, config.head_dim
        pdtype = dtype_of(config.param_dtype)
        init = normal_init(config)
        qkv_init = param_init(init, ("embed", "heads", "head_dim"))
        self.q_proj = nnx.Param(param_init(normal_init(config, "query"), ("embed", "heads", "head_dim"))(
            rngs.params(), (d, h, dh), pdtype))  # μP: zero (neoscale.model.parametrization)
        self.k_proj = nnx.Param(qkv_init(rngs.params(), (d, h, dh), pdtype))
        self.v_proj = nnx.Param(qkv_init(rngs.params(), (d, h, dh), pdtype))
        self.out_proj = nnx.Param(
            param_init(init, ("heads", "head_dim", "embed"))(rngs.params(), (h, dh, d), pdtype))
        self.out_bias = nnx.Param(param_init(nnx.initializers.zeros, ("embed",))(None, (d,), pdtype))
        self.kind = kind
        self.window_size = config.window_size
        self.scale = parametrization.attention_scale(config)  # GPT-Neo: 1.0
        self.dtype = dtype_of(config.dtype)
        self.impl = config.attention_impl  # neoscale.model.attention: auto = per device

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [batch, seq, d_model] -> [batch, seq, d_model]."""
        return self.attend(*self.project(x))

    def project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x [batch, seq, d_model] -> q, k, v in the kernel's layout (``attention.layout``:
        [batch, heads, seq, head_dim] for splash, else [batch, seq, heads, head_dim]), written
        there by the projection itself so no transposed copy is kept for the backward pass."""
        dt, heads_major = self.dtype, layout(resolve(self.impl, self.dtype)) == "bhsd"
        spec = "bsd,dhk->bhsk" if heads_major else "bsd,dhk->bshk"
        names = _head_names(heads_major)
        return tuple(constrain(jnp.einsum(spec, x, w[...].astype(dt)), names)
                     for w in (self.q_proj, self.k_proj, self.v_proj))

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        """q, k, v in the kernel's layout -> the output projection [batch, seq, d_model].

        The projection is recomputed in the backward pass (``jax.checkpoint``): it keeps the
        kernel's output (which the kernel keeps anyway), not a compute-dtype copy of its weights.
        """
        impl = resolve(self.impl, self.dtype)
        y = attention(q, k, v, kind=self.kind, window=self.window_size, scale=self.scale, impl=impl)
        heads_major = layout(impl) == "bhsd"
        y = constrain(y, _head_names(heads_major))

        def output(y: jax.Array) -> jax.Array:
            dt = self.dtype
            out = jnp.einsum("bhsk,hkd->bsd" if heads_major else "bshk,hkd->bsd", y,
                             self.out_proj[...].astype(dt))
            return out + self.out_bias[...].astype(dt)

        return jax.checkpoint(output)(y)


def _head_names(heads_major: bool) -> tuple[str | None, ...]:
    """Logical names of q, k, v and the attention output in either layout."""
    if heads_major:
        return ("act_batch", "act_heads", "act_length", None)
    return ("act_batch", "act_length", "act_heads", None)


class Mlp(nnx.Module):
    """The dense GPT-Neo MLP: d_model -> mlp_dim -> d_model with biases and gelu_new."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, f = config.d_model, config.ffn_dim
        pdtype = dtype_of(config.param_dtype)
        init = normal_init(config)
        zeros = nnx.initializers.zeros
        self.fc = nnx.Param(param_init(init, ("embed", "mlp"))(rngs.params(), (d, f), pdtype))
        self.fc_bias = nnx.Param(param_init(zeros, ("mlp",))(None, (f,), pdtype))
        self.proj = nnx.Param(param_init(init, ("mlp", "embed"))(rngs.params(), (f, d), pdtype))
        self.proj_bias = nnx.Param(param_init(zeros, ("embed",))(None, (d,), pdtype))
        self.activation = ACTIVATIONS[config.activation]
        self.dtype = dtype_of(config.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [batch, seq, d_model] -> [batch, seq, d_model]."""
        dt = self.dtype
        h = jnp.einsum("bsd,df->bsf", x, self.fc[...].astype(dt)) + self.fc_bias[...].astype(dt)
        h = checkpoint_name(h, PRE_ACTIVATION)  # kept for the backward pass (Block: the rest is recomputed)
        h = constrain(self.activation(h), ("act_batch", "act_length", "act_mlp"))
        return jnp.einsum("bsf,fd->bsd", h, self.proj[...].astype(dt)) + self.proj_bias[...].astype(dt)
