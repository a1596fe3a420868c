"""Logical axis names: how the model tells the sharding rules what each dimension means.

Parameters carry logical names in their ``out_sharding`` metadata (``param_init``); activations are
constrained with ``constrain``. Both are mapped onto mesh axes by the one rules table in
``neoscale.sharding.rules``; without an active rules context and mesh, ``constrain`` is a no-op.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
from flax import nnx
from flax.core import spmd

LogicalNames = Sequence[str | None]


def param_init(initializer: Callable, names: LogicalNames) -> Callable:
    """Wraps an initializer so the created nnx.Param carries logical axis names.

    Eager sharding is off: parameters are placed by ``neoscale.sharding`` (created under jit with
    out_shardings), so creating a model needs no mesh.
    """
    return nnx.with_partitioning(initializer, tuple(names), eager_sharding=False)


def constrain(x: jax.Array, names: LogicalNames) -> jax.Array:
    """Sharding constraint by logical names; a no-op outside a mesh + logical-rules context."""
    rules = spmd.get_logical_axis_rules()
    if not rules or jax.sharding.get_abstract_mesh().empty:
        return x
    spec = jax.sharding.PartitionSpec(*spmd.from_sharding_rules(tuple(names), rules))
    return jax.lax.with_sharding_constraint(x, spec)


def batch_axes() -> tuple[str, ...]:
    """The mesh axes (of size > 1) that the active rules split the batch ("act_batch") over; ()
    outside a mesh + rules context."""
    rules = spmd.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return ()
    axes = spmd.from_sharding_rules(("act_batch",), rules)[0]
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return tuple(name for name in names if mesh.shape[name] > 1)


def batch_shards() -> int:
    """How many ways the active mesh and rules split the batch ("act_batch"); 1 outside them."""
    axes = batch_axes()
    return math.prod(jax.sharding.get_abstract_mesh().shape[name] for name in axes) if axes else 1
