"""python -m neoscale.prepare, as a user runs it: shards with worker processes, then training reads them."""

import json
import subprocess
import sys

from subprocess_env import cpu_env
from test_data import make_documents, split_documents, train_documents, write_corpus

from neoscale.data import DataConfig, prepare


def run_prepare(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neoscale.prepare", *flags], capture_output=True,
                          text=True, env=cpu_env(), timeout=300)


def test_prepare_cli_with_workers_then_train_on_the_shards(tmp_path):
    documents = make_documents(600, seed=5)
    data = write_corpus(tmp_path / "corpus", documents)
    out = tmp_path / "prepared"
    flags = [f"--data={data}", "--tokenizer=train:400", "--heldout_tokens=2048", f"--out={out}",
             "--workers=2"]
    result = run_prepare(*flags)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["heldout_stream_tokens"] >= 2049
    assert set(summary["heldout_mixture"]) == {"corpus"}  # text documents: labelled by directory
    prepared = prepare(DataConfig(data=f"prepared:{out}", tokenizer="train:400", seq_len=32,
                                  heldout_tokens=2048, cache_dir=str(tmp_path / "cache")))
    heldout = split_documents(prepared, prepared.heldout_stream)[:-1]
    assert sorted(train_documents(prepared) + heldout) == sorted(documents)
    assert next(prepared.train_iterator(8))["inputs"].shape == (8, 32)
    again = run_prepare(*flags)  # already prepared: reads the manifest, writes nothing
    assert again.returncode == 0 and json.loads(again.stdout) == summary


def test_prepare_cli_bad_input_is_one_line(tmp_path):
    result = run_prepare(f"--data=text:{tmp_path}/missing/*.txt", f"--out={tmp_path / 'out'}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("python -m neoscale.prepare: error: no files match")
    assert not (tmp_path / "out").exists()


def test_prepare_cli_reads_only_the_tokens_asked_for(tmp_path):
    data = write_corpus(tmp_path / "corpus", make_documents(600, seed=5))
    out = tmp_path / "prepared"
    result = run_prepare(f"--data={data}", "--tokenizer=gpt2", "--heldout_tokens=512", f"--out={out}",
                         "--workers=1", "--train_tokens=5000")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["max_train_tokens"] == 5100  # 2% margin
    assert 5100 <= manifest["train_stream_tokens"] < 5100 + 200  # stops at the document reaching it
    assert manifest["documents"] < 600 / 4
    bad = run_prepare(f"--data={data}", f"--out={tmp_path / 'bad'}", "--train_tokens=0")
    assert bad.returncode == 2 and "--train_tokens=0.0 must be at least 1" in bad.stderr


def test_prepare_cli_extends_its_own_preparation_and_refuses_another(tmp_path):
    data = write_corpus(tmp_path / "corpus", make_documents(300, seed=6))
    out = tmp_path / "prepared"
    flags = [f"--data={data}", "--tokenizer=gpt2", "--heldout_tokens=256", f"--out={out}", "--workers=1"]
    assert run_prepare(*flags, "--train_tokens=3000").returncode == 0
    heldout = (out / "heldout.npy").read_bytes()
    larger = run_prepare(*flags, "--train_tokens=8000")  # the same source: extended
    assert larger.returncode == 0, larger.stderr
    assert json.loads(larger.stdout)["train_stream_tokens"] >= 8160
    assert (out / "heldout.npy").read_bytes() == heldout
    manifest = (out / "manifest.json").read_text()
    other = run_prepare(*flags, "--seed=1")
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
    assert f"error: {out} holds another preparation (seed 0; this one: seed 1)" in other.stderr
    assert (out / "manifest.json").read_text() == manifest  # left as it was
    (tmp_path / "file").write_text("x")
    not_a_dir = run_prepare(f"--data={data}", f"--out={tmp_path / 'file'}")
    assert not_a_dir.returncode == 2 and not_a_dir.stderr.count("\n") == 1, not_a_dir.stderr
    assert "--out=" in not_a_dir.stderr and "is a file" in not_a_dir.stderr
