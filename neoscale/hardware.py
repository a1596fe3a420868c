"""Accelerators a study can be planned for: memory and peak FLOP/s per device, and slice names.

One table (datasheet figures, REFERENCE.md §6) serves the planner's memory check and MFU. A target
is named like Cloud TPU accelerator types or a GPU count:

* ``v4-32`` (v4 and v5p names count TensorCores: 2 per chip, so v4-32 is 16 chips on 4 hosts),
  ``v5e-64`` / ``v5litepod-64`` and ``v6e-64`` (named by chips), ``v5p-128``;
* ``h100``, ``h100x8``, ``h200``, ``a100x8`` (GPUs on one host);
* ``cpu`` (this host), or ``local``: the devices JAX sees here.

Each named target also says how to build it without owning it (``neoscale.aot``): a Cloud TPU
topology name and chip config for libtpu (``Target.topology``; MaxText's accelerator map), or an
XLA ``GpuTargetConfigProto`` for the CUDA plugin (``gpu_target_config``): XLA's H100 SXM
description ships in ``neoscale/gpu_targets``; the H200 and A100 are derived from it here with
their datasheet memory, bandwidth (and, for the A100, cores and compute capability).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
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
    # Its devices' platform (tpu, gpu or cpu): picks the attention kernel the plan counts (splash
    # on TPU, cuDNN flash on GPU) and the compiler that checks it (neoscale.aot).
    platform: str = "tpu"
    topology_prefix: str = ""  # libtpu's name for the generation ("v4" in "v4:2x2x4")
    chip_config: str = "default"  # libtpu: megacore = one device per chip (v4, v5p)
    topology_dims: int = 2  # 3-D torus (v4, v5p) or 2-D (v5e, v6e)
    # Local disk of one host, for the dry run's shard-storage check: a TPU VM's boot disk (100 GiB
    # unless created larger); None where it varies by machine type (GPU VMs' local SSDs).
    host_disk: int | None = 100 * GiB


DEVICE_KINDS: dict[str, DeviceKind] = {
    "v4": DeviceKind("TPU v4", 32 * GiB, 275e12, cores_per_chip_in_name=2, topology_prefix="v4",
                     chip_config="megacore", topology_dims=3),
    "v5e": DeviceKind("TPU v5 lite", 16 * GiB, 197e12, topology_prefix="v5e"),
    "v5p": DeviceKind("TPU v5p", 95 * GiB, 459e12, cores_per_chip_in_name=2, topology_prefix="v5",
                      chip_config="megacore", topology_dims=3),
    "v6e": DeviceKind("TPU v6 lite", 32 * GiB, 918e12, topology_prefix="v6e"),
    "a100": DeviceKind("NVIDIA A100-SXM4-80GB", 80 * 10**9, 312e12, chips_per_host=8,
                       usable_fraction=0.75, platform="gpu", host_disk=None),
    "h100": DeviceKind("NVIDIA H100 80GB HBM3", 80 * 10**9, 989e12, chips_per_host=8,
                       usable_fraction=0.75, platform="gpu", host_disk=None),
    "h200": DeviceKind("NVIDIA H200", 141 * 10**9, 989e12, chips_per_host=8, usable_fraction=0.75,
                       platform="gpu", host_disk=None),
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

    @property
    def topology(self) -> str:
        """libtpu's topology name ("v4:2x2x4", "v5e:8x8") for a TPU slice; "1x{hosts}x{per host}"
        (slices x hosts x devices per host) for GPU hosts."""
        if self.kind.platform == "gpu":
            return f"1x{self.hosts}x{self.devices // self.hosts}"
        if self.kind.platform != "tpu":
            raise ValueError(f"{self.name} is not a TPU slice or GPU host; name one with "
                             f"--accelerator ({VALID_TARGETS})")
        return f"{self.kind.topology_prefix}:" + "x".join(map(str, self.chip_grid))

    @property
    def chip_grid(self) -> tuple[int, ...]:
        return _torus(self.devices, self.kind.topology_dims)

    @property
    def chips_per_host_bounds(self) -> tuple[int, int, int]:
        """libtpu's host shape: 2x2x1 chips (a single host of a smaller slice: the slice)."""
        grid = (*self.chip_grid, 1)[:3]
        return (2, 2, 1) if self.devices >= 4 else (grid[0], grid[1], 1)


def parse_target(name: str) -> Target:
    """A named slice or GPU host (see the module docstring); ``cpu``/``local``: see local_target."""
    text = name.strip().lower()
    if text in ("", "local", "cpu"):
        return local_target()
    if match := _TPU_NAME.match(text):
        key = _ALIASES.get(match["kind"], match["kind"])
        kind = DEVICE_KINDS[key]
        cores = int(match["n"])
        if cores < 1:
            raise ValueError(f"bad accelerator {name!r}: a slice has at least one chip; valid: "
                             f"{VALID_TARGETS}")
        if cores % kind.cores_per_chip_in_name:
            raise ValueError(f"bad accelerator {name!r}: {key} names count TensorCores, an even "
                             f"number; valid: {VALID_TARGETS}")
        chips = cores // kind.cores_per_chip_in_name
        return Target(text, kind, chips, max(1, math.ceil(chips / kind.chips_per_host)))
    if match := _GPU_NAME.match(text):
        kind = DEVICE_KINDS[match["kind"]]
        count = int(match["n"] or 1)
        if count < 1:
            raise ValueError(f"bad accelerator {name!r}: a host has at least one GPU; valid: "
                             f"{VALID_TARGETS}")
        return Target(text, kind, count, max(1, math.ceil(count / kind.chips_per_host)))
    raise ValueError(f"unknown accelerator {name!r}; valid: {VALID_TARGETS}")


def _torus(chips: int, dims: int) -> tuple[int, ...]:
    """Chip grid of a slice, as Cloud TPU names it: 2-D for v5e/v6e (64 chips: 8x8), 3-D for
    v4/v5p (hosts of 2x2x1 chips; 16 chips: 2x2x4): the smallest axis doubles, the last on ties."""
    if chips < 1 or chips & (chips - 1):
        raise ValueError(f"a TPU slice of {chips} chips is not a power of two; valid: "
                         f"{VALID_TARGETS}")
    shape = [1] * dims
    if dims == 3 and chips >= 4:
        shape, chips = [2, 2, 1], chips // 4
    for _ in range(chips.bit_length() - 1):
        axis = max(i for i in range(dims) if shape[i] == min(shape))
        shape[axis] *= 2
    return tuple(shape)


GPU_TARGETS_DIR = pathlib.Path(__file__).with_name("gpu_targets")
_DERIVED_GPUS = {  # field -> value replacing the H100 SXM description's (datasheet figures)
    "h200": {"memory_bandwidth": "4800000000000", "device_memory_size": str(141 * 10**9),
             "name": '"NVIDIA H200"', "device_description_str": '"NVIDIA H200"',
             "model_str": '"sm_9.0a with 141000000000B RAM, 132 cores, 1980000KHz clock"'},
    "a100": {"memory_bandwidth": "2039000000000", "device_memory_size": "85899345920",
             "core_count": "108", "shared_memory_per_core": "167936",
             "shared_memory_per_block_optin": "166912", "l2_cache_size": "41943040",
             "clock_rate_ghz": "1.41", "major": "8", "platform_version": '"Compute Capability 8.0"',
             "name": '"NVIDIA A100-SXM4-80GB"', "device_description_str": '"NVIDIA A100-SXM4-80GB"',
             "model_str": '"sm_8.0 with 85899345920B RAM, 108 cores, 1410000KHz clock"',
             "active_links": "12"},
}


def gpu_target_config(kind: str) -> str:
    """XLA's GpuTargetConfigProto (text) for ``kind`` ("h100", "h200", "a100"): the H100 SXM
    description from openxla/xla, without the field jax 0.10.2 rejects; the others derived."""
    text = (GPU_TARGETS_DIR / "h100_sxm.txtpb").read_text()
    lines = [line for line in text.splitlines() if "collective_memory_granularity" not in line]
    changes = _DERIVED_GPUS.get(kind, {})
    if kind == "a100":  # sm_80 has no "a" feature set
        lines = [line for line in lines if "feature_extension" not in line]
    out = []
    for line in lines:
        field = line.strip().split(":")[0]
        if field in changes and ":" in line:
            line = line[:line.index(":") + 1] + " " + changes[field]
        out.append(line)
    return "\n".join(out) + "\n"


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
                          usable_fraction=0.8, platform="cpu", host_disk=None)
    else:
        stats = first.memory_stats() or {}
        if stats.get("bytes_limit"):  # the runtime's own limit (e.g. after JAX's preallocation)
            kind = dataclasses.replace(kind, memory=int(stats["bytes_limit"]), usable_fraction=0.95)
    return Target("local", kind, len(devices), jax.process_count())
