"""Device mesh and the logical-axis rules that place parameters, batches and activations."""

from neoscale.sharding.mesh import MESH_AXES, abstract_mesh, describe, make_mesh, parse_mesh
from neoscale.sharding.rules import (
    LOGICAL_AXIS_RULES,
    batch_divisor,
    batch_sharding,
    check_divisible,
    mesh_pspec,
    named_shardings,
    sharding_context,
)

__all__ = [
    "LOGICAL_AXIS_RULES",
    "MESH_AXES",
    "abstract_mesh",
    "batch_divisor",
    "batch_sharding",
    "check_divisible",
    "describe",
    "make_mesh",
    "mesh_pspec",
    "named_shardings",
    "parse_mesh",
    "sharding_context",
]
