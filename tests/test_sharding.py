"""Mesh flag, rules table, divisibility errors, and: every mesh trains like one device."""

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
