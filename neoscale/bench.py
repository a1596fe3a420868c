r"""Benchmark of the train step: throughput, MFU, compile time and memory, optionally beside the
reference GPT-Neo (``transformers``, PyTorch).

    python -m neoscale.bench --size=w512d8h8 --batch_size=8 --seq_len=512 --compare=reference
    python -m neoscale.bench --size=w256d4h4 --seq_len=256 --depths=4,16,64
    python -m neoscale.bench --size=1.3B --seq_len=2048 --batch_size=8 --dtype=bfloat16
    python -m neoscale.bench --sizes=w256d4h4,w256d4h4e8k1,w256d4h4e32k1 --seq_len=256 --data=synthetic

Prints a table and one JSON line per benchmarked depth. Conventions:

* ``model_tflops``: the accounting module's training FLOPs (``neoscale.accounting``, convention
  'neoscale': LM head and causal/local mean keys counted, training = 3 x forward) times
  tokens per second. ``mfu`` = model_tflops / peak_tflops.
* ``peak_tflops``: the datasheet peak of the devices for the compute dtype
  (``accounting.device_peak_flops``, summed over the mesh), or on a CPU (or a device missing from
  the table) a float32 [2048]^3 jitted matmul (``--probe_size``) measured in the same run (``peak_source``).
* ``step_seconds``: median over ``--steps`` steps after ``--warmup_steps``, each timed until
  ``jax.block_until_ready`` returns; ``compile_seconds``: trace + lowering + XLA compilation of
  the step, from JAX's compilation events.
* ``peak_memory_bytes``: the allocator's peak on GPU/TPU; on a CPU the process's peak resident
  set size (a whole-process figure: it includes everything the process has held).
* ``host_page_faults_per_step`` (and the reference's): the process's minor page faults per timed
  step. On Linux, glibc maps allocations above its mmap threshold (at most 32 MiB) afresh and
  unmaps them when freed, so XLA's per-step temporaries (and PyTorch's activations) are
  zero-filled again every step, one 4 KiB page at a time; ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
  makes those 2 MiB pages. Both sides of ``--compare=reference`` run in the same process and
  environment (see benchmarks/RESULTS.md for what the setting does to each).
"""

from __future__ import annotations

import json
import os

import jax
from absl import app, flags, logging

from neoscale import accounting, presets
from neoscale.benchmarking.memory import peak_memory_bytes
from neoscale.benchmarking.probe import matmul_flops_per_second
from neoscale.benchmarking.timing import median
from neoscale.benchmarking.train_step import (
    TrainStepRunner,
    peak_learning_rate,
    time_interleaved,
    time_train_step,
)
from neoscale.data import DataConfig, check_seq_len, measure_throughput, prepare
from neoscale.model import ModelConfig
from neoscale.model.config import DTYPES, REMAT_POLICIES
from neoscale.sharding import MESH_AXES, batch_divisor, describe, make_mesh
from neoscale.training.synthetic import SyntheticData

FLOPS_CONVENTION = f"neoscale.accounting, convention 'neoscale': {accounting.CONVENTIONS['neoscale']}"
DATA_BATCHES = 50

_SIZE = flags.DEFINE_string("size", "w512d8h8", "model size (neoscale.presets): " + presets.VALID_FORMS)
_SIZES = flags.DEFINE_list("sizes", None, "several model sizes, e.g. w256d4h4,w256d4h4e8k1: timed "
                           "side by side, interleaved (replaces --size)")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "global batch size (sequences per step)")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 512, "tokens per sequence")
_MESH = flags.DEFINE_string("mesh", "", "device mesh over the axes " + ", ".join(MESH_AXES)
                            + ", e.g. data:2,fsdp:4; empty = every device on fsdp")
_DTYPE = flags.DEFINE_enum("dtype", "float32", [d for d in DTYPES if d != "float16"],
                           "compute dtype (parameters and optimizer state stay float32)")
_REMAT = flags.DEFINE_enum("remat", "none", list(REMAT_POLICIES), "rematerialisation policy")
_STEPS = flags.DEFINE_integer("steps", 20, "timed steps (the median is reported)")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 3, "untimed steps after compilation")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", None, "vocabulary size (default: the preset's)")
_PROFILE = flags.DEFINE_string("profile", None, "write a JAX profiler trace of a few steps here")
_COMPARE = flags.DEFINE_enum("compare", None, ["reference"],
                             "also time the transformers GPT-Neo training step (PyTorch, CPU)")
_REFERENCE_STEPS = flags.DEFINE_integer("reference_steps", 5, "timed reference steps")
_DEPTHS = flags.DEFINE_string("depths", None, "comma-separated layer counts, e.g. 4,16,64: one "
                              "benchmark (and JSON line) per depth, to show compile time vs depth")
_DATA = flags.DEFINE_enum("data", "builtin", ["builtin", "synthetic"],
                          "the data pipeline whose tokens/s is measured (builtin: the built-in "
                          "corpus, prepared and cached on first use)")
_CACHE_DIR = flags.DEFINE_string("cache_dir", "~/.cache/neoscale", "data cache directory")
_PROBE_SIZE = flags.DEFINE_integer("probe_size", 2048, "matrix size of the CPU matmul probe")
_LOSS_IMPL = flags.DEFINE_list("loss_impl", ["fused"], "LM-head loss: fused, plain, or both "
                               "(fused,plain: timed side by side, interleaved)")
_ATTENTION_IMPL = flags.DEFINE_list("attention_impl", ["auto"], "attention: auto, dense, blocked, "
                                    "splash, cudnn, or several (timed side by side, interleaved)")
_MOE_DISPATCH = flags.DEFINE_list("moe_dispatch", ["auto"], "dropless expert dispatch of routed "
                                  "sizes: auto, ragged, blocked, or several (timed side by side)")
_MOE_BLOCK_ROWS = flags.DEFINE_integer("moe_block_rows", None, "rows per block of the blocked "
                                       "dispatch (default: the model's)")
_ROUNDS = flags.DEFINE_integer("rounds", 4, "with several variants: timed rounds, each running "
                               "every variant for steps/rounds steps")


def parse_depths(spec: str | None, config: ModelConfig) -> list[int]:
    """'4,16,64' -> [4, 16, 64]; None -> [the size's depth]. One-line ValueError when invalid."""
    if not spec:
        return [config.num_layers]
    try:
        depths = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"bad --depths={spec!r}: give comma-separated integers, e.g. 4,16,64") from None
    for depth in depths:
        if depth < 1 or depth % config.layer_period:
            raise ValueError(f"bad --depths={spec!r}: {depth} is not a positive multiple of "
                             f"{config.layer_period} (the layer pattern's period)")
    if not depths:
        raise ValueError(f"bad --depths={spec!r}: give comma-separated integers, e.g. 4,16,64")
    return depths


def host_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def peak_flops(devices: list[jax.Device], dtype: str, probe_size: int) -> tuple[float, str]:
    """(peak FLOP/s of all ``devices``, its source): the datasheet table, else the matmul probe."""
    per_device = accounting.device_peak_flops(devices[0], dtype)
    if per_device is not None:
        return per_device * len(devices), "datasheet"
    # XLA's CPU client runs each op on all host cores: one probe measures the whole host.
    return matmul_flops_per_second(probe_size, "float32"), "cpu_matmul_probe"


def data_tokens_per_second(data: str, vocab_size: int, seq_len: int, batch_size: int,
                           cache_dir: str) -> float:
    if data == "synthetic":
        source = SyntheticData(vocab_size, seq_len)
    else:
        source = prepare(DataConfig(seq_len=seq_len, cache_dir=cache_dir))
    return measure_throughput(source, batch_size, num_batches=DATA_BATCHES)


def benchmark(config: ModelConfig, *, size: str, mesh, batch_size: int, seq_len: int, steps: int,
              warmup_steps: int, profile_dir: str | None, peak: tuple[float, str],
              data_tokens_per_sec: float, compare: str | None, reference_steps: int) -> dict:
    """One configuration's figures (the JSON line's fields)."""
    timing = time_train_step(config, mesh, batch_size, seq_len, steps, warmup_steps, profile_dir)
    result = figures(config, timing, size=size, mesh=mesh, batch_size=batch_size, seq_len=seq_len,
                     steps=steps, peak=peak, data_tokens_per_sec=data_tokens_per_sec)
    if compare == "reference":
        add_reference(result, config, reference_steps)
    return result


def benchmark_variants(configs: list[ModelConfig], labels: list[str], *, size: str, mesh,
                       batch_size: int, seq_len: int, steps: int, warmup_steps: int, rounds: int,
                       peak: tuple[float, str], data_tokens_per_sec: float, compare: str | None,
                       reference_steps: int) -> list[dict]:
    """Several configurations timed in alternation (``time_interleaved``): one result per variant.

    ``gradient_memory_bytes`` (XLA's memory analysis of the compiled loss-and-gradient) is each
    variant's own; ``peak_memory_bytes`` on a CPU is the whole process's RSS, shared by all.
    """
    timings = time_interleaved(configs, mesh, batch_size, seq_len, steps, warmup_steps, rounds)
    results = []
    for config, label, timing in zip(configs, labels, timings, strict=True):
        result = figures(config, timing, size=size, mesh=mesh, batch_size=batch_size,
                         seq_len=seq_len, steps=steps, peak=peak, data_tokens_per_sec=data_tokens_per_sec)
        runner = TrainStepRunner(config, mesh, batch_size, seq_len, total_steps=1)
        result.update(variant=label, gradient_memory_bytes=runner.gradient_memory_bytes())
        results.append(result)
    if compare == "reference":
        for result, config in zip(results, configs, strict=True):
            add_reference(result, config, reference_steps)
    return results


def figures(config: ModelConfig, timing, *, size: str, mesh, batch_size: int, seq_len: int,
            steps: int, peak: tuple[float, str], data_tokens_per_sec: float) -> dict:
    """The JSON line's fields for one timed configuration."""
    step_seconds = timing.median_step_seconds
    logging.info("depth %d: compile %.2f s, median step %.4f s", config.num_layers,
                 timing.compile_seconds, step_seconds)
    tokens_per_sec = batch_size * seq_len / step_seconds
    flops_per_token = accounting.train_flops_per_token(config, seq_len)
    model_tflops = flops_per_token * tokens_per_sec / 1e12
    peak_flops_per_sec, peak_source = peak
    memory, memory_source = peak_memory_bytes(list(mesh.devices.flat))
    devices = list(mesh.devices.flat)
    result = {
        "size": size, "depth": config.num_layers, "batch_size": batch_size, "seq_len": seq_len,
        "dtype": config.dtype, "device": f"{len(devices)}x {devices[0].device_kind}",
        "compile_seconds": timing.compile_seconds, "step_seconds": step_seconds,
        "tokens_per_sec": tokens_per_sec, "model_tflops": model_tflops,
        "peak_tflops": peak_flops_per_sec / 1e12, "mfu": model_tflops * 1e12 / peak_flops_per_sec,
        "peak_memory_bytes": memory, "state_bytes": accounting.model_state_bytes(config)["total"],
        "data_tokens_per_sec": data_tokens_per_sec,
        # Context for reading the figures.
        "peak_source": peak_source, "peak_memory_source": memory_source,
        "flops_convention": FLOPS_CONVENTION, "train_flops_per_token": flops_per_token,
        "params": accounting.param_counts(config)["total"], "vocab_size": config.vocab_size,
        "remat": config.remat, "mesh": describe(mesh), "first_step_seconds": timing.first_step_seconds,
        "step_seconds_min": min(timing.step_seconds), "step_seconds_max": max(timing.step_seconds),
        "steps": steps, "loss_impl": config.loss_impl, "attention_impl": config.attention_impl,
        "moe_dispatch": config.moe_dispatch if config.is_moe else None,
        "host_page_faults_per_step": timing.page_faults_per_step,
    }
    return result


_REFERENCE_CACHE: dict[tuple, tuple[list[float], float]] = {}


def add_reference(result: dict, config: ModelConfig, reference_steps: int) -> None:
    """Times the transformers GPT-Neo step of the same shape (once per shape) and adds the ratio."""
    from neoscale.benchmarking.reference import AdamWSettings, reference_step_seconds

    batch_size, seq_len = result["batch_size"], result["seq_len"]
    key = (config.replace(loss_impl="plain", attention_impl="auto"), batch_size, seq_len)
    if key not in _REFERENCE_CACHE:
        _REFERENCE_CACHE[key] = reference_step_seconds(
            config, batch_size, seq_len, AdamWSettings(peak_learning_rate(config)),
            steps=reference_steps, warmup_steps=1, threads=host_cores())
    seconds, page_faults_per_step = _REFERENCE_CACHE[key]
    reference_tokens = batch_size * seq_len / median(seconds)
    result.update(reference_tokens_per_sec=reference_tokens,
                  ratio_vs_reference=result["tokens_per_sec"] / reference_tokens,
                  reference_step_seconds=median(seconds), reference_threads=host_cores(),
                  reference_host_page_faults_per_step=page_faults_per_step,
                  reference_mfu=(result["train_flops_per_token"] * reference_tokens
                                 / (result["peak_tflops"] * 1e12)))


def format_table(results: list[dict]) -> str:
    """A readable table: one column per benchmarked configuration."""
    rows = [
        ("variant", "variant", "{}"), ("depth", "depth", "{}"), ("params", "params", "{}"),
        ("compile", "compile_seconds", "{:.2f} s"),
        ("step (median)", "step_seconds", "{:.4f} s"), ("tokens/s", "tokens_per_sec", "{:,.0f}"),
        ("model TFLOP/s", "model_tflops", "{:.4g}"), ("peak TFLOP/s", "peak_tflops", "{:.4g}"),
        ("MFU", "mfu", "{:.1%}"), ("time/FLOP vs first", "flop_time_vs_first", "{:.2f}x"),
        ("peak memory", "peak_memory_bytes", "{}"),
        ("loss+grad (XLA)", "gradient_memory_bytes", "{}"),
        ("params+grads+adam", "state_bytes", "{}"), ("data tokens/s", "data_tokens_per_sec", "{:,.0f}"),
        ("host page faults", "host_page_faults_per_step", "{:,.0f}/step"),
        ("reference tokens/s", "reference_tokens_per_sec", "{:,.0f}"),
        ("reference MFU", "reference_mfu", "{:.1%}"),
        ("reference faults", "reference_host_page_faults_per_step", "{:,.0f}/step"),
        ("ratio vs reference", "ratio_vs_reference", "{:.2f}x"),
    ]
    first = results[0]
    width = max(16, *(len(r.get("variant", "")) + 2 for r in results))
    header = (f"neoscale.bench  size={first['size']} batch={first['batch_size']} "
              f"seq={first['seq_len']} dtype={first['dtype']} remat={first['remat']} "
              f"mesh={first['mesh']} device={first['device']}")
    lines = [header]
    for label, key, fmt in rows:
        if key not in first:
            continue
        cells = []
        for result in results:
            value = result[key]
            if key == "params":
                cells.append(accounting.format_count(value))
            elif key.endswith("_bytes"):
                cells.append(f"{value / 2**20:,.1f} MiB")
            else:
                cells.append(fmt.format(value))
        lines.append(f"  {label:<20}" + "".join(f"{cell:>{width}}" for cell in cells))
    lines.append(f"  peak: {first['peak_source']}; memory: {first['peak_memory_source']}; "
                 f"FLOPs: {FLOPS_CONVENTION}")
    return "\n".join(lines)


def run() -> list[dict]:
    """Runs the benchmark the flags describe; returns one result dict per depth."""
    overrides = {"dtype": _DTYPE.value, "remat": _REMAT.value}
    if _VOCAB_SIZE.value is not None:
        overrides["vocab_size"] = _VOCAB_SIZE.value
    sizes = _SIZES.value or [_SIZE.value]
    config = presets.model_config(sizes[0], **overrides)
    check_seq_len(_SEQ_LEN.value, config.max_positions)
    for name, flag in (("batch_size", _BATCH_SIZE), ("steps", _STEPS),
                       ("reference_steps", _REFERENCE_STEPS), ("probe_size", _PROBE_SIZE)):
        if flag.value < 1:
            raise ValueError(f"--{name}={flag.value} must be positive")
    if _WARMUP_STEPS.value < 0:
        raise ValueError(f"--warmup_steps={_WARMUP_STEPS.value} must be >= 0")
    depths = parse_depths(_DEPTHS.value, config)
    mesh = make_mesh(_MESH.value)
    if _BATCH_SIZE.value % batch_divisor(mesh):
        raise ValueError(f"--batch_size={_BATCH_SIZE.value} is not divisible by the {batch_divisor(mesh)} "
                         f"batch shards of mesh {describe(mesh)}: use a multiple")
    if _COMPARE.value == "reference" and _DTYPE.value != "float32":
        raise ValueError("--compare=reference runs PyTorch on the CPU in float32; use --dtype=float32")
    data_tokens = data_tokens_per_second(_DATA.value, config.vocab_size, _SEQ_LEN.value,
                                         _BATCH_SIZE.value, _CACHE_DIR.value)
    peak = peak_flops(list(mesh.devices.flat), _DTYPE.value, _PROBE_SIZE.value)
    if _MOE_BLOCK_ROWS.value is not None:
        overrides["moe_block_rows"] = _MOE_BLOCK_ROWS.value
    variants = [(size, loss, attention, dispatch) for size in sizes for loss in _LOSS_IMPL.value
                for attention in _ATTENTION_IMPL.value
                for dispatch in (_MOE_DISPATCH.value if presets.model_config(size).is_moe else ["auto"])]
    config = config.replace(loss_impl=variants[0][1], attention_impl=variants[0][2],
                            moe_dispatch=variants[0][3])
    if _ROUNDS.value < 1:
        raise ValueError(f"--rounds={_ROUNDS.value} must be positive")
    if len(variants) > 1:
        if _DEPTHS.value or _PROFILE.value:
            raise ValueError("several --sizes/--loss_impl/--attention_impl/--moe_dispatch variants time "
                             "one depth without --profile: drop --depths and --profile, or give one variant")
        configs = [presets.model_config(size, **overrides).replace(
            loss_impl=loss, attention_impl=attention, moe_dispatch=dispatch)
            for size, loss, attention, dispatch in variants]
        for other in configs:
            check_seq_len(_SEQ_LEN.value, other.max_positions)
        labels = [" ".join(([size] if len(sizes) > 1 else []) + [f"loss={loss} attn={attention}"]
                           + ([f"moe={dispatch}"] if other.is_moe else []))
                  for (size, loss, attention, dispatch), other in zip(variants, configs, strict=True)]
        results = benchmark_variants(
            configs, labels, size=",".join(sizes), mesh=mesh, batch_size=_BATCH_SIZE.value,
            seq_len=_SEQ_LEN.value,
            steps=_STEPS.value, warmup_steps=_WARMUP_STEPS.value, rounds=_ROUNDS.value, peak=peak,
            data_tokens_per_sec=data_tokens, compare=_COMPARE.value,
            reference_steps=_REFERENCE_STEPS.value)
        for result, (size, *_) in zip(results, variants, strict=True):
            result["size"] = size
            # Time per training FLOP relative to the first variant (e.g. routed against dense).
            result["flop_time_vs_first"] = results[0]["model_tflops"] / result["model_tflops"]
            logging.info("%s: %s", result["variant"], json.dumps(result))
        return results
    results = []
    for depth in depths:
        result = benchmark(
            config.replace(num_layers=depth), size=_SIZE.value, mesh=mesh,
            batch_size=_BATCH_SIZE.value, seq_len=_SEQ_LEN.value, steps=_STEPS.value,
            warmup_steps=_WARMUP_STEPS.value,
            profile_dir=os.path.join(_PROFILE.value, f"depth{depth}") if _PROFILE.value else None,
            peak=peak, data_tokens_per_sec=data_tokens, compare=_COMPARE.value,
            reference_steps=_REFERENCE_STEPS.value)
        results.append(result)
        logging.info("depth %d: %s", depth, json.dumps(result))
    return results


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        results = run()
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"neoscale.bench: error: {error}") from None
    print(format_table(results))
    for result in results:
        print(json.dumps(result))


def entrypoint() -> None:
    app.run(main)


if __name__ == "__main__":
    entrypoint()
