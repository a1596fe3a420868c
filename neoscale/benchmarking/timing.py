"""Wall-clock timing of jitted calls: compile time from JAX's own events, steps to completion."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax

# JAX records these durations for every jit compilation (tracing, lowering to MLIR, XLA compile).
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


@contextlib.contextmanager
def compile_seconds() -> Iterator[list[float]]:
    """Collects the trace + lower + XLA-compile seconds of every jit compiled inside the block.

    Yields a one-element list that holds the total once the block exits.
    """
    total = [0.0]

    def listener(event: str, duration_secs: float, **kwargs: Any) -> None:
        if event in COMPILE_EVENTS:
            total[0] += duration_secs

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield total
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def time_calls(call: Callable[[], Any], steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls, each timed until ``jax.block_until_ready`` returns."""
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(call())
        seconds.append(time.perf_counter() - start)
    return seconds


def median(values: list[float]) -> float:
    return float(statistics.median(values))
