"""Prepared token shards: resumable preparation, processes' shares, held-out choice and mixture."""

import json
import pathlib
import threading

import numpy as np
import pytest
from test_data import config_for, make_documents, split_documents, train_documents, write_corpus

from neoscale.data import DataConfig, corpus_size, prepare, shards, sources

HELDOUT = 1024


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    documents = make_documents(240, seed=1)
    return documents, write_corpus(tmp_path_factory.mktemp("corpus"), documents)


def options(**overrides) -> shards.PrepareOptions:
    fields = dict(tokenizer="train:400", heldout_tokens=HELDOUT, seed=0, documents_per_shard=30)
    return shards.PrepareOptions(**{**fields, **overrides})


def read_prepared(out, seq_len=32):
    return prepare(DataConfig(data=f"prepared:{out}", tokenizer="train:400", seq_len=seq_len,
                              heldout_tokens=HELDOUT, cache_dir=str(out) + "-cache"))


def shard_files(out) -> dict[str, tuple[int, int]]:
    """name -> (inode, mtime_ns) of every committed training shard."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.glob("train-*.array_record"))}


def test_interrupted_preparation_resumes_without_rewriting_or_duplicating(corpus, tmp_path, monkeypatch):
    spec = sources.parse(corpus[1])
    whole = shards.prepare_shards(spec, options(), str(tmp_path / "whole"))
    assert len(whole["shards"]) == 8  # 240 documents / 30 per shard (one process: no train-extra)

    out = tmp_path / "interrupted"
    finish_shard, calls = shards._finish_shard, []

    def failing(*args, **kwargs):
        if len(calls) == 3:
            raise RuntimeError("killed")
        calls.append(1)
        return finish_shard(*args, **kwargs)

    monkeypatch.setattr(shards, "_finish_shard", failing)
    with pytest.raises(RuntimeError, match="killed"):
        shards.prepare_shards(spec, options(), str(out))
    monkeypatch.setattr(shards, "_finish_shard", finish_shard)
    before = shard_files(out)
    assert len(before) == 3 and not (out / shards.MANIFEST).exists()
    assert not list(out.glob(".tmp-*"))  # scratch files are cleaned up

    resumed = shards.prepare_shards(spec, options(), str(out))
    after = shard_files(out)
    assert {name: after[name] for name in before} == before  # complete shards never rewritten
    assert [s["path"] for s in resumed["shards"]] == [s["path"] for s in whole["shards"]]
    for key in ("shards", "train_stream_tokens", "heldout_stream_tokens", "documents"):
        assert resumed[key] == whole[key]
    prepared = read_prepared(out)
    documents = train_documents(prepared) + split_documents(prepared, prepared.heldout_stream)[:-1]
    assert sorted(documents) == sorted(corpus[0])  # every document exactly once


def test_processes_prepare_disjoint_shares_with_the_same_heldout_set(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "POLL_SECONDS", 0.02)
    spec = sources.parse(corpus[1])
    single = shards.prepare_shards(spec, options(), str(tmp_path / "one"))
    out = tmp_path / "two"
    worker = threading.Thread(target=shards.prepare_shards,
                              args=(spec, options(process_index=1, process_count=2), str(out)))
    worker.start()
    manifest = shards.prepare_shards(spec, options(process_index=0, process_count=2), str(out))
    worker.join()
    names = [s["path"] for s in manifest["shards"]]
    assert any("-00000-of-00002-" in n for n in names) and any("-00001-of-00002-" in n for n in names)
    one = json.loads((tmp_path / "one" / shards.HELDOUT_JSON).read_text())
    two = json.loads((out / shards.HELDOUT_JSON).read_text())
    assert one == two  # the held-out choice does not depend on the number of processes
    np.testing.assert_array_equal(np.load(tmp_path / "one" / shards.HELDOUT_NPY),
                                  np.load(out / shards.HELDOUT_NPY))
    assert manifest["train_stream_tokens"] == single["train_stream_tokens"]
    a, b = read_prepared(tmp_path / "one"), read_prepared(out)
    assert sorted(train_documents(a)) == sorted(train_documents(b))


def test_readers_of_two_processes_cover_each_global_batch_disjointly(corpus, tmp_path):
    shards.prepare_shards(sources.parse(corpus[1]), options(), str(tmp_path / "p"))
    prepared = read_prepared(tmp_path / "p")
    assert prepared.description["shards"] == 8  # windows are read across several shards
    whole = prepared.train_iterator(16)
    halves = [prepared.train_iterator(16, process_index=p, process_count=2) for p in range(2)]
    for _ in range(prepared.num_train_windows // 16 + 2):  # past an epoch boundary
        batch = next(whole)
        parts = [next(h) for h in halves]
        np.testing.assert_array_equal(np.concatenate([p["inputs"] for p in parts]), batch["inputs"])
        assert not np.array_equal(parts[0]["inputs"], parts[1]["inputs"])


def test_windows_read_from_shards_are_the_shards_streams(corpus, tmp_path):
    shards.prepare_shards(sources.parse(corpus[1]), options(), str(tmp_path / "p"))
    prepared = read_prepared(tmp_path / "p", seq_len=50)
    streams = list(prepared.train_shard_tokens())
    expected = np.concatenate([s[: (len(s) - 1) // 50 * 50].reshape(-1, 50) for s in streams])
    iterator = prepared.train_iterator(8)
    rows = np.concatenate([next(iterator)["inputs"] for _ in range(prepared.num_train_windows // 8)])
    # One epoch visits each window once, in a shuffled order.
    assert len(rows) == prepared.num_train_windows // 8 * 8
    got = {r.tobytes() for r in rows}
    assert got <= {r.astype(np.int32).tobytes() for r in expected}
    assert len(got) == len(rows)


def test_record_boundaries_do_not_change_the_windows(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "RECORD_TOKENS", 37)  # windows of 33 tokens span two records
    shards.prepare_shards(sources.parse(corpus[1]), options(), str(tmp_path / "small"))
    monkeypatch.undo()
    shards.prepare_shards(sources.parse(corpus[1]), options(), str(tmp_path / "large"))
    small, large = read_prepared(tmp_path / "small"), read_prepared(tmp_path / "large")
    assert small.manifest["record_tokens"] == 37
    for a, b in zip(small.train_shard_tokens(), large.train_shard_tokens(), strict=True):
        np.testing.assert_array_equal(a, b)
    x, y = small.train_iterator(8), large.train_iterator(8)
    for _ in range(10):
        np.testing.assert_array_equal(next(x)["inputs"], next(y)["inputs"])


def test_builtin_heldout_mixes_sources_and_is_reported(tmp_path):
    prepared = prepare(DataConfig(tokenizer="train:512", seq_len=64, heldout_tokens=32768,
                                  cache_dir=str(tmp_path)))
    mixture = prepared.description["heldout_mixture"]
    assert set(mixture) == {"wikipedia", "shakespeare"}
    assert min(mixture.values()) > 0.15  # seed 0 used to give all Wikipedia
    assert sum(mixture.values()) == pytest.approx(1.0, abs=1e-3)
    assert set(prepared.description["train_mixture"]) == {"wikipedia", "shakespeare"}
    heldout = json.loads((pathlib.Path(prepared.directory) / shards.HELDOUT_JSON).read_text())
    assert sum(heldout["tokens"]) == len(prepared.heldout_stream)  # every held-out token kept
    assert len(prepared.heldout_stream) - 32769 < max(heldout["tokens"])  # no document too many
    other = prepare(DataConfig(tokenizer="train:512", seq_len=64, heldout_tokens=32768, seed=1,
                               cache_dir=str(tmp_path)))
    other_heldout = json.loads((pathlib.Path(other.directory) / shards.HELDOUT_JSON).read_text())
    assert other_heldout["ids"] != heldout["ids"]


def test_corpus_size_estimates_then_counts(corpus, tmp_path):
    config = config_for(corpus[1], tmp_path)
    estimate = corpus_size(config)
    assert not estimate.exact and estimate.source == corpus[1]
    prepared = prepare(config)
    exact = corpus_size(config)
    assert exact.exact and exact.documents == len(corpus[0])
    assert exact.train_tokens == prepared.manifest["train_stream_tokens"]
    assert 0.5 < estimate.train_tokens / exact.train_tokens < 2.0
    prepared_dir = corpus_size(DataConfig(data=f"prepared:{prepared.directory}", tokenizer="train:400"))
    assert prepared_dir == exact


def test_a_larger_max_train_tokens_extends_the_preparation_and_keeps_its_heldout_set(corpus, tmp_path):
    spec = sources.parse(corpus[1])
    out = tmp_path / "p"
    gpt2 = dict(tokenizer="gpt2", documents_per_shard=10, heldout_tokens=256)  # quick
    small = shards.prepare_shards(spec, options(**gpt2, max_train_tokens=4000), str(out))
    assert 4000 <= small["train_stream_tokens"] < 4000 + 500 and not small["complete"]
    heldout, committed = (out / shards.HELDOUT_NPY).read_bytes(), shard_files(out)
    assert shards.prepare_shards(spec, options(**gpt2, max_train_tokens=2000), str(out)) == small
    assert shard_files(out) == committed  # fewer tokens asked for: reused as it is

    large = shards.prepare_shards(spec, options(**gpt2, max_train_tokens=10000), str(out))
    assert 10000 <= large["train_stream_tokens"] < 10000 + 500
    assert (out / shards.HELDOUT_NPY).read_bytes() == heldout  # the held-out set stays
    assert {name: shard_files(out)[name] for name in committed} == committed  # nothing rewritten
    whole = shards.prepare_shards(spec, options(**gpt2, max_train_tokens=None), str(out))
    assert whole["complete"] and whole["documents"] == len(corpus[0])
    prepared = prepare(DataConfig(data=f"prepared:{out}", tokenizer="gpt2", seq_len=32,
                                  heldout_tokens=256, cache_dir=str(tmp_path / "cache")))
    documents = train_documents(prepared) + split_documents(prepared, prepared.heldout_stream)[:-1]
    assert sorted(documents) == sorted(corpus[0])  # every document exactly once


def test_an_output_directory_holding_another_preparation_is_refused(corpus, tmp_path):
    spec = sources.parse(corpus[1])
    out = str(tmp_path / "p")
    shards.prepare_shards(spec, options(tokenizer="gpt2", heldout_tokens=256, max_train_tokens=4000), out)
    manifest = (tmp_path / "p" / shards.MANIFEST).read_text()
    with pytest.raises(ValueError, match=r"holds another preparation \(seed 0, tokenizer 'gpt2'; "
                                         r"this one: seed 3, tokenizer 'train:400'\)"):
        shards.prepare_shards(spec, options(seed=3, heldout_tokens=256), out)
    other = sources.parse(f"text:{tmp_path}/other/*")
    with pytest.raises(ValueError, match="holds another preparation .source 'text:"):
        shards.prepare_shards(other, options(tokenizer="gpt2", heldout_tokens=256), out)
    assert (tmp_path / "p" / shards.MANIFEST).read_text() == manifest


def test_runs_trained_before_an_extension_keep_their_data_identity(corpus, tmp_path):
    from neoscale.training.loop import DATA_VOLATILE_FIELDS

    config = DataConfig(data=corpus[1], tokenizer="gpt2", seq_len=16, heldout_tokens=256,
                        cache_dir=str(tmp_path / "cache"))
    before = prepare(config, max_train_tokens=4000)
    after = prepare(config, max_train_tokens=10000)  # a later study reads more: extended in place
    assert after.directory == before.directory and after.train_tokens > 2 * before.train_tokens
    assert prepare(config, max_train_tokens=4000).train_tokens == after.train_tokens  # covered
    assert prepare(config).train_tokens == after.train_tokens  # a run's own call: as it is
    np.testing.assert_array_equal(after.heldout_stream, before.heldout_stream)

    def identity(description):
        return {k: v for k, v in description.items() if k not in DATA_VOLATILE_FIELDS}

    assert identity(after.description) == identity(before.description)


def test_a_capped_preparation_trains_its_tokenizer_on_the_documents_it_reads(corpus, tmp_path, monkeypatch):
    reads, documents = [], sources.documents  # documents read by each pass over the source

    def counted(spec, *args, **kwargs):
        reads.append(0)
        for document in documents(spec, *args, **kwargs):
            reads[-1] += 1
            yield document

    monkeypatch.setattr(sources, "documents", counted)
    manifest = shards.prepare_shards(sources.parse(corpus[1]), options(
        tokenizer="train:300", heldout_tokens=256, max_train_tokens=8000), str(tmp_path / "p"))
    assert manifest["tokenizer"]["setting"] == "train:300"
    # the tokenizer's pass (the shards' reads whole chunks of 256 documents: all 240 here)
    assert len(reads) == 2 and reads[0] < len(corpus[0]) / 2
