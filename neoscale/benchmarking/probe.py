"""The measured matmul peak of a device without a datasheet entry (a CPU): MFU's denominator there."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from neoscale.benchmarking.timing import median, time_calls


def matmul_flops_per_second(size: int = 2048, dtype: str = "float32", repeats: int = 10,
                            device: jax.Device | None = None) -> float:
    """FLOP/s of a jitted [size, size] @ [size, size] matmul (2 size^3 FLOPs), median of repeats."""
    device = device or jax.devices()[0]
    keys = jax.random.split(jax.random.key(0))
    a, b = (jax.device_put(jax.random.normal(k, (size, size), dtype), device) for k in keys)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))  # compile and warm up
    seconds = median(time_calls(lambda: matmul(a, b), repeats))
    return 2.0 * size**3 / seconds
