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
from typing import NamedTuple

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
                        weights: jax.Array, vocab: int | None = None) -> jax.Array:
    """sum(weights * cross-entropy) through whole logits, float32 scalar (the reference).

    hidden [B, S, D], embedding [V, D] (rows from ``vocab`` on are padding: masked out),
    targets int [B, S], weights float32 [B, S].
    """
    z = head_logits(hidden, embedding)
    if vocab is not None and vocab < z.shape[-1]:
        z = jnp.where(jax.lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1) < vocab, z, -jnp.inf)
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


class _Axes(NamedTuple):
    """Mesh axes the fused loss's per-device function reduces over (empty outside a mesh)."""

    batch: tuple[str, ...] = ()  # rows of hidden, targets and weights
    vocab: tuple[str, ...] = ()  # rows of the embedding
    embed: tuple[str, ...] = ()  # the embedding gradient's columns, scattered over these (FSDP)


def _psum(x, axes):
    return jax.lax.psum(x, axes) if axes else x


def _pmax(x, axes):
    return jax.lax.pmax(x, axes) if axes else x


def _chunk(h, embedding, t, w, vocab: int, axes: _Axes, want_grads: bool):
    """One chunk of rows h [T, D] against this device's embedding rows [V', D]: (sum of weighted
    cross-entropy, d_hidden [T, D] float32, d_embedding [V', D] float32; None without grads).

    Embedding rows at or past ``vocab`` (padding) are masked out. Under vocabulary sharding the
    row max, the row sums, the target logit and d_hidden are reduced over ``axes.vocab``. The
    row sums are a matrix-vector product with ones, and the target logit is h · embedding[t]
    ([T, D] work): on XLA's CPU backend both [T, V] reductions (sum, compare-and-sum) run on one
    thread at a fraction of the matmuls' speed (benchmarks/RESULTS.md).
    """
    rows = embedding.shape[0]
    offset = jax.lax.axis_index(axes.vocab) * rows if axes.vocab else 0
    column = offset + jax.lax.broadcasted_iota(jnp.int32, (1, rows), 1)  # global vocabulary id
    z = jnp.einsum("td,vd->tv", h, embedding, preferred_element_type=jnp.float32)
    if axes.vocab or vocab < rows:
        z = jnp.where(column < vocab, z, -jnp.inf)
    row_max = _pmax(jnp.max(z, axis=-1), axes.vocab)
    p = jnp.exp(z - row_max[:, None])
    sums = _psum(jnp.einsum("tv,v->t", p, jnp.ones(rows, p.dtype)), axes.vocab)
    local = t - offset
    here = (local >= 0) & (local < rows)
    target = jnp.einsum("td,td->t", h, embedding[jnp.clip(local, 0, rows - 1)],
                        preferred_element_type=jnp.float32)
    target = _psum(jnp.where(here, target, 0.0), axes.vocab)
    loss = jnp.sum(w * (row_max + jnp.log(sums) - target))
    if not want_grads:
        return loss, None, None
    # w * (softmax - onehot), the softmax from the saved exponentials.
    d_z = (p * (w / sums)[:, None] - jnp.where(column == t[:, None], w[:, None], 0.0)).astype(h.dtype)
    d_h = _psum(jnp.einsum("tv,vd->td", d_z, embedding, preferred_element_type=jnp.float32), axes.vocab)
    d_embedding = jnp.einsum("tv,td->vd", d_z, h, preferred_element_type=jnp.float32)
    return loss, d_h, d_embedding


def _local_loss(hidden, embedding, targets, weights, length: int, vocab: int, axes: _Axes,
                want_grads: bool):
    """This device's rows and embedding rows -> (loss, d_hidden, d_embedding), summed over the
    mesh: the chunk loop runs on local arrays, so no collective of the embedding or its gradient
    happens inside it (one all-gather before it, at the shard_map boundary; one reduce-scatter
    after it)."""
    b, s, d = hidden.shape

    def body(carry, chunk):
        total, d_embedding = carry
        # [B, c, ...] -> [B*c, ...] rows: 2-D matmuls, which XLA's CPU backend runs faster than
        # the batched 3-D forms.
        h, t, w = (x.reshape(-1, *x.shape[2:]) for x in chunk)
        loss, d_h, d_e = _chunk(h, embedding, t, w, vocab, axes, want_grads)
        if not want_grads:
            return (total + loss, d_embedding), None
        return (total + loss, d_embedding + d_e), d_h.reshape(chunk[0].shape)

    d_embedding = jnp.zeros(embedding.shape, jnp.float32) if want_grads else jnp.zeros((), jnp.float32)
    init = (jnp.zeros((), jnp.float32), d_embedding)
    (total, d_embedding), d_hidden = jax.lax.scan(body, init, _chunked(hidden, targets, weights, length))
    total = _psum(total, axes.batch)
    if not want_grads:
        return total, None, None
    d_hidden = d_hidden.swapaxes(0, 1).reshape(b, -1, d)[:, :s]
    d_embedding = _psum(d_embedding, tuple(a for a in axes.batch if a not in axes.embed))
    if axes.embed:
        d_embedding = jax.lax.psum_scatter(d_embedding, axes.embed, scatter_dimension=1, tiled=True)
    return total, d_hidden, d_embedding


def _mesh_axes() -> tuple[_Axes, jax.sharding.PartitionSpec, ...] | None:
    """The reduction axes and the shard_map specs of (hidden, embedding, targets and weights,
    d_embedding) under the active mesh and rules; None outside them."""
    from flax.core import spmd

    rules = spmd.get_logical_axis_rules()
    if not rules or jax.sharding.get_abstract_mesh().empty:
        return None

    sizes = jax.sharding.get_abstract_mesh().shape

    def axes(name: str) -> tuple[str, ...]:  # the mesh axes of a logical name that split it
        mapped = spmd.from_sharding_rules((name,), rules)[0]
        names = () if mapped is None else (mapped,) if isinstance(mapped, str) else tuple(mapped)
        return tuple(a for a in names if sizes[a] > 1)

    batch, vocab = axes("act_batch"), axes("vocab")
    embed = tuple(a for a in axes("embed") if a in batch)  # gradient columns scattered over these
    spec = jax.sharding.PartitionSpec
    return (_Axes(batch, vocab, embed), spec(batch or None, None, None), spec(vocab or None, None),
            spec(batch or None, None), spec(vocab or None, embed or None))


def _fused(hidden, embedding, targets, weights, length, vocab, want_grads):
    """``_local_loss`` over the mesh (shard_map over every axis) or, outside one, on the arrays."""
    mapped = _mesh_axes()
    if mapped is None:
        return _local_loss(hidden, embedding, targets, weights, length, vocab, _Axes(), want_grads)
    axes, hidden_spec, embedding_spec, rows_spec, grad_spec = mapped
    spec = jax.sharding.PartitionSpec
    out_specs = (spec(), hidden_spec if want_grads else None, grad_spec if want_grads else None)
    local = jax.shard_map(
        functools.partial(_local_loss, length=length, vocab=vocab, axes=axes, want_grads=want_grads),
        in_specs=(hidden_spec, embedding_spec, rows_spec, rows_spec), out_specs=out_specs,
        check_vma=False)
    return local(hidden, embedding, targets, weights)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def fused_cross_entropy(hidden: jax.Array, embedding: jax.Array, targets: jax.Array,
                        weights: jax.Array, length: int, vocab: int | None = None) -> jax.Array:
    """sum(weights * cross-entropy) of hidden @ embedding.T, ``length`` positions per chunk.

    hidden [B, S, D] (final LayerNorm output, compute dtype), embedding [V, D] (rows from
    ``vocab`` on, if given, are padding: masked out), targets int [B, S], weights float32
    [B, S]. Float32 scalar; equals ``plain_cross_entropy``. Under a mesh and rules each device
    runs the chunk loop on its own rows (``jax.shard_map``): the embedding is gathered once
    before the loop and its gradient reduce-scattered once after it.
    """
    vocab = embedding.shape[0] if vocab is None else vocab
    return _fused(hidden, embedding, targets, weights, length, vocab, want_grads=False)[0]


def _fwd(hidden, embedding, targets, weights, length, vocab):
    """The loss and, chunk by chunk, its gradients w.r.t. hidden and embedding (float32 sums)."""
    vocab = embedding.shape[0] if vocab is None else vocab
    total, d_hidden, d_embedding = _fused(hidden, embedding, targets, weights, length, vocab,
                                          want_grads=True)
    # Float32 gradients are saved; empty arrays carry the dtypes the cotangents must have.
    dtypes = (jnp.zeros((0,), hidden.dtype), jnp.zeros((0,), embedding.dtype))
    return total, (d_hidden, d_embedding, dtypes)


def _bwd(length, vocab, residuals, g):
    """Scales the gradients taken in the forward pass by the cotangent g (no logits recomputed)."""
    del length, vocab
    d_hidden, d_embedding, (hidden_dtype, embedding_dtype) = residuals
    return ((d_hidden * g).astype(hidden_dtype.dtype), (d_embedding * g).astype(embedding_dtype.dtype),
            None, None)


fused_cross_entropy.defvjp(_fwd, _bwd)


def cross_entropy_sum(hidden: jax.Array, embedding: jax.Array, targets: jax.Array,
                      weights: jax.Array, impl: str = "fused", chunk_tokens: int = 1024,
                      vocab: int | None = None) -> jax.Array:
    """sum(weights * cross-entropy) of the LM head on ``hidden``, float32; ``impl`` fused or plain.

    ``chunk_tokens``: tokens per device in one chunk of the fused loss (batch rows are split over
    the mesh's batch axes when a mesh and rules are active). ``vocab``: the real vocabulary when
    ``embedding``'s rows are padded past it (``ModelConfig.vocab_pad_multiple``).
    """
    if impl == "plain":
        return plain_cross_entropy(hidden, embedding, targets, weights, vocab)
    b, s = targets.shape
    return fused_cross_entropy(hidden, embedding, targets, weights,
                               chunk_length(b, s, chunk_tokens, batch_shards()), vocab)
