"""The device mesh: named axes ``data``, ``fsdp``, ``expert``, ``tensor``, sized by a flag.

``--mesh=data:2,fsdp:2,tensor:2`` gives the sizes of the named axes; axes left out have size 1,
one axis may be ``-1`` to take the remaining devices, and the default (an empty string) puts every
device on ``fsdp`` (plain data parallelism with sharded parameters and optimizer state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType, Mesh

# Canonical order, outermost first: ``tensor`` innermost so that it lands on the fastest links.
MESH_AXES = ("data", "fsdp", "expert", "tensor")
MESH_HELP = ("comma-separated axis:size pairs over the axes " + ", ".join(MESH_AXES)
             + " (one size may be -1 = the remaining devices), e.g. data:2,fsdp:2,tensor:2; "
             "empty = all devices on fsdp")


def parse_mesh(spec: str, num_devices: int) -> dict[str, int]:
    """Returns {axis: size} for every axis in MESH_AXES; the product equals ``num_devices``.

    Raises ValueError (one line) for a malformed string, an unknown or repeated axis, more than
    one -1, or sizes whose product does not equal the device count.
    """
    spec = (spec or "").strip()
    if not spec:
        return {axis: (num_devices if axis == "fsdp" else 1) for axis in MESH_AXES}
    sizes: dict[str, int] = {}
    for part in spec.split(","):
        name, sep, size_text = part.strip().partition(":")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"bad mesh {spec!r}: {part.strip()!r} is not axis:size; {MESH_HELP}")
        if name not in MESH_AXES:
            raise ValueError(f"bad mesh {spec!r}: unknown axis {name!r}; {MESH_HELP}")
        if name in sizes:
            raise ValueError(f"bad mesh {spec!r}: axis {name!r} given twice; {MESH_HELP}")
        try:
            size = int(size_text)
        except ValueError:
            raise ValueError(f"bad mesh {spec!r}: size {size_text.strip()!r} of axis {name!r} is "
                             f"not an integer; {MESH_HELP}") from None
        if size == 0 or size < -1:
            raise ValueError(f"bad mesh {spec!r}: size of axis {name!r} must be positive or -1")
        sizes[name] = size
    wildcards = [name for name, size in sizes.items() if size == -1]
    if len(wildcards) > 1:
        raise ValueError(f"bad mesh {spec!r}: only one axis may be -1, got {', '.join(wildcards)}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if wildcards:
        if num_devices % fixed:
            raise ValueError(f"bad mesh {spec!r}: the fixed axes use {fixed} devices, which does "
                             f"not divide the {num_devices} available devices")
        sizes[wildcards[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(f"bad mesh {spec!r}: uses {fixed} devices but {num_devices} are "
                         "available; make the sizes multiply to the device count or use -1 on one axis")
    return {axis: sizes.get(axis, 1) for axis in MESH_AXES}


def make_mesh(spec: str = "", devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the Mesh (axis types Auto: GSPMD propagation) over ``devices`` (default: all)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = parse_mesh(spec, len(devices))
    shape = tuple(sizes[axis] for axis in MESH_AXES)
    if len(devices) == jax.device_count() or devices[0].platform != jax.default_backend():
        # All devices here, or a whole topology built for another platform (neoscale.aot): jax
        # picks a topology-aware device order (ICI rings on TPU).
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                             devices=devices)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
                axis_types=(AxisType.Auto,) * len(MESH_AXES))


def abstract_mesh(sizes: dict[str, int]) -> AbstractMesh:
    """The mesh of ``sizes`` ({axis: size}, as from ``parse_mesh``) without devices: for planning
    and checking shardings for a machine other than this one."""
    return AbstractMesh(tuple(sizes.get(axis, 1) for axis in MESH_AXES), MESH_AXES,
                        axis_types=(AxisType.Auto,) * len(MESH_AXES))


def describe(mesh: Mesh) -> str:
    """'data:2,fsdp:2,expert:1,tensor:2' (the flag syntax, all axes)."""
    return ",".join(f"{name}:{size}" for name, size in mesh.shape.items())
