"""Cross-entropy through the LM head without holding [batch, seq, vocab] logits in memory.

The logits of a GPT-Neo step are the largest activation by far (8 x 512 x 50257 float32 = 823 MB
at w512d8h8). ``lm_head_cross_entropy`` computes them a chunk of positions at a time and, when
differentiated, takes the gradients of the hidden states and of the output embedding in the same
pass (the "fused linear cross-entropy" of Liger-Kernel), so the backward pass neither stores nor
recomputes logits. FLOPs are unchanged: 2·N·D·V for the logits and 4·N·D·V for the two gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from neoscale.model.transformer import lm_head_logits

CHUNK_TOKENS = 4096  # positions x batch rows per chunk: [CHUNK_TOKENS, vocab] float32 logits live


def _seq_chunk(batch: int, seq: int, chunk_tokens: int) -> int:
    """The largest divisor of ``seq`` with batch * chunk <= chunk_tokens (at least 1)."""
    target = max(1, chunk_tokens // batch)
    return max(d for d in range(1, seq + 1) if seq % d == 0 and d <= target)


def _chunks(x: jax.Array, size: int) -> jax.Array:
    """[B, S, ...] -> [S // size, B, size, ...] (chunks along the sequence keep batch sharding)."""
    b, s = x.shape[:2]
    return x.reshape(b, s // size, size, *x.shape[2:]).swapaxes(0, 1)


def _chunk_loss(hidden, output_embedding, targets, weights):
    logits = lm_head_logits(hidden, output_embedding)  # float32 [B, c, V]
    lse = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return logits, lse, jnp.sum(weights * (lse - target_logit))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def lm_head_cross_entropy(hidden: jax.Array, output_embedding: jax.Array, targets: jax.Array,
                          weights: jax.Array, chunk_tokens: int = CHUNK_TOKENS) -> jax.Array:
    """sum(weights * cross-entropy) of the logits hidden @ output_embedding.T, float32 scalar.

    hidden [B, S, D] (final LayerNorm output), output_embedding [V, D], targets int [B, S],
    weights float32 [B, S] (1 for counted tokens, 0 for padding).
    """
    size = _seq_chunk(*targets.shape, chunk_tokens)

    def body(total, chunk):
        h, t, w = chunk
        return total + _chunk_loss(h, output_embedding, t, w)[2], None

    xs = (_chunks(hidden, size), _chunks(targets, size), _chunks(weights, size))
    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), xs)
    return total


def _forward(hidden, output_embedding, targets, weights, chunk_tokens):
    size = _seq_chunk(*targets.shape, chunk_tokens)

    def body(carry, chunk):
        total, d_embedding = carry
        h, t, w = chunk
        logits, lse, loss = _chunk_loss(h, output_embedding, t, w)
        d_logits = jnp.exp(logits - lse[..., None])  # softmax
        d_logits = d_logits - jax.nn.one_hot(t, logits.shape[-1], dtype=d_logits.dtype)
        d_logits = (d_logits * w[..., None]).astype(h.dtype)
        d_hidden = jnp.einsum("bcv,vd->bcd", d_logits, output_embedding)
        d_embedding = d_embedding + jnp.einsum("bcv,bcd->vd", d_logits, h,
                                               preferred_element_type=jnp.float32)
        return (total + loss, d_embedding), d_hidden

    xs = (_chunks(hidden, size), _chunks(targets, size), _chunks(weights, size))
    init = (jnp.zeros((), jnp.float32), jnp.zeros(output_embedding.shape, jnp.float32))
    (total, d_embedding), d_hidden = jax.lax.scan(body, init, xs)
    d_hidden = d_hidden.swapaxes(0, 1).reshape(hidden.shape)
    return total, (d_hidden, d_embedding.astype(output_embedding.dtype), targets, weights)


def _backward(chunk_tokens, residuals, g):
    del chunk_tokens
    d_hidden, d_embedding, targets, weights = residuals
    return (d_hidden * g.astype(d_hidden.dtype), d_embedding * g.astype(d_embedding.dtype),
            None, jnp.zeros_like(weights))


lm_head_cross_entropy.defvjp(_forward, _backward)
