"""The chunked LM-head cross-entropy equals the plain one, in value and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from neoscale.training.cross_entropy import lm_head_cross_entropy


@pytest.mark.parametrize("chunk_tokens", [2, 8, 1000])
def test_matches_optax_value_and_gradients(chunk_tokens):
    keys = jax.random.split(jax.random.key(0), 4)
    batch, seq, d, vocab = 2, 12, 8, 37
    hidden = jax.random.normal(keys[0], (batch, seq, d))
    embedding = jax.random.normal(keys[1], (vocab, d))
    targets = jax.random.randint(keys[2], (batch, seq), 0, vocab)
    weights = (jax.random.uniform(keys[3], (batch, seq)) > 0.3).astype(jnp.float32)

    def reference(h, w):
        logits = jnp.einsum("bsd,vd->bsv", h, w)
        return jnp.sum(weights * optax.softmax_cross_entropy_with_integer_labels(logits, targets))

    def chunked(h, w):
        return lm_head_cross_entropy(h, w, targets, weights, chunk_tokens)

    np.testing.assert_allclose(chunked(hidden, embedding), reference(hidden, embedding), rtol=1e-6)
    grads = jax.grad(lambda h, w: 3.0 * chunked(h, w), argnums=(0, 1))(hidden, embedding)
    expected = jax.grad(lambda h, w: 3.0 * reference(h, w), argnums=(0, 1))(hidden, embedding)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
