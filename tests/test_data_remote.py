"""Prepared shards on gs:// (a fake GCS, tests/fake_gcs.py) are read where they are: byte-range
reads of single records, no copy on the host; batches equal those of the same shards on disk."""

import os

import numpy as np
import pytest
from etils import epath
from fake_gcs import install
from run_configs import flat_run
from test_data import config_for, make_documents, write_corpus

from neoscale.data import prepare, records, shards
from neoscale.training import loop as loop_lib


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"), make_documents(240))
    return prepare(config_for(corpus, tmp_path_factory.mktemp("cache"), tokenizer="gpt2"))


def _upload(directory: str, remote: str) -> None:
    for name in sorted(os.listdir(directory)):
        if not name.startswith(".tmp"):
            epath.Path(directory, name).copy(epath.Path(remote) / name)


def _files_under(path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs}


def test_record_offsets_find_every_record_across_block_headers(tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter

    path = str(tmp_path / "t.array_record")
    rng = np.random.default_rng(0)
    contents = [rng.integers(0, 256, size, np.uint8).tobytes() for size in [32768] * 7 + [5, 70000, 3]]
    writer = ArrayRecordWriter(path, shards.WRITER_OPTIONS)
    for record in contents:
        writer.write(record)
    writer.close()
    offsets = records.record_offsets(path, len(contents))  # checked against array_record inside
    with open(path, "rb") as f:
        data = f.read()
    for offset, record in zip(offsets, contents, strict=True):
        start = records._physical(int(offset))
        end = records._physical(int(offset) + len(record) - 1) + 1
        assert records._unblock(data[start:end], start) == record
    assert any(start // records.BLOCK != (start + 32767) // records.BLOCK
               for start in map(records._physical, offsets[:7]))  # some span a block header


def test_training_batches_from_gcs_equal_local_ones_without_a_copy(local, tmp_path, monkeypatch):
    install(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _upload(local.directory, "gs://bucket/data")
    before = _files_under(tmp_path)
    remote = prepare(config_for("prepared:gs://bucket/data", tmp_path / "cache", tokenizer="gpt2"))
    source = remote._reader(slice(None)).source
    assert isinstance(source, records.RangeRecords)
    want = local.train_iterator(8, process_index=1, process_count=2)
    got = remote.train_iterator(8, process_index=1, process_count=2)
    for _ in range(5):
        a, b = next(want), next(got)
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        np.testing.assert_array_equal(a["targets"], b["targets"])
    np.testing.assert_array_equal(remote.heldout_stream, local.heldout_stream)
    assert _files_under(tmp_path) == before  # nothing written on the host: no copy
    # Only the windows' bytes: 5 batches x 4 rows, each one ranged read (two where it crosses a
    # record boundary) of its 33 uint16 tokens (plus a block header where it crosses one).
    assert 5 * 4 <= source.reads <= 5 * 4 * 2
    assert 5 * 4 * 33 * 2 <= source.bytes_read <= 5 * 4 * (33 * 2 + 2 * records.BLOCK_HEADER)


@pytest.mark.slow
def test_a_run_trains_from_gcs_shards_without_copying_them(local, tmp_path, monkeypatch):
    install(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _upload(local.directory, "gs://bucket/data")
    before = _files_under(tmp_path)
    run_dir = tmp_path / "run"  # orbax reaches gs:// through Google's client, which the fake is not
    config = flat_run(workdir=str(run_dir), size="w32d2h2", data="prepared:gs://bucket/data",
                       tokenizer="gpt2", seq_len=16, batch_size=8, steps=4, log_every=2, eval_every=2,
                       checkpoint_every=2, learning_rate=1e-2, heldout_tokens=256, tensorboard=False,
                       data_cache_dir=str(tmp_path / "cache"), model_overrides={"max_positions": 16})
    result = loop_lib.train(config)
    assert result.step == 4 and np.isfinite(result.eval_loss)
    assert loop_lib.is_finished(run_dir)
    assert {f for f in _files_under(tmp_path) if not f.startswith("run/")} == before
