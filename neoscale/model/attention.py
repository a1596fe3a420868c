"""Causal self-attention kernels for GPT-Neo: global (causal) and local (sliding window) layers.

All take q, k, v [batch, seq, heads, head_dim] and return [batch, seq, heads, head_dim]; scores
are computed and soft-maxed in float32 and multiplied by ``scale`` (GPT-Neo: 1.0, no 1/sqrt(d)).
A local layer's query i sees keys i-window+1 ... i (GPT-Neo's exact window).

* ``dense``: jax.nn.dot_product_attention's XLA path: the whole [seq, seq] scores, masked (the
  reference; 2x the needed work in global layers, seq/window x in local ones).
* ``blocked``: only what the mask keeps, in XLA. Local: the sequence in blocks of ``window``
  positions, each query block against its own and the previous key block (2 x window keys per
  query, whatever the length). Global: query blocks of ``GLOBAL_BLOCK`` positions against the key
  prefix up to their block (the fully masked upper block triangle is never computed). The
  backward pass recomputes the probabilities from a saved log-sum-exp (``masked_attention``), so
  no layer's [Q, K] scores outlive its forward pass.
* ``splash``: the Pallas TPU kernel (``jax.experimental.pallas.ops.tpu.splash_attention``) with
  CausalMask / LocalMask, which skips masked blocks on the chip; ``interpret=True`` runs it on a CPU.
* ``cudnn``: cuDNN flash attention on GPU (bf16/f16).
* ``auto``: cudnn on GPU for 16-bit dtypes, splash on TPU, blocked elsewhere.

The platform is the one the program is built for (``attention_platform``): the devices of the
mesh set by ``jax.set_mesh`` / ``neoscale.sharding.sharding_context``, not the host's default
backend, so a step lowered on a CPU host for TPU devices uses splash compiled for the chip (not
interpret mode), and one lowered for GPU devices uses cuDNN.

Splash works heads-major: ``layout(impl)`` names the layout ``attention`` takes and returns, so
the projections write it directly and no transposed copy of q, k, v or the output is kept for the
backward pass.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

GLOBAL_BLOCK = 256  # query positions per block of the blocked causal path
SPLASH_BLOCK = 128  # splash's tile (lanes): sequences are padded to a multiple of it
MASK_VALUE = float(jnp.finfo(jnp.float32).min)


def attention_platform(mesh: jax.sharding.Mesh | None = None) -> str:
    """'tpu', 'gpu' or 'cpu': the platform the attention kernels are chosen and compiled for.

    The platform of ``mesh``'s devices; without one, of the mesh set by ``jax.set_mesh`` (as
    ``neoscale.sharding.sharding_context`` does; read at trace time, inside ``jit`` too); without
    either, ``jax.default_backend()``. Compile-only devices of a TPU or GPU topology count as
    their platform, so lowering on a CPU host for a TPU mesh picks splash, not interpret mode.
    """
    if mesh is None:
        from jax._src import mesh as mesh_lib  # the concrete mesh of jax.set_mesh, readable in jit

        mesh = mesh_lib.get_concrete_mesh()
    empty = mesh is None or mesh.empty
    platform = jax.default_backend() if empty else mesh.devices.flat[0].platform
    return "gpu" if platform in ("cuda", "rocm", "gpu") else platform


def resolve(impl: str, dtype: jnp.dtype, platform: str | None = None) -> str:
    """The kernel ``impl`` stands for on ``platform`` (default ``attention_platform()``; 'auto'
    picks per platform and dtype)."""
    if impl != "auto":
        return impl
    platform = platform or attention_platform()
    if platform == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    return "splash" if platform == "tpu" else "blocked"


def layout(impl: str) -> str:
    """'bhsd' (heads-major, splash's) or 'bshd': the layout of q, k, v and the output that
    ``attention`` takes and returns for the resolved kernel ``impl``."""
    return "bhsd" if impl == "splash" else "bshd"


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, kind: str, window: int, scale: float,
              impl: str = "auto", interpret: bool | None = None) -> jax.Array:
    """Causal attention of one layer; ``kind`` 'global' or 'local' (``window`` keys per query).

    q, k, v and the result are in ``layout(resolve(impl, q.dtype))``: [batch, heads, seq,
    head_dim] for splash, [batch, seq, heads, head_dim] otherwise. ``interpret`` (splash):
    Pallas interpret mode, by default when the platform (``attention_platform``) is not a TPU.
    """
    impl = resolve(impl, q.dtype)
    local = kind == "local"
    if impl in ("dense", "cudnn"):
        return jax.nn.dot_product_attention(
            q, k, v, scale=scale, is_causal=True, local_window_size=(window - 1, 0) if local else None,
            implementation="xla" if impl == "dense" else "cudnn")
    if impl == "blocked":
        return local_blocked(q, k, v, window, scale) if local else causal_blocked(q, k, v, scale)
    if impl == "splash":  # off a TPU the Pallas kernel runs in interpret mode (slow: for tests)
        if interpret is None:
            interpret = attention_platform() != "tpu"
        return splash(q, k, v, window=window if local else None, scale=scale, interpret=interpret)
    raise ValueError(f"attention impl {impl!r}; valid: auto, dense, blocked, splash, cudnn")


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask, scale: float) -> jax.Array:
    """q [..., Q, H, D], k, v [..., K, H, D], mask (numpy bool) broadcastable to [..., H, Q, K]
    -> [..., Q, H, D]: softmax attention whose backward pass recomputes the probabilities.

    The forward pass saves only q, k, v, the output and the row log-sum-exp [..., H, Q], never the
    [Q, K] scores or probabilities (flash attention's memory, in XLA ops). The backward pass
    recomputes the probabilities, transposed ([..., H, K, Q]) for the key-side gradients. On the
    w512d8h8 train step (CPU, float32) this cut XLA's temporaries from 3.37 to 2.29 GiB and ran
    1.19-1.24x faster than saving the probabilities (benchmarks/RESULTS.md).
    """
    mask_t = np.swapaxes(np.asarray(mask), -1, -2)

    def forward(q, k, v):
        s = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32) * scale
        s = jnp.where(mask, s, MASK_VALUE)  # [..., H, Q, K]
        row_max = s.max(axis=-1, keepdims=True)
        p = jnp.exp(s - row_max)
        row_sum = p.sum(axis=-1, keepdims=True)
        out = jnp.einsum("...hqk,...khd->...qhd", (p / row_sum).astype(v.dtype), v)
        return out, (row_max + jnp.log(row_sum))[..., 0]  # lse [..., H, Q]

    @jax.custom_vjp
    def attend(q, k, v):
        return forward(q, k, v)[0]

    def attend_fwd(q, k, v):
        out, lse = forward(q, k, v)
        return out, (q, k, v, out, lse)

    def attend_bwd(residuals, d_out):
        q, k, v, out, lse = residuals
        # softmax backward: dS = P * (dP - rowsum(dP * P)), and rowsum(dP * P) = rowsum(dO * O)
        d_o_dot_o = jnp.einsum("...qhd,...qhd->...hq", d_out.astype(jnp.float32),
                               out.astype(jnp.float32))
        q_tied = _tied_to(q, d_o_dot_o)
        s_t = jnp.einsum("...khd,...qhd->...hkq", k, q_tied,
                         preferred_element_type=jnp.float32) * scale
        p_t = jnp.where(mask_t, jnp.exp(s_t - lse[..., None, :]), 0.0)  # [..., H, K, Q]
        d_v = jnp.einsum("...hkq,...qhd->...khd", p_t.astype(v.dtype), d_out)
        d_p_t = jnp.einsum("...khd,...qhd->...hkq", v, d_out, preferred_element_type=jnp.float32)
        d_s_t = (p_t * (d_p_t - d_o_dot_o[..., None, :]) * scale).astype(q.dtype)
        d_q = jnp.einsum("...hkq,...khd->...qhd", d_s_t, k)
        d_k = jnp.einsum("...hkq,...qhd->...khd", d_s_t, q)
        return d_q, d_k, d_v

    attend.defvjp(attend_fwd, attend_bwd)
    return attend(q, k, v)


def _tied_to(q: jax.Array, d_o_dot_o: jax.Array) -> jax.Array:
    """``q`` [..., Q, H, D] unchanged in value (q * (1 + 0 * rowsum(dO * O))) but computed from
    the backward pass's cotangent (``d_o_dot_o`` [..., H, Q], float32), row by row: no reduction
    across rows, so nothing to all-reduce when the batch or the heads are sharded.

    A recomputation in a backward pass must start from such a value, or XLA undoes it (seen on
    the CPU backend, which also drops ``jax.checkpoint``'s optimization barriers): common-
    subexpression elimination folds it into the identical forward computation, or the scheduler
    hoists it into the forward pass, and the [K, Q] buffers stay alive from one pass to the other.
    """
    zero = 0.0 * jnp.swapaxes(d_o_dot_o, -1, -2)[..., None]  # [..., Q, H, 1]
    return q * (1.0 + zero).astype(q.dtype)


def _causal_mask(queries: int, keys: int, offset: int = 0, window: int | None = None) -> np.ndarray:
    """[queries, keys] bool: query a (at position offset + a) sees key j <= it (within window)."""
    q = np.arange(queries)[:, None] + offset
    j = np.arange(keys)[None, :]
    mask = j <= q
    if window is not None:
        mask &= j > q - window
    return mask


def local_blocked(q: jax.Array, k: jax.Array, v: jax.Array, window: int, scale: float) -> jax.Array:
    """Sliding-window attention computing only the band: blocks of ``window`` queries each see
    their own and the previous key block ([B, S, H, D] -> [B, S, H, D])."""
    b, s, h, d = q.shape
    if s <= window:  # the window covers the whole prefix: plain causal attention
        return masked_attention(q, k, v, _causal_mask(s, s), scale)
    n = math.ceil(s / window)
    pad = n * window - s

    def blocks(x):  # [B, S, H, D] -> [B, n, window, H, D], zero-padded at the end
        return jnp.pad(x, [(0, 0), (0, pad), (0, 0), (0, 0)]).reshape(b, n, window, h, d)

    qb, kb, vb = blocks(q), blocks(k), blocks(v)

    def with_previous(x):  # [B, n, w, H, D] -> [B, n, 2w, H, D]: block i-1 then block i
        previous = jnp.pad(x, [(0, 0), (1, 0), (0, 0), (0, 0), (0, 0)])[:, :-1]
        return jnp.concatenate([previous, x], axis=2)

    kb, vb = with_previous(kb), with_previous(vb)
    # Query a of block i is at i*w + a; key j of the pair is at (i-1)*w + j: in the window when
    # a + 1 <= j <= a + w; block 0 has no previous block (j >= w).
    a = np.arange(window)[:, None]
    j = np.arange(2 * window)[None, :]
    band = (j >= a + 1) & (j <= a + window)
    mask = np.broadcast_to(band, (n, window, 2 * window)).copy()
    mask[0, :, :window] = False
    out = masked_attention(qb, kb, vb, mask[:, None], scale)  # [B, n, w, H, D]
    return out.reshape(b, n * window, h, d)[:, :s]


def causal_blocked(q: jax.Array, k: jax.Array, v: jax.Array, scale: float,
                   block: int | None = None) -> jax.Array:
    """Causal attention over query blocks of ``block`` positions (default ``GLOBAL_BLOCK``), each
    against the key prefix up to the end of its block: the upper block triangle is skipped
    ([B, S, H, D] -> [B, S, H, D])."""
    block = block or GLOBAL_BLOCK
    s = q.shape[1]
    if s <= block:
        return masked_attention(q, k, v, _causal_mask(s, s), scale)
    outputs = []
    for start in range(0, s, block):  # a few blocks: unrolled, each with its own static shapes
        stop = min(start + block, s)
        outputs.append(masked_attention(q[:, start:stop], k[:, :stop], v[:, :stop],
                                        _causal_mask(stop - start, stop, offset=start), scale))
    return jnp.concatenate(outputs, axis=1)


def _splash_kernel(seq: int, heads: int, window: int | None, interpret: bool):
    """Built at trace time (not cached: its mask arrays are constants of the trace being built)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    if window is None:
        head_mask = masks.CausalMask((seq, seq))
    else:
        head_mask = masks.LocalMask((seq, seq), window_size=(window - 1, 0), offset=0)
    block = min(512, seq)
    sizes = kernel.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                              block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                              block_q_dq=block, block_kv_dq=block)
    return kernel.make_splash_mha(masks.MultiHeadMask([head_mask] * heads), block_sizes=sizes,
                                  head_shards=1, q_seq_shards=1, interpret=interpret)


def splash(q: jax.Array, k: jax.Array, v: jax.Array, *, window: int | None, scale: float,
           interpret: bool = False) -> jax.Array:
    """Splash attention (Pallas, TPU) on heads-major q, k, v [B, H, S, D] -> [B, H, S, D]:
    causal (window None) or local. The sequence is padded to a multiple of the kernel's tile;
    padded keys come after every real query, so they are masked."""
    s = q.shape[2]
    padded = math.ceil(s / SPLASH_BLOCK) * SPLASH_BLOCK
    if padded > 512:
        padded = math.ceil(s / 512) * 512

    def pad(x):  # [B, H, S, D] -> [B, H, S', D]
        return x if padded == s else jnp.pad(x, [(0, 0), (0, 0), (0, padded - s), (0, 0)])

    def attend(q, k, v):  # [B', H', S', D], this device's batch rows and heads
        kernel = _splash_kernel(padded, q.shape[1], window, interpret)
        return jax.vmap(kernel)(q, k, v)

    spec = _batch_heads_spec()
    if spec is not None:  # a Pallas call is not partitioned automatically: map it over the shards
        attend = jax.shard_map(attend, in_specs=(spec,) * 3, out_specs=spec, check_vma=False)
    if scale != 1.0:
        q = q * jnp.asarray(scale, q.dtype)
    out = attend(pad(q), pad(k), pad(v))
    return out if padded == s else out[:, :, :s]


def _batch_heads_spec() -> jax.sharding.PartitionSpec | None:
    """PartitionSpec of a [batch, heads, seq, head_dim] array under the active mesh and rules."""
    from flax.core import spmd

    rules = spmd.get_logical_axis_rules()
    if not rules or jax.sharding.get_abstract_mesh().empty:
        return None
    return jax.sharding.PartitionSpec(*spmd.from_sharding_rules(("act_batch", "act_heads", None, None),
                                                                rules))
