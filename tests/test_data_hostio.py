"""What each host downloads, stores and reads (the dry run's data line), from a plan's runs."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from subprocess_env import cpu_env

from neoscale.data import DataConfig, hostio, pipeline

GPT2 = 50257


def _run(steps, batch_size=512, seq_len=2048, branches=()):
    return SimpleNamespace(steps=steps, batch_size=batch_size, seq_len=seq_len, branches=branches)


def test_hf_on_gcs_downloads_its_share_stores_nothing_and_reads_its_rows():
    config = DataConfig(data="hf:org/corpus", tokenizer="gpt2", seq_len=2048, cache_dir="gs://b/cache")
    branch = SimpleNamespace(cooldown_steps=100)
    runs = [_run(1000), _run(25_000, branches=(branch,))]
    io = hostio.host_io(config, runs, hosts=4, corpus_tokens=100e9, vocab_size=GPT2)
    assert io.download == pytest.approx(100e9 * pipeline.GPT2_BYTES_PER_TOKEN / 4)
    assert io.store == 0
    assert io.largest_run_tokens == 25_000 * 512 * 2048  # not its branch's extra steps
    windows = (1000 + 25_100) * 512 / 4  # per host, branches included
    assert io.read == pytest.approx(windows * 2049 * 2)  # uint16 tokens of its rows' windows


def test_a_local_cache_or_a_text_source_is_read_whole_by_every_host(tmp_path):
    runs = [_run(10, batch_size=8, seq_len=64)]
    local = DataConfig(data="hf:org/corpus", tokenizer="gpt2", cache_dir=str(tmp_path))
    io = hostio.host_io(local, runs, hosts=4, corpus_tokens=1e6, vocab_size=GPT2)
    assert io.download == pytest.approx(1e6 * pipeline.GPT2_BYTES_PER_TOKEN)
    assert io.store == 2e6  # uint16 shards on every host's disk
    prepared = DataConfig(data="prepared:gs://b/data", tokenizer="gpt2")
    assert hostio.host_io(prepared, runs, 4, 1e6, GPT2).download == 0
    (tmp_path / "a.txt").write_text("some text")
    text = hostio.host_io_plan(DataConfig(data=f"text:{tmp_path}/*.txt", tokenizer="gpt2",
                                          cache_dir="gs://b/c"), runs, 4, 1e6)
    assert "each host reads the whole source" in text and "--data=prepared:DIR" in text


def test_the_headline_dry_run_states_each_hosts_data():
    out = subprocess.run(
        [sys.executable, "-m", "neoscale.run", "--sizes=125M,350M,1.3B", "--dry_run", "--accelerator=v4-32"],
        capture_output=True, text=True, env=cpu_env(), timeout=180,
        cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("data per host"))
    assert line.startswith("data per host (4 hosts): download ")
    assert " GB of shards (its rows' windows)" in line
    assert "--train_tokens=2.631e+10" in out.stdout  # 1.3B at 20 tokens per parameter
