"""Data-path figures: tokenization MB/s per core, bytes per token, reader peak memory vs corpus size,
and reading shards in place from a gs://-like store with injected latency.

  python benchmarks/data_throughput.py [--repeat 10] [--skip_memory]
  python benchmarks/data_throughput.py --remote [--latency_ms 30] [--step_seconds 4.3]

Prints a markdown report (the "Data path" section of benchmarks/RESULTS.md holds one run).
Tokenization is timed in one process
(per core) on the built-in corpus (~10 MB of English), then with every core through the
preparation's worker pool. Peak memory: a fresh process opens prepared shards of the built-in
corpus written 1x and ``--repeat``x into .txt files and reads 300 batches of 32 x 256 tokens;
its peak RSS must not grow with the corpus. A float32 2048^3 jitted-matmul probe and the load
average are printed beside the figures, since this machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from neoscale.data import builtin, records, shards, tokenizer

READ_SCRIPT = """
import resource, sys
from neoscale.data import DataConfig, prepare
p = prepare(DataConfig(data="prepared:" + sys.argv[1], tokenizer="train:2048", seq_len=256,
                       heldout_tokens=65536, cache_dir=sys.argv[2]))
it = p.train_iterator(32)
for _ in range(300):
    next(it)
print(p.manifest["train_stream_tokens"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def encode_rate(tok, texts: list[str]) -> tuple[float, float]:
    """(MB/s in one process, UTF-8 bytes per token) over the texts."""
    num_bytes = sum(len(t.encode("utf-8")) for t in texts)
    start = time.perf_counter()
    tokens = sum(len(ids) for i in range(0, len(texts), 256) for ids in tok.encode_batch(texts[i : i + 256]))
    return num_bytes / (time.perf_counter() - start) / 1e6, num_bytes / tokens


def pool_rate(tok, texts: list[str], workers: int) -> float:
    """MB/s through the preparation's worker pool (reading, pickling and encoding)."""
    documents = ((i, "x", t) for i, t in enumerate(texts))
    start = time.perf_counter()
    num_bytes = sum(b for _, _, b, _ in shards.tokenize(documents, tok, workers))
    return num_bytes / (time.perf_counter() - start) / 1e6


def peak_rss(texts: list[str], copies: int, root: str) -> tuple[int, float]:
    """(training tokens, peak RSS MB) of a fresh process reading batches of ``copies`` x the corpus."""
    corpus = os.path.join(root, f"corpus{copies}")
    os.makedirs(corpus)
    for c in range(copies):
        with open(os.path.join(corpus, f"part{c}.jsonl"), "w", encoding="utf-8") as f:
            for text in texts:
                f.write(json.dumps({"text": text}) + "\n")
    out = os.path.join(root, f"prepared{copies}")
    subprocess.run([sys.executable, "-m", "neoscale.prepare", f"--data=text:{corpus}/*.jsonl",
                    "--tokenizer=train:2048", f"--out={out}"], check=True, capture_output=True)
    result = subprocess.run([sys.executable, "-c", READ_SCRIPT, out, os.path.join(root, "cache")],
                            check=True, capture_output=True, text=True)
    tokens, rss_kb = result.stdout.split()
    return int(tokens), int(rss_kb) / 1024


# GPT-Neo 1.3B on a v4-32 (4 hosts): the GPT-3 batch of 512 x 2048 tokens; ~25,000 steps of
# ~4.3 s (26.3B tokens in the ~30 h that issue 20's "a checkpoint every ~1.5 h, 20 per run" gives).
HOSTS, GLOBAL_BATCH, SEQ_LEN, RUN_TOKENS = 4, 512, 2048, 26.3e9


def remote_reads(latency_ms: float, step_seconds: float, batches: int) -> None:
    """Reads/s one host needs for the 1.3B run versus what it gets from shards on a gs://-like
    store (tests/fake_gcs.py's in-memory GCS, every ranged read delayed by ``latency_ms``)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    import pytest
    from fake_gcs import FakeGCSFileSystem, install
    from fsspec.registry import _registry

    from neoscale.data import DataConfig, prepare

    class SlowGCS(FakeGCSFileSystem):
        def cat_file(self, path, start=None, end=None, **kwargs):
            time.sleep(latency_ms / 1000)
            return super().cat_file(path, start=start, end=end, **kwargs)

    with tempfile.TemporaryDirectory() as root, pytest.MonkeyPatch.context() as patch:
        local = prepare(DataConfig(data="builtin", tokenizer="gpt2", seq_len=SEQ_LEN, cache_dir=root))
        install(patch)
        for protocol in ("gs", "gcs"):
            patch.setitem(_registry, protocol, SlowGCS)
        for name in os.listdir(local.directory):
            if not name.startswith(".tmp"):
                SlowGCS().put_file(os.path.join(local.directory, name), f"gs://b/data/{name}")
        remote = prepare(DataConfig(data="prepared:gs://b/data", tokenizer="gpt2", seq_len=SEQ_LEN,
                                    cache_dir=root))
        iterator = remote.train_iterator(GLOBAL_BATCH, process_index=0, process_count=HOSTS)
        next(iterator)
        source = remote._reader(slice(None)).source
        reads, read_bytes, start = source.reads, source.bytes_read, time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
        reads, read_bytes = source.reads - reads, source.bytes_read - read_bytes
    rows = GLOBAL_BATCH // HOSTS
    # A window costs one ranged read, two when it crosses a record boundary (probability
    # seq_len / record_tokens), of only its seq_len + 1 uint16 tokens.
    reads_per_step = rows * (1 + SEQ_LEN / shards.RECORD_TOKENS)
    bytes_per_step = rows * (SEQ_LEN + 1) * 2
    steps = RUN_TOKENS / (GLOBAL_BATCH * SEQ_LEN)
    offsets_mb = RUN_TOKENS / shards.RECORD_TOKENS * 8 / 1e6
    print(f"1.3B on a v4-32, one of {HOSTS} hosts: {rows} windows of {SEQ_LEN + 1} tokens per step, "
          f"{reads_per_step:.0f} ranged reads ({bytes_per_step / 1e6:.2f} MB); needed at {step_seconds} "
          f"s/step: {reads_per_step / step_seconds:.0f} reads/s, "
          f"{bytes_per_step / step_seconds / 1e6:.2f} MB/s")
    print(f"achieved with {latency_ms:.0f} ms per read and {records.READ_THREADS} threads: "
          f"{reads / seconds:.0f} reads/s, {read_bytes / seconds / 1e6:.1f} MB/s ({batches} batches of "
          f"{reads / batches:.0f} reads in {seconds:.2f} s)")
    print(f"over the run ({steps:,.0f} steps): reads {bytes_per_step * steps / 1e9:.0f} GB per host, "
          f"stores 0 bytes of shards (holds the record offsets in memory: {offsets_mb:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--remote", action="store_true", help="only the gs://-like reading figures")
    parser.add_argument("--latency_ms", type=float, default=30.0, help="delay of every ranged read")
    parser.add_argument("--step_seconds", type=float, default=4.3, help="the 1.3B run's step time")
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    if args.remote:
        print(f"load average before {os.getloadavg()[0]:.2f}")
        remote_reads(args.latency_ms, args.step_seconds, args.batches)
        from neoscale.benchmarking.probe import matmul_flops_per_second

        print(f"probe: float32 2048^3 jitted matmul {matmul_flops_per_second() / 1e9:.0f} GFLOP/s; "
              f"load average after {os.getloadavg()[0]:.2f}")
        return
    texts, description = builtin.read()
    cores = os.cpu_count() or 1
    print(f"corpus: built-in, {len(texts)} documents, {description['bytes'] / 1e6:.1f} MB; "
          f"{cores} cores; load average before {os.getloadavg()[0]:.2f}")
    print("\n| tokenizer | MB/s, 1 process | MB/s, pool of all cores | bytes/token |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    sample = [texts[i] for i in order[: len(texts) // 4]]  # tokenizer training data
    tokenizers = {"gpt2": tokenizer.load("gpt2")}
    for vocab in (512, 2048, 8192, 32768):
        tokenizers[f"train:{vocab}"] = tokenizer.SentencePieceTokenizer(tokenizer.train(sample, vocab))
    for name, tok in tokenizers.items():
        single, bytes_per_token = encode_rate(tok, texts)
        pooled = pool_rate(tok, texts, cores)
        print(f"| {name} | {single:.2f} | {pooled:.2f} ({cores} workers) | {bytes_per_token:.2f} |")
    if not args.skip_memory:
        print("\n| corpus | training tokens | reader peak RSS (MB) |\n|---|---|---|")
        with tempfile.TemporaryDirectory() as root:
            for copies in (1, args.repeat):
                tokens, rss = peak_rss(texts, copies, root)
                print(f"| built-in x{copies} | {tokens:,} | {rss:.0f} |")
    from neoscale.benchmarking.probe import matmul_flops_per_second

    print(f"\nprobe: float32 2048^3 jitted matmul {matmul_flops_per_second() / 1e9:.0f} GFLOP/s; "
          f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
