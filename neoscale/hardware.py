"""Accelerators a study can be planned for: memory and peak FLOP/s per device, and slice names.

One table (datasheet figures, REFERENCE.md §6) serves the planner's memory check and MFU. A target
is named like Cloud TPU accelerator types or a GPU count:

* ``v4-32`` (v4 and v5p names count TensorCores: 2 per chip, so v4-32 is 16 chips on 4 hosts),
  ``v5e-64`` / ``v5litepod-64`` and ``v6e-64`` (named by chips), ``v5p-128``;
* ``h100``, ``h100x8``, ``h200``, ``a100x8`` (GPUs on one host);
* ``cpu`` (this host), or ``local``: the devices JAX sees here.
"""

from __future__ import annotations

import dataclasses
import math
import re

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class DeviceKind:
    """One accelerator model. ``memory`` in bytes, ``peak_flops`` dense bf16 FLOP/s per device."""

    name: str
    memory: int
    peak_flops: float
    cores_per_chip_in_name: int = 1  # v4-32 / v5p-128 count TensorCores (2 per chip)
    chips_per_host: int = 4
    # Fraction of device memory the planner lets a step use: XLA's TPU runtime keeps a little for
    # itself; on GPUs JAX preallocates 75% by default (XLA_PYTHON_CLIENT_MEM_FRACTION).
    usable_fraction: float = 0.9
    # Attention kernels that never hold [seq, seq] scores (splash on TPU, cuDNN flash on GPU).
    flash_attention: bool = True


DEVICE_KINDS: dict[str, DeviceKind] = {
    "v4": DeviceKind("TPU v4", 32 * GiB, 275e12, cores_per_chip_in_name=2),
    "v5e": DeviceKind("TPU v5 lite", 16 * GiB, 197e12),
    "v5p": DeviceKind("TPU v5p", 95 * GiB, 459e12, cores_per_chip_in_name=2),
    "v6e": DeviceKind("TPU v6 lite", 32 * GiB, 918e12),
    "a100": DeviceKind("NVIDIA A100-SXM4-80GB", 80 * 10**9, 312e12, chips_per_host=8,
                       usable_fraction=0.75),
    "h100": DeviceKind("NVIDIA H100 80GB HBM3", 80 * 10**9, 989e12, chips_per_host=8,
                       usable_fraction=0.75),
    "h200": DeviceKind("NVIDIA H200", 141 * 10**9, 989e12, chips_per_host=8, usable_fraction=0.75),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e"}
_TPU_NAME = re.compile(r"^(?P<kind>v4|v5e|v5litepod|v5p|v6e)-(?P<n>\d+)$")
_GPU_NAME = re.compile(r"^(?P<kind>a100|h100|h200)(?:x(?P<n>\d+))?$")
VALID_TARGETS = ("v4-8, v4-32, v5e-64 (or v5litepod-64), v5p-128, v6e-64, h100, h100x8, h200, "
                 "a100x8, cpu or local")


@dataclasses.dataclass(frozen=True)
class Target:
    """A set of identical devices to plan for: ``devices`` of ``kind`` on ``hosts`` hosts."""

    name: str
    kind: DeviceKind
    devices: int
    hosts: int

    @property
    def usable_memory(self) -> int:
        """Bytes per device a training step may use."""
        return int(self.kind.memory * self.kind.usable_fraction)

    def describe(self) -> str:
        return (f"{self.name}: {self.devices} x {self.kind.name} ({self.kind.memory / GiB:.0f} GiB, "
                f"{self.usable_memory / GiB:.1f} GiB usable) on {self.hosts} host(s)")


def parse_target(name: str) -> Target:
    """A named slice or GPU host (see the module docstring); ``cpu``/``local``: see local_target."""
    text = name.strip().lower()
    if text in ("", "local", "cpu"):
        return local_target()
    if match := _TPU_NAME.match(text):
        key = _ALIASES.get(match["kind"], match["kind"])
        kind = DEVICE_KINDS[key]
        cores = int(match["n"])
        if cores % kind.cores_per_chip_in_name:
            raise ValueError(f"bad accelerator {name!r}: {key} names count TensorCores, an even "
                             f"number; valid: {VALID_TARGETS}")
        chips = cores // kind.cores_per_chip_in_name
        return Target(text, kind, chips, max(1, math.ceil(chips / kind.chips_per_host)))
    if match := _GPU_NAME.match(text):
        kind = DEVICE_KINDS[match["kind"]]
        count = int(match["n"] or 1)
        return Target(text, kind, count, max(1, math.ceil(count / kind.chips_per_host)))
    raise ValueError(f"unknown accelerator {name!r}; valid: {VALID_TARGETS}")


def kind_of_device(device_kind: str) -> DeviceKind | None:
    """The table entry for a ``jax.Device.device_kind`` string, or None (e.g. a CPU)."""
    text = device_kind.lower()
    for key in sorted(DEVICE_KINDS, key=lambda k: len(DEVICE_KINDS[k].name), reverse=True):
        kind = DEVICE_KINDS[key]
        if kind.name.lower() in text or (key in ("h100", "h200", "a100") and key in text):
            return kind
    if "tpu v5e" in text:
        return DEVICE_KINDS["v5e"]
    if "tpu v6e" in text:
        return DEVICE_KINDS["v6e"]
    if "tpu v5" in text:  # "TPU v5" is how some runtimes name v5p
        return DEVICE_KINDS["v5p"]
    return None


def local_target() -> Target:
    """The devices JAX sees on this machine; CPUs count the host's RAM as device memory."""
    import jax
    import psutil

    devices = jax.devices()
    first = devices[0]
    kind = kind_of_device(first.device_kind)
    if kind is None:  # CPU (or an accelerator missing from the table): host RAM, no known peak
        memory = psutil.virtual_memory().total // max(1, len(jax.local_devices()))
        kind = DeviceKind(first.device_kind, memory, 0.0, chips_per_host=len(jax.local_devices()),
                          usable_fraction=0.8, flash_attention=False)
    else:
        stats = first.memory_stats() or {}
        if stats.get("bytes_limit"):  # the runtime's own limit (e.g. after JAX's preallocation)
            kind = dataclasses.replace(kind, memory=int(stats["bytes_limit"]), usable_fraction=0.95)
    return Target("local", kind, len(devices), jax.process_count())
