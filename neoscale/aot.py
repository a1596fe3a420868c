"""Ahead-of-time compilation of a planned run for chips this machine does not have.

    verdict = aot.check(model, seq_len=2048, batch_size=256, micro_batches=2, mesh="",
                        target=hardware.parse_target("v4-32"))
    verdict.fits, verdict.train_bytes, verdict.eval_bytes   # per device, from the compiler

The real train step (``neoscale.training.step.make_train_step``: AdamW, clipping, gradient
accumulation, donation) and the evaluation step are lowered on abstract arguments with their
shardings over the target's compile-only devices and compiled by the target's own compiler:

* TPU slices: libtpu (``pip install neoscale[tpu]``) builds the slice's topology
  (``jax.experimental.topologies.get_topology_desc``, e.g. ``v4:2x2x4`` with chip config
  ``megacore``). Its compiler refuses a program over the chip's memory (RESOURCE_EXHAUSTED).
* GPU hosts: the CUDA plugin (``pip install neoscale[cuda]``) compiles for an XLA
  ``GpuTargetConfigProto`` (``hardware.gpu_target_config``). It never refuses: the program fits
  when its bytes are within what JAX preallocates (``Target.usable_memory``).

Bytes per device are ``memory_analysis()``'s argument + output - alias + temp. Verdicts are cached
in a small JSON file (``$NEOSCALE_COMPILE_CACHE``, default ``~/.cache/neoscale/compile.json``) keyed
by the model, shapes, mesh, target, the source of the step and the jax / libtpu / plugin versions,
so a re-plan is instant. One compile of a 125M-1.3B step takes ~12 s for a GPU and 2-5 minutes for
a TPU on 2 cores; a TPU refusal ~25 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp

from neoscale.hardware import Target, gpu_target_config
from neoscale.model import ModelConfig

EVAL_MICRO_BATCHES = 2  # stacked held-out batches in the compiled evaluation (a real scan)
_SOURCES = ("model", "training/step.py", "training/state.py", "training/optimizer.py", "sharding")
INSTALL_HINT = {"tpu": 'pip install "neoscale[tpu]" (libtpu, ~680 MB)',
                "gpu": 'pip install "neoscale[cuda]" (the CUDA plugin and cuDNN, ~1.6 GB)'}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the target's compiler said about one planned run (bytes per device)."""

    fits: bool
    train_bytes: int | None  # argument + output - alias + temp of the train step
    eval_bytes: int | None  # the same for the evaluation step
    limit: int  # bytes per device the program may use
    seconds: float  # compile time of both steps (0 when cached)
    error: str = ""  # the compiler's refusal (or failure), one line
    cached: bool = False
    # The compiler failed for another reason than memory (e.g. a GPU compile that needs CUDA
    # libraries this host lacks): no verdict on the memory, and never cached.
    failed: bool = False

    @property
    def bytes(self) -> int | None:
        known = [b for b in (self.train_bytes, self.eval_bytes) if b is not None]
        return max(known) if known else None

    def describe(self) -> str:
        if self.failed:
            return f"compile failed: {self.error}"
        if self.error:
            return f"refused: {self.error}"
        return f"{self.bytes / 2**30:.1f} GiB" + ("" if self.fits else " (over)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@functools.cache
def target_devices(platform: str, topology: str, chip_config: str = "default",
                   chips_per_host_bounds: tuple[int, int, int] = (2, 2, 1),
                   gpu_kind: str = "h100") -> tuple:
    """Compile-only devices of a TPU slice (libtpu) or of GPU hosts (the CUDA plugin)."""
    from jax.experimental import topologies

    if platform == "tpu" and jax.default_backend() != "tpu":
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # libtpu's lockfile: compile only
    try:
        if platform == "tpu":
            desc = topologies.get_topology_desc(
                topology_name=topology, platform="tpu", chip_config_name=chip_config,
                chips_per_host_bounds=chips_per_host_bounds, num_slices=1)
        else:
            desc = topologies.get_topology_desc(
                platform="cuda", topology_name="", target_config=gpu_target_config(gpu_kind),
                topology=topology)
    except Exception as error:  # noqa: BLE001 - a missing plugin surfaces as many error types
        reason = " ".join(str(error).split())[:200]
        raise ValueError(f"cannot build the {topology} topology here ({reason}); install the "
                           f"compiler: {INSTALL_HINT.get(platform, '')}") from None
    return tuple(desc.devices)


def devices_for(target: Target) -> tuple:
    kind = target.kind
    if kind.platform == "tpu":
        return target_devices("tpu", target.topology, kind.chip_config, target.chips_per_host_bounds)
    if kind.platform == "gpu":
        gpu = next(key for key in ("h200", "h100", "a100") if key in target.name)
        return target_devices("gpu", target.topology, gpu_kind=gpu)
    return tuple(jax.devices())


def versions() -> dict[str, str]:
    """jax and the compiler packages whose versions change a verdict."""
    out = {}
    for package in ("jax", "jaxlib", "libtpu", "jax-cuda12-pjrt", "nvidia-cudnn-cu12"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[package] = importlib.metadata.version(package)
    return out


@functools.cache
def source_hash() -> str:
    """Hash of the code that defines the compiled step (model, step, state, optimizer, sharding)."""
    root = pathlib.Path(__file__).parent
    digest = hashlib.sha256()
    for name in _SOURCES:
        path = root / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def cache_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("NEOSCALE_COMPILE_CACHE")
                        or pathlib.Path.home() / ".cache" / "neoscale" / "compile.json")


def cache_key(model: ModelConfig, seq_len: int, batch_size: int, micro_batches: int,
              mesh: dict[str, int], target: Target) -> str:
    key = {"model": model.to_dict(), "seq_len": seq_len, "batch_size": batch_size,
           "micro_batches": micro_batches, "mesh": mesh, "target": target.name,
           "usable": target.usable_memory, "source": source_hash(), "versions": versions()}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _read_cache() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, verdict: Verdict) -> None:
    path = cache_path()
    entries = _read_cache()
    entries[key] = dataclasses.asdict(verdict) | {"cached": False}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
    tmp.replace(path)


def memory_bytes(compiled) -> int:
    """Bytes per device of a compiled program: argument + output - alias + temp."""
    stats = compiled.memory_analysis()
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
               - stats.alias_size_in_bytes + stats.temp_size_in_bytes)


def lower(model: ModelConfig, seq_len: int, batch_size: int, micro_batches: int,
          mesh: dict[str, int] | str, devices, eval_batch_size: int | None = None):
    """(lowered train step, lowered evaluation step) of the real training code on ``devices``.

    ``batch_size`` sequences per optimizer step (global) in ``micro_batches`` slices; the
    evaluation holds ``eval_batch_size`` sequences at a time (default: one micro-batch).
    """
    import optax

    from neoscale.sharding import batch_sharding, make_mesh
    from neoscale.training.optimizer import make_optimizer, weight_decay_mask
    from neoscale.training.state import ModelParams, abstract_state
    from neoscale.training.step import make_evaluate, make_train_step, stacked_batch_sharding

    spec = mesh if isinstance(mesh, str) else ",".join(f"{k}:{v}" for k, v in mesh.items())
    device_mesh = make_mesh(spec, list(devices))
    model_params = ModelParams(model, seed=0)
    schedule = optax.constant_schedule(1e-4)
    optimizer = make_optimizer(schedule, weight_decay_mask(model_params.logical_specs))
    state = abstract_state(model_params, optimizer, device_mesh)
    shardings = jax.tree.map(lambda s: s.sharding, state)
    tokens = jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32,
                                  sharding=batch_sharding(device_mesh))
    train = make_train_step(model_params, optimizer, schedule, device_mesh, shardings, micro_batches)
    lowered_train = train.lower(state, {"inputs": tokens, "targets": tokens})
    eval_batch = eval_batch_size or batch_size // micro_batches
    stacked = stacked_batch_sharding(device_mesh)
    shape = (EVAL_MICRO_BATCHES, eval_batch, seq_len)
    batches = {"inputs": jax.ShapeDtypeStruct(shape, jnp.int32, sharding=stacked),
               "targets": jax.ShapeDtypeStruct(shape, jnp.int32, sharding=stacked),
               "mask": jax.ShapeDtypeStruct(shape, jnp.float32, sharding=stacked)}
    evaluate = make_evaluate(model_params, device_mesh, shardings.params)
    return lowered_train, evaluate.lower(state.params, batches)


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    if "RESOURCE_EXHAUSTED" in text:
        text = text[text.index("RESOURCE_EXHAUSTED"):]
    return text[:300]


def is_out_of_memory(error: BaseException | str) -> bool:
    """Whether ``error`` is a compiler's or runtime's out-of-memory (deterministic on every host)."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def compile_run(model: ModelConfig, seq_len: int, batch_size: int, micro_batches: int,
                mesh: dict[str, int] | str, target: Target) -> Verdict:
    """Compiles the run's train and evaluation steps for ``target`` (no cache)."""
    devices = devices_for(target)
    start = time.monotonic()
    train_bytes = eval_bytes = None
    try:
        lowered_train, lowered_eval = lower(model, seq_len, batch_size, micro_batches, mesh,
                                            devices)
        train_bytes = memory_bytes(lowered_train.compile())
        eval_bytes = memory_bytes(lowered_eval.compile())
    except Exception as error:  # noqa: BLE001 - XlaRuntimeError (jaxlib), ValueError ...
        if isinstance(error, ValueError) and not is_out_of_memory(error):
            raise  # a bad configuration or mesh: the caller's one-line error
        return Verdict(False, train_bytes, eval_bytes, target.kind.memory,
                       time.monotonic() - start, error=_one_line(error),
                       failed=not is_out_of_memory(error))
    # libtpu refuses what exceeds the chip (its own limit, a little under its HBM); the GPU
    # compiler accepts anything, so its bytes are compared with what JAX preallocates.
    tpu = target.kind.platform == "tpu"
    limit = target.kind.memory if tpu else target.usable_memory
    fits = tpu or max(train_bytes, eval_bytes) <= limit
    return Verdict(fits, train_bytes, eval_bytes, limit, time.monotonic() - start)


def check(model: ModelConfig, seq_len: int, batch_size: int, micro_batches: int,
          mesh: dict[str, int], target: Target, *, use_cache: bool = True) -> Verdict:
    """``compile_run``'s verdict, from the cache when this exact run was compiled before."""
    key = cache_key(model, seq_len, batch_size, micro_batches, mesh, target)
    if use_cache and key in (entries := _read_cache()):
        return Verdict(**(entries[key] | {"cached": True}))
    verdict = compile_run(model, seq_len, batch_size, micro_batches, mesh, target)
    if not verdict.failed:
        _write_cache(key, verdict)
    return verdict


def has_custom_call(lowered_or_compiled, target_name: str) -> bool:
    """Whether the program calls ``target_name`` (``tpu_custom_call`` for a Mosaic kernel such as
    splash, ``__cudnn$fmha`` for cuDNN attention)."""
    return target_name in lowered_or_compiled.as_text()


__all__ = ["Verdict", "check", "compile_run", "devices_for", "has_custom_call", "is_out_of_memory",
           "lower", "memory_bytes"]
