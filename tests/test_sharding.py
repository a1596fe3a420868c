"""Mesh flag, rules table, divisibility errors, and: every mesh trains like one device."""

import re

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from neoscale.presets import model_config
from neoscale.sharding import (
    LOGICAL_AXIS_RULES,
    check_divisible,
    make_mesh,
    mesh_pspec,
    named_shardings,
    parse_mesh,
)
from neoscale.training.optimizer import make_optimizer, make_schedule, weight_decay_mask
from neoscale.training.state import ModelParams, create_train_state, state_shardings
from neoscale.training.step import global_batch, make_train_step
from neoscale.training.synthetic import SyntheticData


def test_parse_mesh_defaults_and_wildcard():
    assert parse_mesh("", 8) == {"data": 1, "fsdp": 8, "expert": 1, "tensor": 1}
    assert parse_mesh("data:2,fsdp:2,tensor:2", 8) == {"data": 2, "fsdp": 2, "expert": 1,
                                                       "tensor": 2}
    assert parse_mesh("data:2, expert:-1", 8)["expert"] == 4


@pytest.mark.parametrize("spec, fragment", [
    ("data:3", "uses 3 devices but 8"),
    ("data:3,fsdp:-1", "does not divide"),
    ("model:8", "unknown axis 'model'"),
    ("data=8", "is not axis:size"),
    ("data:x", "not an integer"),
    ("data:-1,fsdp:-1", "only one axis may be -1"),
    ("data:2,data:4", "given twice"),
    ("data:0,fsdp:8", "positive"),
])
def test_parse_mesh_errors_are_one_line(spec, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        parse_mesh(spec, 8)
    assert "\n" not in str(info.value)


def test_mesh_axis_types_are_auto():
    mesh = make_mesh("data:2,fsdp:4")
    assert mesh.shape == {"data": 2, "fsdp": 4, "expert": 1, "tensor": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_rules_table_maps_every_model_name_without_reusing_a_mesh_axis():
    names = {name for name, _ in LOGICAL_AXIS_RULES}
    assert len(names) == len(LOGICAL_AXIS_RULES)  # one rule per name: one source of truth
    for params_spec in (ModelParams(model_config("w32d2h2e4k2", vocab_size=64), 0).logical_specs
                        .values()):
        axes = [a for a in mesh_pspec(params_spec) if a is not None]
        flat = [x for a in axes for x in ((a,) if isinstance(a, str) else a)]
        assert len(flat) == len(set(flat))
    assert mesh_pspec(("vocab", "embed")) == P("tensor", "fsdp")
    assert mesh_pspec(("act_batch", "act_length", "act_vocab")) == P(("data", "fsdp"), None,
                                                                      "tensor")
    with pytest.raises(ValueError, match="no rule"):
        mesh_pspec(("nonsense",))


def test_indivisible_dimension_is_a_clear_error_before_compilation():
    mesh = make_mesh("fsdp:2,tensor:4")
    specs = {"heads_kernel": P("embed", "heads")}
    shapes = {"heads_kernel": jax.ShapeDtypeStruct((32, 6), np.float32)}
    with pytest.raises(ValueError, match=r"heads_kernel dimension 1 \('heads'\) of size 6 is "
                                         r"not divisible by mesh axes tensor of size 4"):
        check_divisible(shapes, named_shardings(specs, mesh), specs)
    params = ModelParams(model_config("w32d2h2", vocab_size=64), 0)  # 2 heads over tensor:4
    with pytest.raises(ValueError, match="not divisible"):
        params.shardings(mesh)


def _losses(size: str, mesh, steps: int = 3, micro_batches: int = 1) -> np.ndarray:
    config = model_config(size, vocab_size=64, max_positions=16)
    params = ModelParams(config, seed=0)
    schedule = make_schedule("cosine", 1e-2, 10, 1)
    optimizer = make_optimizer(schedule, weight_decay_mask(params.logical_specs))
    shardings = state_shardings(params, optimizer, mesh)
    state = create_train_state(params, optimizer, mesh)
    step = make_train_step(params, optimizer, schedule, mesh, shardings, micro_batches)
    batches = SyntheticData(64, 16, seed=1).train_iterator(8)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, global_batch(next(batches), mesh))
        losses.append(float(metrics["loss"]))
    for name, array in state.params.items():
        assert array.sharding.spec == shardings.params[name].spec, name
    return np.array(losses)


_REFERENCE: dict[str, np.ndarray] = {}


def _one_device_losses(size: str) -> np.ndarray:
    """jit on a 1-device mesh: the reference (computed once per size)."""
    if size not in _REFERENCE:
        _REFERENCE[size] = _losses(size, make_mesh("", jax.devices()[:1]))
    return _REFERENCE[size]


@pytest.mark.parametrize("size, mesh_spec", [
    ("w32d2h2", "fsdp:8"),
    ("w32d2h2", "data:2,fsdp:2,tensor:2"),
    ("w32d2h2e4k2", "data:2,expert:4"),
])
def test_mesh_matches_one_device(size, mesh_spec):
    reference = _one_device_losses(size)
    sharded = _losses(size, make_mesh(mesh_spec))
    assert reference[-1] < reference[0]  # it trains
    np.testing.assert_allclose(sharded, reference, rtol=1e-5)


def test_gpt_neo_vocabulary_splits_over_a_tensor_axis():
    """50257 = 29 x 1733 splits over no tensor axis; the presets pad it to 50304 = 393 x 128."""
    mesh = make_mesh("fsdp:4,tensor:2")
    shardings = ModelParams(model_config("125M"), 0).shardings(mesh)
    assert shardings["wte"].spec == P("tensor", "fsdp")
    with pytest.raises(ValueError, match=r"wte dimension 0 \('vocab'\) of size 50257"):
        ModelParams(model_config("125M", vocab_pad_multiple=1), 0).shardings(mesh)


def test_padded_vocabulary_trains_alike_on_a_tensor_mesh():
    def losses(mesh):
        config = model_config("w32d2h2", vocab_size=60, vocab_pad_multiple=32, max_positions=16)
        params = ModelParams(config, seed=0)
        schedule = make_schedule("cosine", 1e-2, 10, 1)
        optimizer = make_optimizer(schedule, weight_decay_mask(params.logical_specs))
        state = create_train_state(params, optimizer, mesh)
        step = make_train_step(params, optimizer, schedule, mesh,
                               state_shardings(params, optimizer, mesh))
        batches = SyntheticData(60, 16, seed=1).train_iterator(8)
        values = []
        for _ in range(3):
            state, metrics = step(state, global_batch(next(batches), mesh))
            values.append(float(metrics["loss"]))
        return np.array(values)

    reference = losses(make_mesh("", jax.devices()[:1]))
    assert reference[-1] < reference[0]
    np.testing.assert_allclose(losses(make_mesh("fsdp:4,tensor:2")), reference, rtol=1e-5)


@pytest.mark.parametrize("mesh_spec", ["fsdp:8", "fsdp:4,tensor:2"])
def test_fused_loss_moves_no_embedding_inside_its_chunk_loop(mesh_spec):
    """The compiled gradient of the fused loss gathers the [vocab, d] embedding once before its
    chunk loop and reduce-scatters its gradient once after it: no collective in a loop body has
    a vocabulary-sized dimension (before shard_map: an all-reduce of the [vocab, d] gradient in
    every chunk). Per-chunk all-reduces of [tokens] and [tokens, d] under tensor parallelism are
    the vocabulary-parallel softmax's and stay."""
    from neoscale.benchmarking.hlo import loop_collectives
    from neoscale.sharding import batch_sharding, sharding_context
    from neoscale.training.step import loss_fn

    config = model_config("w32d2h2", vocab_size=1000, vocab_pad_multiple=128, max_positions=64,
                          loss_chunk_tokens=16)  # 2 chunks per device
    params = ModelParams(config, 0)
    mesh = make_mesh(mesh_spec)
    shardings = params.shardings(mesh)
    abstract = {name: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=shardings[name])
                for name, shape in params.shapes.items()}
    batch = {name: jax.ShapeDtypeStruct((8, 64), np.int32, sharding=batch_sharding(mesh))
             for name in ("inputs", "targets")}

    def grads(p, b):
        return jax.grad(lambda p: loss_fn(p, params, b)[0])(p)

    with sharding_context(mesh):
        hlo = jax.jit(grads, out_shardings=shardings).lower(abstract, batch).compile().as_text()
    tensor = mesh.shape["tensor"]
    vocab_rows = {config.padded_vocab_size, config.padded_vocab_size // tensor}
    in_loops = loop_collectives(hlo)
    assert not [c for c in in_loops if vocab_rows & set(c[1])], in_loops
    assert re.search(r"all-gather\(", hlo) and re.search(r"reduce-scatter\(", hlo)
