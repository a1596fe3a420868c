"""What a layer keeps for its backward pass, and what the TPU compiler makes of one step.

  python benchmarks/layer_memory.py [--sizes 125M,1.3B,125M-e8k2] [--seq_len 2048]
  JAX_PLATFORMS=cpu python benchmarks/layer_memory.py --tpu v5e:2x2 [--tpu_size 125M]

Prints, for each size and platform (tpu: splash, gpu: cuDNN, cpu: blocked attention) and each
remat policy, the bytes per token per layer that ``neoscale.accounting.saved_residual_bytes``
counts from the model's jaxpr (bf16, no device). With ``--tpu`` (needs ``libtpu``, e.g. from
``pip install "jax[tpu]==0.10.2"``) it also compiles the gradient of ``--tpu_size`` for that
Cloud TPU topology on this host (fsdp over its chips, one sequence per chip, splash) and prints
XLA's temporaries, the count of splash's Mosaic kernels and any collective with a
vocabulary-sized dimension inside a loop (``neoscale.benchmarking.hlo.loop_collectives``).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from neoscale.accounting import saved_residual_bytes
from neoscale.benchmarking.hlo import loop_collectives
from neoscale.model.config import REMAT_POLICIES
from neoscale.presets import model_config


def residual_table(sizes: list[str], seq_len: int) -> None:
    print(f"| size | platform | {' | '.join(REMAT_POLICIES)} |")
    print("|---|---|" + "---|" * len(REMAT_POLICIES))
    for size in sizes:
        config = model_config(size, dtype="bfloat16")
        for platform in ("tpu", "gpu", "cpu"):
            cells = []
            for remat in REMAT_POLICIES:
                kept = saved_residual_bytes(config, seq_len, remat, platform)["per_token_layer"]
                cells.append(f"{kept:,.0f} B = {kept / config.d_model:.1f}·d")
            print(f"| {size} | {platform} | {' | '.join(cells)} |")


def tpu_compile(topology: str, size: str, seq_len: int) -> None:
    from jax.experimental import topologies

    from neoscale.sharding import batch_sharding, sharding_context
    from neoscale.training.state import ModelParams
    from neoscale.training.step import loss_fn

    topo = topologies.get_topology_desc(topology_name=topology, platform="tpu",
                                        chip_config_name="default", chips_per_host_bounds=(2, 2, 1),
                                        num_slices=1)
    chips = len(topo.devices)
    mesh = jax.sharding.Mesh(np.array(topo.devices).reshape(1, chips, 1, 1),
                             ("data", "fsdp", "expert", "tensor"),
                             axis_types=(jax.sharding.AxisType.Auto,) * 4)
    config = model_config(size, dtype="bfloat16")
    params = ModelParams(config, 0)
    shardings = params.shardings(mesh)
    abstract = {name: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=shardings[name])
                for name, s in params.shapes.items()}
    batch = {name: jax.ShapeDtypeStruct((chips, seq_len), jnp.int32, sharding=batch_sharding(mesh))
             for name in ("inputs", "targets")}

    def grads(p, b):
        return jax.grad(lambda p: loss_fn(p, params, b)[0])(p)

    start = time.time()
    with sharding_context(mesh):
        compiled = jax.jit(grads, out_shardings=shardings).lower(abstract, batch).compile()
    memory = compiled.memory_analysis()
    hlo = compiled.as_text()
    vocab_rows = {config.vocab_size, config.padded_vocab_size}
    print(f"{size} gradient, {topology} (fsdp:{chips}), bf16, {chips} x {seq_len} tokens: "
          f"temporaries {memory.temp_size_in_bytes / 2**30:.2f} GiB, arguments "
          f"{memory.argument_size_in_bytes / 2**30:.2f} GiB; splash kernels (tpu_custom_call): "
          f"{hlo.count('tpu_custom_call')}; vocabulary-sized collectives in loops: "
          f"{[c for c in loop_collectives(hlo) if vocab_rows & set(c[1])]}; "
          f"compiled in {time.time() - start:.0f} s (host load not controlled)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="125M,1.3B,125M-e8k2")
    parser.add_argument("--seq_len", type=int, default=2048)
    parser.add_argument("--tpu", default=None, help="a Cloud TPU topology, e.g. v5e:2x2")
    parser.add_argument("--tpu_size", default="125M")
    args = parser.parse_args()
    if args.tpu:
        tpu_compile(args.tpu, args.tpu_size, args.seq_len)
    else:
        residual_table(args.sizes.split(","), args.seq_len)


if __name__ == "__main__":
    main()
