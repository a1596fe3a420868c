"""The fused LM-head loss equals the plain one (value and gradients), and the MoE objective sums
its auxiliary losses over layers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from neoscale.model import GPTNeo, ModelConfig
from neoscale.model.lm_head import chunk_length, fused_cross_entropy, plain_cross_entropy
from neoscale.training.state import ModelParams
from neoscale.training.step import loss_fn, masked_loss_sums


def _inputs(batch=2, seq=13, d=8, vocab=37, dtype=jnp.float32, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    hidden = jax.random.normal(keys[0], (batch, seq, d)).astype(dtype)
    embedding = jax.random.normal(keys[1], (vocab, d)).astype(dtype)
    targets = jax.random.randint(keys[2], (batch, seq), 0, vocab)
    weights = (jax.random.uniform(keys[3], (batch, seq)) > 0.3).astype(jnp.float32)
    return hidden, embedding, targets, weights


def _optax_sum(hidden, embedding, targets, weights):
    logits = jnp.einsum("bsd,vd->bsv", hidden.astype(jnp.float32), embedding.astype(jnp.float32))
    return jnp.sum(weights * optax.softmax_cross_entropy_with_integer_labels(logits, targets))


def test_plain_loss_is_optax_cross_entropy():
    args = _inputs()
    np.testing.assert_allclose(plain_cross_entropy(*args), _optax_sum(*args), rtol=1e-6)


@pytest.mark.parametrize("length", [1, 4, 5, 13, 40])  # 13 positions: 4 and 5 leave a padded chunk
def test_fused_value_and_gradients_equal_plain(length):
    hidden, embedding, targets, weights = _inputs()

    def plain(h, e):
        return 3.0 * plain_cross_entropy(h, e, targets, weights)

    def fused(h, e):
        return 3.0 * fused_cross_entropy(h, e, targets, weights, length)

    value, grads = jax.jit(jax.value_and_grad(fused, argnums=(0, 1)))(hidden, embedding)
    want_value, want_grads = jax.value_and_grad(plain, argnums=(0, 1))(hidden, embedding)
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # float32 sums, other order
    # Masked positions give no gradient to their hidden state.
    assert float(jnp.abs(grads[0] * (1 - weights)[..., None]).max()) == 0.0


def test_fused_bfloat16_hidden_accumulates_in_float32():
    hidden, embedding, targets, weights = _inputs(batch=2, seq=33, d=16, vocab=101,
                                                  dtype=jnp.bfloat16)

    def fused(h, e):
        return fused_cross_entropy(h, e, targets, weights, 8)

    value, (d_h, d_e) = jax.value_and_grad(fused, argnums=(0, 1))(hidden, embedding)
    assert value.dtype == jnp.float32 and d_h.dtype == jnp.bfloat16 and d_e.dtype == jnp.bfloat16
    # The reference: the same bf16 inputs, computed in float32 throughout.
    h32, e32 = hidden.astype(jnp.float32), embedding.astype(jnp.float32)
    want_value, (want_h, want_e) = jax.value_and_grad(
        lambda h, e: plain_cross_entropy(h, e, targets, weights), argnums=(0, 1))(h32, e32)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    # Gradients: the softmax-minus-onehot is rounded to bf16 before its matmuls.
    np.testing.assert_allclose(d_h.astype(jnp.float32), want_h, rtol=3e-2, atol=3e-2)
    np.testing.assert_allclose(d_e.astype(jnp.float32), want_e, rtol=3e-2, atol=3e-2)


def test_chunk_length_counts_tokens_per_device():
    assert chunk_length(batch=8, seq=512, chunk_tokens=1024) == 128
    assert chunk_length(batch=8, seq=512, chunk_tokens=1024, shards=8) == 512
    assert chunk_length(batch=64, seq=512, chunk_tokens=16) == 1


def _model_params(**overrides) -> ModelParams:
    shape = dict(vocab_size=61, max_positions=32, d_model=16, num_layers=2, num_heads=2, window_size=4)
    config = ModelConfig(**{**shape, **overrides})
    return ModelParams(config, seed=0)


def _batch(vocab=61, batch=2, seq=11):
    tokens = np.random.default_rng(0).integers(0, vocab, (batch, seq + 1)).astype(np.int32)
    mask = np.ones((batch, seq), np.float32)
    mask[1, 7:] = 0.0
    return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
            "mask": jnp.asarray(mask)}


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False},
                                       {"num_experts": 4, "top_k": 2}])
def test_train_loss_and_gradients_fused_equal_plain(overrides):
    fused, plain = (_model_params(loss_impl=impl, loss_chunk_tokens=5, **overrides)
                    for impl in ("fused", "plain"))
    params = jax.jit(fused.init)()
    batch = _batch()
    grad_fn = jax.grad(loss_fn, has_aux=True)
    got, got_metrics = jax.jit(grad_fn, static_argnums=1)(params, fused, batch)
    want, want_metrics = jax.jit(grad_fn, static_argnums=1)(params, plain, batch)
    np.testing.assert_allclose(got_metrics["total_loss"], want_metrics["total_loss"], rtol=1e-6)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)
    sums = [jax.jit(masked_loss_sums, static_argnums=1)(params, m, batch) for m in (fused, plain)]
    np.testing.assert_allclose(sums[0][0], sums[1][0], rtol=1e-6)
    assert float(sums[0][1]) == float(sums[1][1]) == 18.0
    # The reference: optax on the model's whole logits.
    logits, _ = plain.merge(params)(batch["inputs"])
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    np.testing.assert_allclose(sums[0][0], jnp.sum(per_token * batch["mask"]), rtol=1e-5)


def test_moe_auxiliary_losses_are_summed_over_layers():
    model_params = _model_params(num_experts=4, top_k=2, num_layers=4, load_balancing_coef=0.5,
                                 router_z_loss_coef=0.25)
    params = jax.jit(model_params.init)()
    batch = _batch()
    total, metrics = jax.jit(loss_fn, static_argnums=1)(params, model_params, batch)
    model = GPTNeo(model_params.config, rngs=nnx.Rngs(0))
    _, aux = model(batch["inputs"])
    lb, z = aux["load_balancing_loss_per_layer"], aux["router_z_loss_per_layer"]
    assert lb.shape == z.shape == (4,)
    np.testing.assert_allclose(metrics["load_balancing_loss"], lb.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["aux_loss"], 0.5 * lb.sum() + 0.25 * z.sum(), rtol=1e-6)
    np.testing.assert_allclose(total, metrics["loss"] + 0.5 * lb.sum() + 0.25 * z.sum(), rtol=1e-6)
    # Four layers: the sum is four times the per-layer mean that was added before.
    assert float(metrics["aux_loss"]) == pytest.approx(4 * (0.5 * float(lb.mean())
                                                            + 0.25 * float(z.mean())), rel=1e-5)


@pytest.mark.parametrize("length", [4, 13])
def test_padded_vocabulary_rows_are_masked_out(length):
    """Embedding rows past the vocabulary (ModelConfig.vocab_pad_multiple) change no loss and get
    no gradient, in the fused and the plain loss."""
    hidden, embedding, targets, weights = _inputs(vocab=37)
    padding = 100.0 * jax.random.normal(jax.random.key(9), (27, embedding.shape[1]))  # large logits
    padded = jnp.concatenate([embedding, padding])

    def plain(h, e, vocab=None):
        return plain_cross_entropy(h, e, targets, weights, vocab)

    def fused(h, e, vocab=None):
        return fused_cross_entropy(h, e, targets, weights, length, vocab)

    want_value, want_grads = jax.value_and_grad(plain, argnums=(0, 1))(hidden, embedding)
    for loss in (plain, fused):
        value, (d_hidden, d_embedding) = jax.value_and_grad(loss, argnums=(0, 1))(hidden, padded, 37)
        np.testing.assert_allclose(value, want_value, rtol=1e-6)
        np.testing.assert_allclose(d_hidden, want_grads[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(d_embedding[:37], want_grads[1], rtol=1e-5, atol=1e-5)
        assert float(jnp.abs(d_embedding[37:]).max()) == 0.0
