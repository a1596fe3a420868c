"""The compiled train step of dense and routed 125M on an accelerator target, from this host.

  python benchmarks/moe_targets.py --target=v5e-64 [--sizes=125M,125M-e8k1,125M-e32k1]
      [--moe_dispatch=auto,blocked,ragged] [--micro_batches=1]

(in a venv with the target's compiler: ``pip install "neoscale[tpu,cuda]"``). Each size is set up
as ``python -m neoscale.run --sizes=... --dry_run --accelerator=TARGET`` sets it up
(experiments/gpt_neo.py: bfloat16, seq_len 2048, GPT-3's batch, all-fsdp mesh, remat none) and its
train step is compiled through ``neoscale.aot.lower`` for the target's compile-only devices. Per
row: the dispatch the routed layer runs, micro-batches, the compiled bytes per device
(``aot.memory_bytes``), the planner's estimate (``runner.memory.estimate``) and their ratio,
the FLOPs of the program's dots per device with every loop iteration counted
(``benchmarking.hlo.dot_flops``; '-' on a TPU, whose matmuls compile to convolutions and Mosaic
kernels the reader does not count), ``cost_analysis()``'s FLOPs (each while-loop body counted once:
low for scanned programs) and bytes accessed, and the bytes each kind of collective produces per
device per step (``benchmarking.hlo.collective_bytes``, loop trip counts applied).
Where the compiler's cost analysis has a time (``optimal_seconds``), it is printed as an
estimate from the compiled program, never a measurement. The last line is one JSON object.
A TPU compile takes minutes on 2 cores; a refusal (over the chip's memory) is a row too.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

from absl import app, flags

_TARGET = flags.DEFINE_string("target", "v5e-64", "Accelerator target, e.g. v5e-64, h100x8.")
_SIZES = flags.DEFINE_list("sizes", ["125M", "125M-e8k1", "125M-e32k1"], "Sizes to compile.")
_DISPATCH = flags.DEFINE_list("moe_dispatch", ["auto"], "Dropless dispatches of the routed sizes "
                              "(auto, blocked, ragged); a dense size compiles once.")
_MICRO_BATCHES = flags.DEFINE_integer("micro_batches", 1, "Gradient-accumulation micro-batches.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 2048, "Tokens per sequence.")
_HLO_DIR = flags.DEFINE_string("hlo_dir", None, "Write each compiled program's HLO text here.")

GiB = 2**30


def compile_row(size: str, dispatch: str, target, micro_batches: int, seq_len: int) -> dict:
    """One compiled train step's figures (bytes per device)."""
    from neoscale import aot
    from neoscale.benchmarking.hlo import collective_bytes, dot_flops
    from neoscale.data import tokenizer
    from neoscale.model.moe import resolve_dispatch
    from neoscale.runner import memory
    from neoscale.runner.plan import model_for
    from neoscale.sharding.mesh import parse_mesh
    from neoscale.training import hparams

    model = model_for(size, {"dtype": "bfloat16", "moe_dispatch": dispatch},
                      tokenizer.vocab_size_of("gpt2"))
    mesh = parse_mesh("", target.devices)
    batch_shards = mesh["data"] * mesh["fsdp"]
    batch_size = hparams.resolve_batch_size(model, seq_len, None, batch_shards * micro_batches)
    per_device = batch_size // batch_shards // micro_batches
    platform = target.kind.platform
    estimate = memory.estimate(model, seq_len, per_device, mesh["fsdp"] * mesh["tensor"] * mesh["expert"],
                               micro_batches, platform=platform)
    row = {"size": size, "dispatch": resolve_dispatch(dispatch, platform) if model.is_moe else "-",
           "micro_batches": micro_batches, "batch_size": batch_size,
           "estimate_gib": estimate.train / GiB}
    start = time.monotonic()
    try:
        lowered, _ = aot.lower(model, seq_len, batch_size, micro_batches, mesh, aot.devices_for(target))
        compiled = lowered.compile()
    except Exception as error:  # noqa: BLE001 - a refusal (RESOURCE_EXHAUSTED) is a finding
        row["error"] = " ".join(str(error).split())[:240]
        row["compile_s"] = time.monotonic() - start
        return row
    row["compile_s"] = time.monotonic() - start
    row["compiled_gib"] = aot.memory_bytes(compiled) / GiB
    row["ratio"] = row["estimate_gib"] / row["compiled_gib"]
    stats = compiled.memory_analysis()
    row["temp_gib"] = stats.temp_size_in_bytes / GiB
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, list | tuple) else cost) or {}
    row["flops"] = float(cost.get("flops", float("nan")))
    row["bytes_accessed"] = float(cost.get("bytes accessed", float("nan")))
    if float(cost.get("optimal_seconds", -1)) > 0:  # libtpu 0.0.42 reports a negative one
        row["compiled_program_time_estimate_s"] = float(cost["optimal_seconds"])
    hlo = compiled.as_text()
    row["dot_flops"] = dot_flops(hlo)
    row["collective_bytes"] = collective_bytes(hlo)
    if _HLO_DIR.value:
        pathlib.Path(_HLO_DIR.value).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(_HLO_DIR.value) / f"{target.name}_{size}_{row['dispatch']}.hlo").write_text(hlo)
    return row


def print_table(rows: list[dict], target) -> None:
    kinds = ("all-to-all", "all-gather", "reduce-scatter", "all-reduce")
    print(f"\n{target.name}: {target.devices} x {target.kind.name}, "
          f"{target.usable_memory / GiB:.1f} GiB usable per device")
    print("| size | dispatch | micro-batches | compiled GiB | estimate GiB | estimate / compiled | "
          "dot TFLOPs per device | cost_analysis TFLOPs | GB accessed | "
          + " | ".join(f"{k} GB" for k in kinds) + " |")
    print("|---|---|---|---|---|---|---|---|---|" + "---|" * len(kinds))
    for row in rows:
        if "error" in row:
            print(f"| {row['size']} | {row['dispatch']} | {row['micro_batches']} | refused: "
                  f"{row['error'][:120]} | {row['estimate_gib']:.1f} | - | - | - |" + " - |" * len(kinds))
            continue
        coll = row["collective_bytes"]
        print(f"| {row['size']} | {row['dispatch']} | {row['micro_batches']} | {row['compiled_gib']:.2f} | "
              f"{row['estimate_gib']:.2f} | {row['ratio']:.2f} | "
              f"{f'{dot:.1f}' if (dot := row['dot_flops'] / 1e12) else '-'} | "
              f"{row['flops'] / 1e12:.1f} | "
              f"{row['bytes_accessed'] / 1e9:.0f} | "
              + " | ".join(f"{coll[k] / 1e9:.2f}" for k in kinds) + " |")
    timed = [row for row in rows if "compiled_program_time_estimate_s" in row]
    if not timed:
        print("No step time: the compiler's cost analysis gives none (libtpu's optimal_seconds is negative).")
    for row in timed:
        print(f"{row['size']} {row['dispatch']}: step time, estimate from the compiled program: "
              f"{row['compiled_program_time_estimate_s']:.3f} s")


def main(argv):
    del argv
    from neoscale import hardware
    from neoscale.presets import model_config

    target = hardware.parse_target(_TARGET.value)
    rows = []
    for size in _SIZES.value:
        dispatches = _DISPATCH.value if model_config(size).is_moe else ["auto"]
        for dispatch in dispatches:
            row = compile_row(size, dispatch, target, _MICRO_BATCHES.value, _SEQ_LEN.value)
            print(f"[{size} {row['dispatch']}] {row.get('compiled_gib', float('nan')):.1f} GiB compiled, "
                  f"estimate {row['estimate_gib']:.1f} GiB, {row['compile_s']:.0f} s"
                  + (f" ({row['error'][:160]})" if "error" in row else ""), file=sys.stderr, flush=True)
            rows.append(row)
    print_table(rows, target)
    print(json.dumps({"target": target.name, "rows": rows}))


if __name__ == "__main__":
    import jax

    jax.config.update("jax_platforms", "cpu")  # compile-only target devices; no local accelerator
    app.run(main)
