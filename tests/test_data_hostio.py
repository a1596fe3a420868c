"""What each host downloads, stores and reads (the dry run's data line), from a plan's runs."""

import math
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
    assert io.largest_run_tokens == 25_000 * 512 * 2048  # not its branch's extra steps
    assert io.prepare_tokens == math.ceil(io.largest_run_tokens * 1.02)  # not the 100e9 of the corpus
    assert io.download == pytest.approx(io.prepare_tokens * pipeline.GPT2_BYTES_PER_TOKEN / 4)
    assert io.store == 0
    windows = (1000 + 25_100) * 512 / 4  # per host, branches included
    assert io.read == pytest.approx(windows * 2049 * 2)  # uint16 tokens of its rows' windows


def test_a_local_cache_or_a_text_source_is_read_whole_by_every_host(tmp_path):
    runs = [_run(10, batch_size=8, seq_len=64)]
    local = DataConfig(data="hf:org/corpus", tokenizer="gpt2", cache_dir=str(tmp_path))
    io = hostio.host_io(local, runs, hosts=4, corpus_tokens=1e6, vocab_size=GPT2)
    assert io.prepare_tokens == math.ceil(10 * 8 * 64 * 1.02)  # what the run reads, plus 2%
    assert io.download == pytest.approx(io.prepare_tokens * pipeline.GPT2_BYTES_PER_TOKEN)
    assert io.store == io.prepare_tokens * 2  # uint16 shards on every host's disk
    prepared = DataConfig(data="prepared:gs://b/data", tokenizer="gpt2")
    assert hostio.host_io(prepared, runs, 4, 1e6, GPT2).download == 0
    (tmp_path / "a.txt").write_text("some text")
    text = hostio.host_io_plan(DataConfig(data=f"text:{tmp_path}/*.txt", tokenizer="gpt2",
                                          cache_dir="gs://b/c"), runs, 4, 1e6)
    assert "each host reads the whole source" in text and "--data=prepared:DIR" in text
    small = hostio.host_io(DataConfig(data=f"text:{tmp_path}/*.txt", tokenizer="gpt2"), runs, 1, 1e6, GPT2)
    assert small.prepare_tokens == 1e6  # a small local corpus is prepared whole (seconds)


def test_shards_larger_than_a_hosts_disk_get_a_one_line_warning_with_the_fix(tmp_path):
    config = DataConfig(data="hf:org/corpus", tokenizer="gpt2", cache_dir=str(tmp_path))
    runs = [_run(25_000)]  # 26.2e9 tokens: 53.5 GB of uint16 shards (with the 2% margin)
    assert hostio.disk_warning(config, runs, 16, 100e9, 100 * 2**30, "a v5e-64 host's disk") is None
    assert hostio.disk_warning(config, runs, 16, 100e9, None, "unknown") is None
    line = hostio.disk_warning(config, runs, 16, 100e9, 40 * 2**30, "a small disk")
    assert line.startswith("each host stores 53.5 GB of shards in ")
    assert "more than a small disk (42.9 GB)" in line and "--workdir=gs://" in line and "\n" not in line


def test_the_headline_dry_run_states_each_hosts_data():
    out = subprocess.run(
        [sys.executable, "-m", "neoscale.run", "--sizes=125M,350M,1.3B", "--dry_run", "--accelerator=v4-32"],
        capture_output=True, text=True, env=cpu_env(), timeout=180,
        cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("data per host"))
    assert line.startswith("data per host (4 hosts): download ")
    assert " GB of shards (its rows' windows)" in line
    # only what the largest run (1.3B at 20 tokens per parameter) reads, plus 2%
    assert "to prepare 26,838,155,920 training tokens" in line
    assert "only what the largest run reads, 26,311,917,568 tokens, plus 2%" in out.stdout


def test_a_gs_study_is_planned_from_a_machine_without_gcsfs(tmp_path):
    (tmp_path / "gcsfs").mkdir()  # as if the gcs extra were not installed (whatever is here)
    (tmp_path / "gcsfs" / "__init__.py").write_text("raise ImportError('No module named gcsfs')\n")
    env = cpu_env()
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    command = [sys.executable, "-m", "neoscale.run", "--sizes=125M,350M,1.3B", "--accelerator=v5e-64",
               "--workdir=gs://B/neo"]
    cwd = os.path.dirname(os.path.dirname(__file__))
    out = subprocess.run([*command, "--dry_run"], capture_output=True, text=True, env=env, timeout=180,
                         cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("data per host"))
    download = float(line.split("download ")[1].split(" GB")[0])
    assert 6.4 <= download <= 1.5 * 6.4  # the capped preparation's, not the whole 100B sample's
    note = [line for line in out.stdout.splitlines() if line.startswith("note: cannot read gs://B/neo")]
    assert len(note) == 1 and "planned as a fresh study" in note[0] and "neoscale[gcs]" in note[0]
    real = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, cwd=cwd)
    assert real.returncode == 2 and real.stderr.count("\n") == 1, real.stderr
    assert "cannot read gs://B/neo" in real.stderr and "pip install 'neoscale[gcs]'" in real.stderr
    prepared = subprocess.run([*command, "--dry_run", "--data=prepared:gs://B/data"], capture_output=True,
                              text=True, env=env, timeout=180, cwd=cwd)  # its manifest must be read
    assert prepared.returncode == 2 and prepared.stderr.count("\n") == 1, prepared.stderr
    assert "cannot read gs://B/data" in prepared.stderr and "neoscale[gcs]" in prepared.stderr
