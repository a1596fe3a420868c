"""The attention kernels agree: blocked (band / block triangle) and splash (Pallas, interpret mode
on CPU) against the dense masked reference, for global and local layers and awkward lengths."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from neoscale.model import GPTNeo, ModelConfig
from neoscale.model import attention as attention_module
from neoscale.model.attention import (
    attention,
    attention_platform,
    causal_blocked,
    layout,
    local_blocked,
    resolve,
)


def _qkv(seq, batch=2, heads=3, head_dim=8, seed=0, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 3)
    return [jax.random.normal(key, (batch, seq, heads, head_dim)).astype(dtype) for key in keys]


@functools.partial(jax.jit, static_argnames="window")
def _explicit(q, k, v, window=None):
    """Attention written out with numpy masks: query i sees keys i-window+1 ... i."""
    seq = q.shape[1]
    i, j = np.arange(seq)[:, None], np.arange(seq)[None, :]
    mask = (j <= i) & ((j > i - window) if window else True)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
    probs = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v.astype(jnp.float32))


@pytest.mark.parametrize("seq", [5, 8, 21, 24, 37])  # window 8: below, equal, odd and exact multiples
def test_local_blocked_equals_dense(seq):
    q, k, v = _qkv(seq)
    want = _explicit(q, k, v, window=8)
    got = jax.jit(local_blocked, static_argnums=(3, 4))(q, k, v, 8, 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    dense = jax.jit(functools.partial(attention, kind="local", window=8, scale=1.0, impl="dense"))(q, k, v)
    np.testing.assert_allclose(dense, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seq", [7, 16, 33, 48])  # block 16: one block, exact, ragged tail
def test_causal_blocked_equals_dense(seq):
    q, k, v = _qkv(seq)
    got = jax.jit(functools.partial(causal_blocked, scale=1.0, block=16))(q, k, v)
    np.testing.assert_allclose(got, _explicit(q, k, v), rtol=1e-5, atol=1e-5)


def test_blocked_gradients_equal_dense():
    q, k, v = _qkv(29)

    def loss(fn, q, k, v):
        return jnp.sum(jnp.sin(fn(q, k, v)))

    for blocked, kind in ((lambda q, k, v: local_blocked(q, k, v, 8, 0.5), "local"),
                          (lambda q, k, v: causal_blocked(q, k, v, 0.5, block=8), "global")):
        def dense(q, k, v, kind=kind):
            return attention(q, k, v, kind=kind, window=8, scale=0.5, impl="dense")

        got = jax.jit(jax.grad(lambda *a, f=blocked: loss(f, *a), argnums=(0, 1, 2)))(q, k, v)
        want = jax.jit(jax.grad(lambda *a, f=dense: loss(f, *a), argnums=(0, 1, 2)))(q, k, v)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_blocked_bfloat16_gradients_match_float32():
    q, k, v = _qkv(40, dtype=jnp.bfloat16)

    def grads(q, k, v):
        return jax.grad(lambda *a: jnp.sum(jnp.sin(local_blocked(*a, 16, 0.25))), argnums=(0, 1, 2))(
            q, k, v)

    got = jax.jit(grads)(q, k, v)
    want = jax.jit(grads)(*(x.astype(jnp.float32) for x in (q, k, v)))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(g.astype(jnp.float32), w, rtol=0.05, atol=0.05)


def _saved_probabilities_attention(q, k, v, mask, scale):
    """The plain softmax core (autodiff saves its [Q, K] probabilities for the backward pass)."""
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32) * scale
    probs = jax.nn.softmax(jnp.where(mask, scores, attention_module.MASK_VALUE), axis=-1)
    return jnp.einsum("...hqk,...khd->...qhd", probs.astype(v.dtype), v)


def test_blocked_backward_recomputes_instead_of_keeping_probabilities(monkeypatch):
    """XLA's temporaries for the gradient of four blocked layers: the recomputing core must keep
    far less alive than the plain softmax core (XLA folds a careless recomputation back in)."""

    def temporaries() -> int:
        def loss(x):
            for layer in range(4):
                y = (local_blocked(x, x, x, 128, 1.0) if layer % 2
                     else causal_blocked(x, x, x, 1.0, block=128))
                x = x + y
            return x.sum()

        x = jax.ShapeDtypeStruct((2, 512, 4, 32), jnp.float32)
        return jax.jit(jax.grad(loss)).lower(x).compile().memory_analysis().temp_size_in_bytes

    recomputing = temporaries()
    monkeypatch.setattr(attention_module, "masked_attention", _saved_probabilities_attention)
    saving = temporaries()
    assert recomputing < 0.6 * saving, (recomputing, saving)


def test_blocked_bfloat16_matches_float32():
    q, k, v = _qkv(40, dtype=jnp.bfloat16)
    got = jax.jit(local_blocked, static_argnums=(3, 4))(q, k, v, 16, 0.25)
    assert got.dtype == jnp.bfloat16
    want = attention(*(x.astype(jnp.float32) for x in (q, k, v)), kind="local", window=16,
                     scale=0.25, impl="dense")
    np.testing.assert_allclose(got.astype(jnp.float32), want, atol=3e-2)


def _heads_major(x):
    """[B, S, H, D] <-> [B, H, S, D]: splash's layout (``attention.layout('splash')``)."""
    return x.transpose(0, 2, 1, 3)


@pytest.mark.parametrize("kind,seq", [("global", 100), ("local", 100), ("local", 300)])
def test_splash_interpret_equals_xla(kind, seq):
    q, k, v = _qkv(seq, batch=1, heads=2, head_dim=8)
    args = dict(kind=kind, window=16, scale=1.0)
    splash = functools.partial(attention, impl="splash", interpret=True, **args)
    got = jax.jit(splash)(*map(_heads_major, (q, k, v)))
    want = jax.jit(functools.partial(attention, impl="dense", **args))(q, k, v)
    np.testing.assert_allclose(_heads_major(got), want, rtol=1e-4, atol=1e-4)


def test_auto_picks_per_device_and_dtype():
    assert resolve("auto", jnp.bfloat16, "gpu") == "cudnn"
    assert resolve("auto", jnp.float32, "gpu") == "blocked"
    assert resolve("auto", jnp.bfloat16, "tpu") == "splash"
    assert resolve("auto", jnp.float32, "cpu") == "blocked"
    assert resolve("dense", jnp.float32, "tpu") == "dense"
    assert layout("splash") == "bhsd" and layout("blocked") == layout("cudnn") == "bshd"


class _FakeDevice:
    def __init__(self, platform):
        self.platform = platform


class _FakeMesh:
    """What ``attention_platform`` reads of a mesh (a topology's compile-only devices)."""

    def __init__(self, platform):
        self.empty = False
        self.devices = np.array([_FakeDevice(platform)] * 4)


def test_platform_follows_the_mesh_not_the_host(monkeypatch):
    from jax._src import mesh as mesh_lib

    assert jax.default_backend() == "cpu"
    assert attention_platform() == "cpu"  # no mesh: the host
    assert attention_platform(_FakeMesh("tpu")) == "tpu"
    assert attention_platform(_FakeMesh("cuda")) == "gpu"
    # Inside jit, under the mesh that jax.set_mesh (sharding_context) installs:
    for platform, impl in (("tpu", "splash"), ("gpu", "cudnn")):
        seen = {}

        def probe(x, seen=seen):
            seen["platform"], seen["impl"] = attention_platform(), resolve("auto", jnp.bfloat16)
            return x

        monkeypatch.setattr(mesh_lib, "get_concrete_mesh", lambda platform=platform: _FakeMesh(platform))
        jax.jit(probe).lower(1.0)
        assert seen == {"platform": platform, "impl": impl}


def test_splash_interpret_mode_follows_the_platform(monkeypatch):
    """Splash lowered for TPU devices is the Mosaic kernel (no interpret mode), whatever the host."""
    seen = []
    monkeypatch.setattr(attention_module, "_splash_kernel",
                        lambda seq, heads, window, interpret: seen.append(interpret) or (
                            lambda q, k, v: q))
    q = jnp.zeros((1, 2, 128, 8))
    attention(q, q, q, kind="global", window=16, scale=1.0, impl="splash")
    monkeypatch.setattr(attention_module, "attention_platform", lambda mesh=None: "tpu")
    attention(q, q, q, kind="global", window=16, scale=1.0, impl="splash")
    assert seen == [True, False]


@pytest.mark.parametrize("seq", [6, 19, 32])
def test_model_logits_equal_across_attention_impls(seq):
    config = ModelConfig(vocab_size=53, max_positions=32, d_model=16, num_layers=2, num_heads=2,
                         window_size=8, init_std=0.3)
    tokens = jax.random.randint(jax.random.key(1), (2, seq), 0, 53)

    @nnx.jit
    def logits(model, tokens):
        return model(tokens)[0]

    dense = logits(GPTNeo(config.replace(attention_impl="dense"), rngs=nnx.Rngs(0)), tokens)
    blocked = logits(GPTNeo(config.replace(attention_impl="blocked"), rngs=nnx.Rngs(0)), tokens)
    np.testing.assert_allclose(blocked, dense, rtol=1e-5, atol=1e-5)


def test_splash_is_mapped_over_batch_and_head_shards():
    from neoscale.sharding import make_mesh, sharding_context

    q, k, v = _qkv(100, batch=4, heads=2, head_dim=8)
    args = dict(kind="local", window=16, scale=1.0)
    splash = functools.partial(attention, impl="splash", interpret=True, **args)
    with sharding_context(make_mesh("data:2,fsdp:2,tensor:2")):
        got = jax.jit(splash)(*map(_heads_major, (q, k, v)))
    want = jax.jit(functools.partial(attention, impl="dense", **args))(q, k, v)
    np.testing.assert_allclose(_heads_major(got), want, rtol=1e-4, atol=1e-4)
