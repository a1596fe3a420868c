"""The routed layer's compiled train step on this host's 8 CPU devices: each device routes its own
tokens (no all-to-all), the backward pass keeps what the memory estimate counts (no per-block
copies of the expert weights), and the HLO reader counts every loop iteration."""

import jax
import jax.numpy as jnp

from neoscale import aot, presets
from neoscale.benchmarking.hlo import collective_bytes, dot_flops
from neoscale.runner import memory

SEQ, BATCH = 256, 64  # 8 sequences, 2,048 tokens per device


def compiled_step(size: str, **overrides):
    # float32: XLA's CPU compiler aborts on this bfloat16 routed step (jaxlib 0.10.2, "Invalid binary
    # instruction opcode copy"); the TPU and GPU compiles are benchmarks/moe_targets.py's.
    model = presets.model_config(size, vocab_size=512, max_positions=SEQ, window_size=64,
                                 dtype="float32", **overrides)
    lowered, _ = aot.lower(model, SEQ, BATCH, 1, "", jax.devices())
    return model, lowered.compile()


def test_dot_flops_and_collective_bytes_count_every_loop_iteration():
    """A scan of 5 matmuls [4, 8] x [8, 16] with a psum of [16] floats in each: cost_analysis
    counts the loop body once; the HLO reader 5 times."""
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((8,), ("x",))

    def step(carry, w):
        y = jax.lax.psum(carry @ w, "x")  # [4, 16]
        return y[:, :8], None

    def program(x, ws):
        return jax.lax.scan(step, x, ws)[0]

    mapped = jax.shard_map(program, mesh=mesh, in_specs=(P(), P()), out_specs=P(), check_vma=False)
    hlo = jax.jit(mapped).lower(jnp.ones((4, 8)), jnp.ones((5, 8, 16))).compile().as_text()
    assert dot_flops(hlo) == 5 * 2 * 4 * 16 * 8
    assert collective_bytes(hlo)["all-reduce"] == 5 * 4 * 16 * 4


def test_the_routed_step_keeps_what_the_estimate_counts():
    """w256d2h2e8k1 (blocked, the CPU's dispatch) at 2,048 tokens per device: no all-to-all
    (before ``per_batch_shard`` the block scan moved rows between devices every block), and the
    compiled bytes per device within 0.85-1.15x of the estimate, as the dense model's are (220 MiB
    against 240; dense 141 against 142). The block scan used to keep a [39 blocks, 256, 1024] copy
    of each expert weight, four per layer group: +164 MiB, a ratio of ~0.6."""
    ratios = {}
    for size in ("w256d2h2", "w256d2h2e8k1"):
        model, compiled = compiled_step(size, moe_dispatch="blocked")
        est = memory.estimate(model, SEQ, BATCH // 8, 8, 1, platform="cpu").train
        ratios[size] = est / aot.memory_bytes(compiled)
        if model.is_moe:
            assert collective_bytes(compiled.as_text())["all-to-all"] == 0
    assert 0.85 <= ratios["w256d2h2e8k1"] <= 1.15, ratios
    assert 0.85 <= ratios["w256d2h2"] <= 1.15, ratios
