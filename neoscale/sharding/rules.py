"""THE table mapping the model's logical axis names to mesh axes, and helpers that apply it.

Parameters carry logical axis names (``nnx.with_partitioning``); important activations are
constrained with logical names too (``neoscale.model.partitioning.constrain``). Changing the
parallelism strategy is a change to ``LOGICAL_AXIS_RULES`` (or to the ``--mesh`` flag), never
to the model. Axes of size 1 cost nothing, so one table serves every mesh:

* fsdp (default, all devices): the batch is split over ``data`` x ``fsdp`` and every parameter's
  ``embed`` dimension over ``fsdp`` (ZeRO-3 style sharded parameters and optimizer state).
* tensor: attention heads, MLP hidden units and the vocabulary split over ``tensor`` (Megatron).
* expert: the experts of MoE layers split over ``expert``.

Each logical name appears once, so the lookup is a plain mapping and no array that the model
annotates can use a mesh axis twice (the names that share an array map to different axes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax.core import spmd as flax_spmd
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None

LOGICAL_AXIS_RULES: tuple[tuple[str, MeshAxes], ...] = (
    # Parameters.
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("expert", "expert"),
    ("positions", None),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
    # Activations.
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("act_expert", "expert"),
    ("act_capacity", None),
)

BATCH_AXES = ("act_batch", "act_length")  # logical names of a [batch, seq_len] token array


def mesh_pspec(logical: Sequence[str | None] | None,
               rules: Sequence[tuple[str, MeshAxes]] = LOGICAL_AXIS_RULES) -> PartitionSpec:
    """Logical names of one array's dimensions -> its PartitionSpec over mesh axes."""
    if logical is None:
        return PartitionSpec()
    unknown = [name for name in logical if name is not None and name not in dict(rules)]
    if unknown:
        raise ValueError(f"logical axis {unknown[0]!r} has no rule in neoscale.sharding.rules; "
                         "add it to LOGICAL_AXIS_RULES")
    return nn.logical_to_mesh_axes(tuple(logical), tuple(rules))


def named_shardings(logical_specs: Any, mesh: Mesh,
                    rules: Sequence[tuple[str, MeshAxes]] = LOGICAL_AXIS_RULES) -> Any:
    """Tree of logical PartitionSpecs -> tree of NamedShardings on ``mesh``."""
    return jax.tree.map(lambda spec: NamedSharding(mesh, mesh_pspec(spec, rules)), logical_specs,
                        is_leaf=_is_spec)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a [batch, seq_len] token array."""
    return NamedSharding(mesh, mesh_pspec(BATCH_AXES))


def batch_divisor(mesh: Mesh) -> int:
    """The number of shards of the batch dimension: a global batch must be a multiple of it."""
    return _axis_size(mesh, mesh_pspec(BATCH_AXES)[0])


def check_divisible(shapes: Any, shardings: Any, logical_specs: Any | None = None,
                    what: str = "parameter") -> None:
    """Raises a one-line ValueError if a dimension is not divisible by its mesh axes.

    ``shapes`` (arrays or ShapeDtypeStructs), ``shardings`` (NamedShardings) and the optional
    ``logical_specs`` are trees of the same structure. Call it before any compilation.
    """
    shape_leaves = jax.tree_util.tree_leaves_with_path(shapes)
    sharding_leaves = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    logical_leaves = (jax.tree.leaves(logical_specs, is_leaf=_is_spec)
                      if logical_specs is not None else [None] * len(shape_leaves))
    for (path, leaf), sharding, logical in zip(shape_leaves, sharding_leaves, logical_leaves,
                                               strict=True):
        for dim, axes in enumerate(sharding.spec):
            size = _axis_size(sharding.mesh, axes)
            if leaf.shape[dim] % size:
                name = f" ({logical[dim]!r})" if logical is not None else ""
                raise ValueError(
                    f"{what} {jax.tree_util.keystr(path, simple=True, separator='/')} dimension "
                    f"{dim}{name} of size {leaf.shape[dim]} is not divisible by mesh axes {axes} "
                    f"of size {size}; choose a --mesh whose axes divide the model's dimensions")


def _axis_size(mesh: Mesh, axes: MeshAxes) -> int:
    if axes is None:
        return 1
    names = (axes,) if isinstance(axes, str) else axes
    return int(np.prod([mesh.shape[name] for name in names]))


def _is_spec(x: Any) -> bool:
    return isinstance(x, PartitionSpec) or x is None


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: Sequence[tuple[str, MeshAxes]] = LOGICAL_AXIS_RULES):
    """Activates ``mesh`` and the rules so the model's activation constraints take effect.

    Trace (and call) jitted model code inside it.
    """
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(tuple(rules)):
        yield
