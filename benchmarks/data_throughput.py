"""Data-path figures: tokenization MB/s per core, bytes per token, reader peak memory vs corpus size.

  python benchmarks/data_throughput.py [--repeat 10] [--skip_memory]

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

from neoscale.data import builtin, shards, tokenizer

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--skip_memory", action="store_true")
    args = parser.parse_args()
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
