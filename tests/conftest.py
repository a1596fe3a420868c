"""Test session set-up, before jax is imported: 8 fake CPU devices and fast XLA compilation.

The test models are tiny, so compiling dominates their cost; the XLA CPU backend's expensive
optimisation passes are switched off for the tests (never for training or the benchmarks).
Child processes started by tests get the same compile flags through ``subprocess_env.cpu_env``,
so their numbers are bit-comparable with this process's.
"""

import os

from subprocess_env import cpu_env

os.environ.update(cpu_env(device_count=8, base=os.environ))
