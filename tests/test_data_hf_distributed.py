"""hf: sources prepared by several processes are split by file (each document downloaded by one
process, once), a restart resumes after its last complete shard without reading it again, and a
token cap stops reading when the study has what it needs."""

import collections
import json
import threading

import numpy as np
import pytest
from test_data import make_documents

from neoscale.data import shards, sources

pytest.importorskip("datasets")  # the optional neoscale[hf] extra

FILES = 6


class _Recorded:
    """An hf streaming dataset whose examples, when iterated, are recorded with the reader."""

    def __init__(self, dataset, reads: list):
        self._dataset, self._reads = dataset, reads

    @property
    def n_shards(self) -> int:
        return self._dataset.n_shards

    def shard(self, **kwargs):
        return _Recorded(self._dataset.shard(**kwargs), self._reads)

    def skip(self, count: int):
        return _Recorded(self._dataset.skip(count), self._reads)

    def __iter__(self):
        for example in self._dataset:
            self._reads.append((threading.current_thread().name, example["text"]))
            yield example


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """(spec, documents, reads): a local hf-style dataset of FILES .jsonl files; reads records
    (reader, text) for every example iterated."""
    documents = make_documents(180, seed=5)
    folder = tmp_path / "hf"
    folder.mkdir()
    for part in range(FILES):
        with open(folder / f"part-{part:03d}.jsonl", "w") as f:
            for text in documents[part::FILES]:
                f.write(json.dumps({"text": text}) + "\n")
    reads: list = []
    load = sources._hf_dataset
    monkeypatch.setattr(sources, "_hf_dataset", lambda spec: _Recorded(load(spec), reads))
    monkeypatch.setattr(shards, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(shards, "CHUNK_DOCUMENTS", 4)  # tokenize reads no further ahead
    return sources.parse(f"hf:{folder}"), documents, reads


def _options(**overrides) -> shards.PrepareOptions:
    return shards.PrepareOptions(**{"tokenizer": "gpt2", "heldout_tokens": 512, **overrides})


def _prepare_in_processes(spec, out: str, count: int, **overrides) -> dict:
    """prepare_shards as ``count`` processes (threads named process-P); process 0's manifest."""
    results, errors = {}, []

    def one(p: int) -> None:
        try:
            results[p] = shards.prepare_shards(spec, _options(process_index=p, process_count=count,
                                                              **overrides), out)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=one, args=(p,), name=f"process-{p}") for p in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)  # (a process that failed leaves the others waiting for it)
    assert not errors, errors
    return results[0]


def test_two_processes_read_each_document_once(corpus, tmp_path):
    spec, documents, reads = corpus
    manifest = _prepare_in_processes(spec, str(tmp_path / "out"), 2)
    assert manifest["documents"] == len(documents)
    counts = collections.Counter(text for _, text in reads)
    assert sorted(counts) == sorted(documents) and set(counts.values()) == {1}  # once, by one
    readers = {text: reader for reader, text in reads}
    for part in range(FILES):  # by file: process p read the files part % 2 == p
        assert {readers[text] for text in documents[part::FILES]} == {f"process-{part % 2}"}


def test_document_ids_and_heldout_set_do_not_depend_on_the_process_count(corpus, tmp_path):
    spec, _, _ = corpus
    one = _prepare_in_processes(spec, str(tmp_path / "one"), 1)
    two = _prepare_in_processes(spec, str(tmp_path / "two"), 2)
    heldout = [json.loads((tmp_path / d / shards.HELDOUT_JSON).read_text())["ids"] for d in ("one", "two")]
    assert heldout[0] == heldout[1]
    assert one["train_stream_tokens"] == two["train_stream_tokens"]


def test_a_restart_reads_only_what_its_complete_shards_do_not_hold(corpus, tmp_path, monkeypatch):
    spec, documents, reads = corpus
    out = str(tmp_path / "out")
    commit = shards._commit_shard
    committed = []

    def crash_on_the_third_shard(*args):
        if len(committed) == 2:
            raise RuntimeError("preempted")
        commit(*args)
        committed.append(args[1])

    monkeypatch.setattr(shards, "_commit_shard", crash_on_the_third_shard)
    with pytest.raises(RuntimeError, match="preempted"):
        shards.prepare_shards(spec, _options(documents_per_shard=40), out)
    monkeypatch.setattr(shards, "_commit_shard", commit)
    first_run = len(reads)
    reads.clear()
    manifest = shards.prepare_shards(spec, _options(documents_per_shard=40), out)
    assert len(reads) == len(documents) - 80  # the two complete shards' 80 documents: not read again
    assert first_run > 80
    reference = shards.prepare_shards(spec, _options(documents_per_shard=40), str(tmp_path / "ref"))
    for key in ("train_stream_tokens", "documents", "heldout_stream_tokens"):
        assert manifest[key] == reference[key]


def test_a_token_cap_stops_reading(corpus, tmp_path):
    spec, documents, reads = corpus
    full = shards.prepare_shards(spec, _options(), str(tmp_path / "full"))
    reads.clear()
    cap = full["train_stream_tokens"] // 4
    capped = _prepare_in_processes(spec, str(tmp_path / "capped"), 2, max_train_tokens=cap)
    longest = max(s["tokens"] / max(s["documents"], 1) for s in full["shards"]) * 8
    assert cap <= capped["train_stream_tokens"] < cap + 2 * longest  # each process: one document over
    assert len(reads) < len(documents) / 2
    assert capped["max_train_tokens"] == cap
    assert np.isfinite(capped["heldout_stream_tokens"]) and capped["heldout_stream_tokens"] > 512
