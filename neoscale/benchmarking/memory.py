"""Peak memory: the accelerator allocator's peak, or the host process's peak RSS on a CPU; and the
host's page faults (fresh pages the kernel zero-fills when an allocator hands memory back and
takes it again)."""

from __future__ import annotations

import resource
import sys

import jax


def peak_memory_bytes(devices: list[jax.Device]) -> tuple[int, str]:
    """(bytes, source). Summed ``peak_bytes_in_use`` over ``devices`` where the backend reports
    it (GPU, TPU); otherwise this process's peak resident set size (``"host_rss_peak"``)."""
    stats = [device.memory_stats() for device in devices]
    if all(s and "peak_bytes_in_use" in s for s in stats):
        return sum(int(s["peak_bytes_in_use"]) for s in stats), "device_peak_bytes_in_use"
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(max_rss if sys.platform == "darwin" else max_rss * 1024), "host_rss_peak"


def minor_page_faults() -> int:
    """This process's minor page faults so far: each is one page the kernel mapped (and, for fresh
    memory, zeroed) on first touch. Counted around timed steps, a steady per-step figure means the
    allocator returns its buffers to the kernel every step and pays to fault them back in."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
