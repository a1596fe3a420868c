"""Pieces of ``python -m neoscale.bench``: timing, the CPU matmul probe, memory, the reference step."""
