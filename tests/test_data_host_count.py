"""An interrupted preparation resumes on another number of processes (real processes, sharing the
output directory as the hosts of a pod share gs://) to the same manifest and training tokens."""

import json
import subprocess
import sys

import pytest
from subprocess_env import cpu_env
from test_data import make_documents, write_corpus

from neoscale.data import shards

# One process of a preparation; with STOP >= 0 it dies (os._exit) after committing STOP shards.
WORKER = """
import os, sys
from neoscale.data import shards, sources
out, data, index, count, stop = sys.argv[1:]
shards.POLL_SECONDS = 0.1
if int(stop) >= 0:
    commit, done = shards._commit_shard, []
    def dying(*args):
        commit(*args)
        done.append(1)
        if len(done) == int(stop):
            os._exit(9)
    shards._commit_shard = dying
options = shards.PrepareOptions(tokenizer="gpt2", heldout_tokens=512, process_index=int(index),
                                process_count=int(count), documents_per_shard=16)
shards.prepare_shards(sources.parse(data), options, out)
"""


def prepare(out, data, count: int, stop: int = -1) -> list[int]:
    """Runs ``count`` processes at once; their exit codes."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(out), data, str(i), str(count),
                               str(stop)], env=cpu_env(), stderr=subprocess.PIPE, text=True)
             for i in range(count)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode in (0, 9) for p in procs), errors
    return [p.returncode for p in procs]


def contents(out) -> tuple[dict, list[bytes], bytes]:
    """(manifest without its timing, training records in manifest order, held-out tokens)."""
    from array_record.python.array_record_module import ArrayRecordReader

    manifest = json.loads((out / shards.MANIFEST).read_text())
    manifest.pop("prepare_seconds")
    records = []
    for shard in manifest["shards"]:
        reader = ArrayRecordReader(str(out / shard["path"]))
        records += reader.read_all()
        reader.close()
    return manifest, records, (out / shards.HELDOUT_NPY).read_bytes()


@pytest.mark.slow
def test_an_interrupted_preparation_resumes_on_another_host_count(tmp_path):
    data = write_corpus(tmp_path / "corpus", make_documents(160, seed=2))
    assert prepare(tmp_path / "two", data, 2) == [0, 0]
    assert prepare(tmp_path / "one", data, 1) == [0]

    # Started as 2 processes, each killed after its first shard; finished by 1 process.
    assert prepare(tmp_path / "2to1", data, 2, stop=1) == [9, 9]
    assert not (tmp_path / "2to1" / shards.MANIFEST).exists()
    assert prepare(tmp_path / "2to1", data, 1) == [0]
    assert contents(tmp_path / "2to1") == contents(tmp_path / "two")

    # Started as 1 process, killed after two shards; finished by 2 processes.
    assert prepare(tmp_path / "1to2", data, 1, stop=2) == [9]
    assert prepare(tmp_path / "1to2", data, 2) == [0, 0]
    assert contents(tmp_path / "1to2") == contents(tmp_path / "one")
