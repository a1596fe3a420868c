"""Smoke test of ``python -m neoscale.bench`` on a tiny model: it runs and its figures are sane.

Run as a subprocess (the CLI defines absl flags at import). No timed assertions: only that every
figure is present, finite and positive.
"""

import json
import math
import os
import subprocess
import sys

import pytest

KEYS = ("size", "depth", "batch_size", "seq_len", "dtype", "device", "compile_seconds",
        "step_seconds", "tokens_per_sec", "model_tflops", "peak_tflops", "mfu",
        "peak_memory_bytes", "state_bytes", "data_tokens_per_sec")
POSITIVE = ("compile_seconds", "step_seconds", "tokens_per_sec", "model_tflops", "peak_tflops",
            "mfu", "peak_memory_bytes", "state_bytes", "data_tokens_per_sec",
            "reference_tokens_per_sec", "ratio_vs_reference", "reference_mfu")


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neoscale.bench", *args], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=300)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_bench_tiny_with_reference_and_depths(tmp_path):
    # conftest gives 8 CPU devices: the default mesh puts them all on fsdp, so batch 8.
    done = run_bench("--size=w64d4h2", "--vocab_size=512", "--batch_size=8", "--seq_len=32",
                     "--steps=2", "--warmup_steps=1", "--reference_steps=1", "--probe_size=256",
                     "--data=synthetic", "--compare=reference", "--depths=2,4",
                     f"--profile={tmp_path / 'trace'}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json_lines(done.stdout)
    assert [r["depth"] for r in results] == [2, 4]
    for result in results:
        assert set(KEYS) <= set(result)
        assert result["size"] == "w64d4h2"
        assert (result["batch_size"], result["seq_len"], result["dtype"]) == (8, 32, "float32")
        assert result["peak_source"] == "cpu_matmul_probe"
        for key in POSITIVE:
            assert math.isfinite(result[key]) and result[key] > 0, (key, result[key])
        assert result["tokens_per_sec"] == pytest.approx(8 * 32 / result["step_seconds"])
        assert result["mfu"] == pytest.approx(result["model_tflops"] / result["peak_tflops"])
        assert result["ratio_vs_reference"] == pytest.approx(
            result["tokens_per_sec"] / result["reference_tokens_per_sec"])
        for key in ("host_page_faults_per_step", "reference_host_page_faults_per_step"):
            assert math.isfinite(result[key]) and result[key] >= 0, (key, result[key])
    assert results[1]["state_bytes"] > results[0]["state_bytes"]  # deeper: more parameters
    assert "tokens/s" in done.stdout and "MFU" in done.stdout  # the readable table
    assert "host page faults" in done.stdout
    assert any((tmp_path / "trace").rglob("*.xplane.pb"))  # the profiler trace


@pytest.mark.parametrize("args, message", [
    (["--size=w64d3h2"], "multiple of 2"),
    (["--size=w64d4h2", "--depths=4,5"], "--depths"),
])
def test_bench_bad_input_is_one_line(args, message):
    done = run_bench(*args, "--data=synthetic")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in done.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page sizes and faults as on Linux")
def test_minor_page_faults_count_every_fresh_page_touched():
    import mmap

    from neoscale.benchmarking.memory import minor_page_faults

    pages = 4096  # 16 MiB of 4 KiB pages in an anonymous mapping (no huge pages unless advised)
    with mmap.mmap(-1, pages * mmap.PAGESIZE) as memory:
        before = minor_page_faults()
        for page in range(pages):
            memory[page * mmap.PAGESIZE] = 1
        faults = minor_page_faults() - before
    assert pages <= faults < pages * 1.2


def test_bench_sizes_are_timed_side_by_side():
    """--sizes times dense and routed sizes interleaved; each line carries its own size, its
    dispatch and its time per FLOP relative to the first."""
    done = run_bench("--sizes=w64d2h2,w64d2h2e4k1", "--vocab_size=512", "--batch_size=8",
                     "--seq_len=32", "--steps=2", "--warmup_steps=0", "--rounds=2",
                     "--probe_size=256", "--data=synthetic", "--moe_dispatch=blocked,ragged")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json_lines(done.stdout)
    assert [(r["size"], r["moe_dispatch"]) for r in results] == [
        ("w64d2h2", None), ("w64d2h2e4k1", "blocked"), ("w64d2h2e4k1", "ragged")]
    assert results[0]["flop_time_vs_first"] == 1.0
    for result in results[1:]:
        assert result["flop_time_vs_first"] == pytest.approx(
            results[0]["model_tflops"] / result["model_tflops"])
        assert result["params"] > results[0]["params"]  # four experts' weights
    assert "time/FLOP vs first" in done.stdout
