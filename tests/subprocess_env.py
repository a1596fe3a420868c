"""Environment for test processes: CPU only, fast XLA compilation, a chosen fake device count."""

import os
from collections.abc import Mapping

FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def cpu_env(device_count: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default os.environ) whose XLA_FLAGS hold the test compile flags and,
    unless ``device_count`` is None (one device, as on a laptop), that many fake CPU devices."""
    env = dict(os.environ if base is None else base)
    flags = [flag for flag in env.get("XLA_FLAGS", "").split()
             if not flag.startswith("--xla_force_host_platform_device_count")
             and flag not in FAST_COMPILE_FLAGS.split()]
    flags.append(FAST_COMPILE_FLAGS)
    if device_count is not None:
        flags.append(f"--xla_force_host_platform_device_count={device_count}")
    env.update(XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    return env
