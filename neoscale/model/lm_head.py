"""The LM head and its cross-entropy: plain (whole logits, the reference) or fused (chunked).

The logits are a GPT-Neo step's largest activation by far: [8, 512, 50257] float32 = 823 MB at
w512d8h8, and the plain loss holds several buffers of that size (logits, softmax, its gradient).
``fused_cross_entropy`` computes them a chunk of positions at a time and, in the same pass, the
gradients with respect to the hidden states and the output embedding (softmax - onehot, then two
matmuls; the "fused linear cross-entropy" of Liger-Kernel). The backward pass only scales the saved
gradients by the cotangent: no logit is stored or recomputed, and the FLOPs are the plain loss's
(2·N·D·V forward, 4·N·D·V for the two gradients). Accumulation is float32 whatever the compute dtype.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from neoscale.model.partitioning import batch_shards, constrain


def head_logits(hidden: jax.Array, embedding: jax.Array) -> jax.Array:
    """hidden [..., D] x embedding [V, D] -> float32 logits [..., V] (tied head: embedding = wte)."""
    out = jnp.einsum("...d,vd->...v", hidden, embedding, preferred_element_type=jnp.float32)
    return constrain(out, _names(out.ndim))


def _names(ndim: int) -> tuple[str | None, ...]:
    """Logical names of a [batch-like, ..., vocab] array: rows over the batch axes, vocab over tensor."""
    return ("act_batch",) + (None,) * (ndim - 2) + ("act_vocab",)


def plain_cross_entropy(hidden: jax.Array, embedding: jax.Array, targets: jax.Array,
                        weights: jax.Array) -> jax.Array:
    """sum(weights * cross-entropy) through whole logits, float32 scalar (the reference).

    hidden [B, S, D], embedding [V, D], targets int [B, S], weights float32 [B, S].
    """
    z = head_logits(hidden, embedding)
    per_token = jax.nn.logsumexp(z, axis=-1) - _target_logit(z, targets)
    return jnp.sum(per_token * weights)


def _target_logit(z: jax.Array, targets: jax.Array) -> jax.Array:
    """z[..., targets] as a fused compare-and-reduce (no gather: stays local under vocab sharding)."""
    vocab = jax.lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1)
    return jnp.sum(jnp.where(vocab == targets[..., None], z, 0.0), axis=-1)


def chunk_length(batch: int, seq: int, chunk_tokens: int, shards: int = 1) -> int:
    """Positions per chunk: about ``chunk_tokens`` tokens per device (batch rows split ``shards`` ways)."""
    rows = max(1, batch // shards)
    return max(1, min(seq, chunk_tokens // rows))


def _chunked(hidden, targets, weights, length):
    """[B, S, ...] -> [n, B, length, ...] along the sequence (batch sharding kept), zero-padded.

    Padding positions have weight 0 (target 0), so they add nothing to the loss or gradients.
    """
    b, s = targets.shape
    n = math.ceil(s / length)
    pad = n * length - s

    def split(x):
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return x.reshape(b, n, length, *x.shape[2:]).swapaxes(0, 1)

    return split(hidden), split(targets), split(weights)


def _chunk_loss(h, embedding, t, w):
    """One chunk of rows h [T, D]: (float32 exp(logits - rowmax) [T, V], its row sums [T], sum
    of weighted cross-entropy).

    The row sums are a matrix-vector product with ones, and the target logit is h · embedding[t]
    ([T, D] work): on XLA's CPU backend both [T, V] reductions (sum, compare-and-sum) run on one
    thread at a fraction of the matmuls' speed (benchmarks/RESULTS.md); on TPU and GPU they cost
    the same either way.
    """
    z = head_logits(h, embedding)
    row_max = jax.lax.stop_gradient(jnp.max(z, axis=-1))
    p = jnp.exp(z - row_max[:, None])
    sums = jnp.einsum("tv,v->t", p, jnp.ones(z.shape[-1], p.dtype))
    target = jnp.einsum("td,td->t", h, embedding[t], preferred_element_type=jnp.float32)
    return p, sums, jnp.sum(w * (row_max + jnp.log(sums) - target))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def fused_cross_entropy(hidden: jax.Array, embedding: jax.Array, targets: jax.Array,
                        weights: jax.Array, length: int) -> jax.Array:
    """sum(weights * cross-entropy) of hidden @ embedding.T, ``length`` positions per chunk.

    hidden [B, S, D] (final LayerNorm output, compute dtype), embedding [V, D], targets int
    [B, S], weights float32 [B, S]. Float32 scalar; equals ``plain_cross_entropy``.
    """
    def body(total, chunk):
        h, t, w = (x.reshape(-1, *x.shape[2:]) for x in chunk)
        return total + _chunk_loss(h, embedding, t, w)[2], None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), _chunked(hidden, targets, weights, length))
    return total


def _fused_forward(hidden, embedding, targets, weights, length):
    """The loss and, chunk by chunk, its gradients w.r.t. hidden and embedding (float32 sums)."""
    b, s, d = hidden.shape
    dt = hidden.dtype

    def body(carry, chunk):
        total, d_embedding = carry
        # [B, c, ...] -> [B*c, ...] rows (batch-major, so the batch sharding carries over): 2-D
        # matmuls, which XLA's CPU backend runs faster than the batched 3-D forms.
        h, t, w = (x.reshape(-1, *x.shape[2:]) for x in chunk)
        p, sums, loss = _chunk_loss(h, embedding, t, w)
        vocab = jax.lax.broadcasted_iota(jnp.int32, p.shape, p.ndim - 1)
        # w * (softmax - onehot), the softmax from the saved exponentials.
        d_z = p * (w / sums)[:, None] - jnp.where(vocab == t[:, None], w[:, None], 0.0)
        d_z = constrain(d_z.astype(dt), _names(2))
        d_h = jnp.einsum("tv,vd->td", d_z, embedding.astype(dt), preferred_element_type=jnp.float32)
        d_embedding = d_embedding + jnp.einsum("tv,td->vd", d_z, h, preferred_element_type=jnp.float32)
        return (total + loss, d_embedding), d_h.reshape(chunk[0].shape)

    init = (jnp.zeros((), jnp.float32), jnp.zeros(embedding.shape, jnp.float32))
    (total, d_embedding), d_hidden = jax.lax.scan(body, init, _chunked(hidden, targets, weights, length))
    d_hidden = d_hidden.swapaxes(0, 1).reshape(b, -1, d)[:, :s]
    return total, (d_hidden, d_embedding)


def _fwd(hidden, embedding, targets, weights, length):
    total, (d_hidden, d_embedding) = _fused_forward(hidden, embedding, targets, weights, length)
    # Float32 gradients are saved; empty arrays carry the dtypes the cotangents must have.
    dtypes = (jnp.zeros((0,), hidden.dtype), jnp.zeros((0,), embedding.dtype))
    return total, (d_hidden, d_embedding, dtypes)


def _bwd(length, residuals, g):
    """Scales the gradients taken in the forward pass by the cotangent g (no logits recomputed)."""
    del length
    d_hidden, d_embedding, (hidden_dtype, embedding_dtype) = residuals
    return ((d_hidden * g).astype(hidden_dtype.dtype), (d_embedding * g).astype(embedding_dtype.dtype),
            None, None)


fused_cross_entropy.defvjp(_fwd, _bwd)


def cross_entropy_sum(hidden: jax.Array, embedding: jax.Array, targets: jax.Array,
                      weights: jax.Array, impl: str = "fused", chunk_tokens: int = 1024) -> jax.Array:
    """sum(weights * cross-entropy) of the LM head on ``hidden``, float32; ``impl`` fused or plain.

    ``chunk_tokens``: tokens per device in one chunk of the fused loss (batch rows are split over
    the mesh's batch axes when a mesh and rules are active).
    """
    if impl == "plain":
        return plain_cross_entropy(hidden, embedding, targets, weights)
    b, s = targets.shape
    return fused_cross_entropy(hidden, embedding, targets, weights,
                               chunk_length(b, s, chunk_tokens, batch_shards()))
