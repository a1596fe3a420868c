"""Data pipeline: tokenizer determinism, packing, held-out split, resumable sharded iterators."""

import itertools
import json

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from neoscale.data import DataConfig, measure_throughput, packing, prepare, tokenizer

SEQ_LEN = 32
HELDOUT = 1024


def make_documents(count: int, seed: int = 0) -> list[str]:
    """Distinct English-like documents of random pseudo-words, some with newlines."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "an", "el", "or", "is", "ben"]
    words = ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(300)]
    documents = []
    for i in range(count):
        lines = [" ".join(rng.choice(words, size=rng.integers(5, 15))) for _ in range(6)]
        documents.append(f"Document {i}.\n" + "\n".join(lines) + ".")
    return documents


def write_corpus(directory, documents: list[str]) -> str:
    """The first third as .txt files (one document each), the rest as one .jsonl file."""
    directory.mkdir(parents=True, exist_ok=True)
    split = len(documents) // 3
    for i, text in enumerate(documents[:split]):
        (directory / f"doc{i:04d}.txt").write_text(text, encoding="utf-8")
    with open(directory / "rest.jsonl", "w", encoding="utf-8") as f:
        for text in documents[split:]:
            f.write(json.dumps({"text": text, "id": 0}) + "\n")
    return f"text:{directory}/*"


def config_for(data: str, cache, **overrides) -> DataConfig:
    fields = dict(
        data=data,
        tokenizer="train:400",
        seq_len=SEQ_LEN,
        heldout_tokens=HELDOUT,
        cache_dir=str(cache),
    )
    return DataConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    documents = make_documents(240)
    return documents, write_corpus(tmp_path_factory.mktemp("corpus"), documents)


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    return prepare(config_for(corpus[1], tmp_path_factory.mktemp("cache")))


def split_documents(prepared, stream: np.ndarray) -> list[str]:
    """Decodes a stream into its documents (the text between EOS tokens)."""
    pieces = np.split(np.asarray(stream), np.flatnonzero(stream == prepared.eos_id) + 1)
    return [prepared.tokenizer.decode(p[p != prepared.eos_id].tolist()) for p in pieces]


def train_documents(prepared) -> list[str]:
    """Every training document, decoded from the shards (each shard's stream ends with EOS)."""
    documents = []
    for stream in prepared.train_shard_tokens():
        decoded = split_documents(prepared, stream)
        assert decoded[-1] == ""
        documents += decoded[:-1]
    return documents


def test_prepare_describes_the_data(prepared, corpus):
    description = prepared.description
    assert description["documents"] == len(corpus[0])
    assert description["train_documents"] + description["heldout_documents"] == len(corpus[0])
    assert description["files"] == 81  # 80 .txt files and one .jsonl
    assert description["vocab_size"] == prepared.vocab_size == 400
    assert prepared.eos_id == 2
    windows = sum(packing.num_windows(len(s), SEQ_LEN) for s in prepared.train_shard_tokens())
    assert prepared.train_tokens == windows * SEQ_LEN
    # Every held-out token is evaluated but the tail shorter than one window.
    assert HELDOUT <= prepared.heldout_tokens <= len(prepared.heldout_stream) - 1
    assert len(prepared.heldout_stream) - 1 - prepared.heldout_tokens < SEQ_LEN
    assert description["heldout_stream_tokens"] == len(prepared.heldout_stream)
    json.dumps(description)  # JSON-able
    # bytes/token measured on the held-out targets: decoding gives back their exact text.
    targets = prepared.heldout_stream[1 : prepared.heldout_tokens + 1]
    assert prepared.bytes_per_token == pytest.approx(
        tokenizer.utf8_bytes(prepared.tokenizer, targets) / prepared.heldout_tokens
    )
    assert 1.0 < prepared.bytes_per_token < 8.0
    assert prepared.bits_per_byte(2.0) == pytest.approx(2.0 / np.log(2) / prepared.bytes_per_token)
    assert prepared.epochs(prepared.train_tokens * 3 // 2) == pytest.approx(1.5)


def test_second_prepare_loads_the_cache(prepared, corpus):
    again = prepare(config_for(corpus[1], prepared.directory.rsplit("/data/", 1)[0]))
    assert again.directory == prepared.directory
    assert again.manifest == prepared.manifest


def test_tokenizer_training_is_deterministic(prepared, corpus, tmp_path):
    again = prepare(config_for(corpus[1], tmp_path))  # a fresh cache: trains again
    assert again.directory != prepared.directory
    with open(again.tokenizer_path, "rb") as a, open(prepared.tokenizer_path, "rb") as b:
        assert a.read() == b.read()
    for a, b in itertools.zip_longest(again.train_shard_tokens(), prepared.train_shard_tokens()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.heldout_stream, prepared.heldout_stream)


def test_unigram_training_is_deterministic(corpus):
    models = [tokenizer.train(corpus[0], 400, "unigram") for _ in range(2)]
    assert models[0] == models[1]


def test_stream_joins_whole_documents_with_eos(prepared, corpus):
    documents = train_documents(prepared)
    assert len(documents) == prepared.description["train_documents"]
    assert set(documents) <= set(corpus[0])  # exact round trip, whole documents


def test_train_and_heldout_documents_are_disjoint(prepared, corpus):
    training = train_documents(prepared)
    heldout = split_documents(prepared, prepared.heldout_stream)
    assert heldout[-1] == ""  # whole documents, each followed by EOS
    heldout = heldout[:-1]
    assert len(heldout) == prepared.description["heldout_documents"] >= 3
    assert set(heldout) <= set(corpus[0])
    assert not set(heldout) & set(training)
    # Every document is on exactly one side, exactly once.
    assert sorted(training + heldout) == sorted(corpus[0])


def test_every_token_once_per_epoch_and_reshuffled():
    stream = np.arange(1000, dtype=np.int32)  # unique tokens make windows identifiable
    windows = packing.num_windows(len(stream), 16)
    assert windows == 62  # 999 // 16: the 7-token tail (992..999) is dropped
    dataset = packing.train_dataset(stream, 16, 8, slice(None), seed=3)
    batches = [dataset[i] for i in range(16)]  # 128 rows: two epochs and a bit
    inputs = np.concatenate([b["inputs"] for b in batches])
    targets = np.concatenate([b["targets"] for b in batches])
    np.testing.assert_array_equal(targets, inputs + 1)
    for epoch in range(2):
        rows = slice(epoch * windows, (epoch + 1) * windows)
        np.testing.assert_array_equal(np.sort(inputs[rows].ravel()), np.arange(windows * 16))
        np.testing.assert_array_equal(np.sort(targets[rows].ravel()), np.arange(1, windows * 16 + 1))
    assert not np.array_equal(inputs[:windows], inputs[windows : 2 * windows])  # new order


def test_train_batches_shapes_and_determinism(prepared):
    a, b = prepared.train_iterator(16), prepared.train_iterator(16)
    for _ in range(3):
        x, y = next(a), next(b)
        assert x["inputs"].shape == x["targets"].shape == (16, SEQ_LEN)
        assert x["inputs"].dtype == np.int32
        np.testing.assert_array_equal(x["inputs"][:, 1:], x["targets"][:, :-1])
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
    other_seed = next(prepared.train_iterator(16, seed=1))
    assert not np.array_equal(other_seed["inputs"], x["inputs"])


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def test_iterator_state_restores_the_exact_next_batches(prepared):
    steps_per_epoch = prepared.num_train_windows // 16
    iterator = prepared.train_iterator(16)
    take(iterator, steps_per_epoch - 1)  # the next batches cross the epoch boundary
    state = iterator.get_state()
    expected = take(iterator, 3)
    restored = prepared.train_iterator(16)
    restored.set_state(state)
    for want, got in zip(expected, take(restored, 3), strict=True):
        np.testing.assert_array_equal(want["inputs"], got["inputs"])
        np.testing.assert_array_equal(want["targets"], got["targets"])


def test_iterator_round_trips_through_orbax_checkpoint_manager(prepared, tmp_path):
    """As the training loop does it: an async save, training goes on, a later restore."""
    iterator = prepared.train_iterator(16)
    take(iterator, 5)
    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=True)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as manager:
        manager.save(
            5,
            args=ocp.args.Composite(
                data=grain.checkpoint.CheckpointSave(iterator),
                meta=ocp.args.JsonSave({"step": 5}),
            ),
        )
        expected = take(iterator, 2)  # the iterator moves on while the checkpoint is written
        manager.wait_until_finished()
    fresh = prepared.train_iterator(16)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as manager:
        restored = manager.restore(
            manager.latest_step(),
            args=ocp.args.Composite(
                data=grain.checkpoint.CheckpointRestore(fresh), meta=ocp.args.JsonRestore()
            ),
        )
    assert restored.meta == {"step": 5}
    assert restored.data is fresh
    for want, got in zip(expected, take(restored.data, 2), strict=True):
        np.testing.assert_array_equal(want["inputs"], got["inputs"])


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_split_the_global_batch_without_overlap(prepared, process_count):
    single = take(prepared.train_iterator(16), 3)
    shards = [
        take(prepared.train_iterator(16, process_index=p, process_count=process_count), 3)
        for p in range(process_count)
    ]
    for step, whole in enumerate(single):
        for key in ("inputs", "targets"):
            parts = [shard[step][key] for shard in shards]
            assert all(part.shape == (16 // process_count, SEQ_LEN) for part in parts)
            np.testing.assert_array_equal(np.concatenate(parts), whole[key])


def test_eval_batches_are_the_fixed_heldout_set(prepared):
    evaluated = prepared.heldout_tokens
    windows = evaluated // SEQ_LEN
    assert windows >= HELDOUT // SEQ_LEN
    for batch_size in (8, 12):  # windows are not a multiple of 12: padded rows, masked out
        batches = prepared.eval_batches(batch_size)
        assert len(batches) == -(-windows // batch_size)
        assert sum(b["mask"].sum() for b in batches) == evaluated
        inputs = np.concatenate([b["inputs"] for b in batches])[:windows]
        np.testing.assert_array_equal(inputs.ravel(), prepared.heldout_stream[:evaluated])
        targets = np.concatenate([b["targets"] for b in batches])[:windows]
        np.testing.assert_array_equal(targets.ravel(), prepared.heldout_stream[1 : evaluated + 1])
    halves = [prepared.eval_batches(8, process_index=p, process_count=2) for p in range(2)]
    whole = prepared.eval_batches(8)
    for a, b, w in zip(*halves, whole, strict=True):
        np.testing.assert_array_equal(np.concatenate([a["inputs"], b["inputs"]]), w["inputs"])


def test_heldout_set_is_the_same_for_every_seq_len(prepared, corpus):
    other = prepare(config_for(corpus[1], prepared.directory.rsplit("/data/", 1)[0], seq_len=64))
    assert other.directory == prepared.directory  # seq_len does not change the cache
    assert other.heldout_tokens == (len(prepared.heldout_stream) - 1) // 64 * 64
    first = np.concatenate([b["targets"] for b in other.eval_batches(4)]).ravel()[: other.heldout_tokens]
    np.testing.assert_array_equal(first, prepared.heldout_stream[1 : other.heldout_tokens + 1])


def test_throughput_counts_the_tokens_of_the_timed_batches(prepared):
    ticks = iter([10.0, 12.5])  # start, end: 2.5 s for 5 batches (the warm-up batch is not timed)
    rate = measure_throughput(prepared, 16, num_batches=5, clock=lambda: next(ticks))
    assert rate == 5 * 16 * SEQ_LEN / 2.5


def test_context_free_loss_is_the_heldout_loss_of_the_training_unigram(prepared):
    """H of the ladder's law: every training token counted (the corpus is below the sample size),
    add-1/2 smoothing, scored on exactly the held-out targets that evaluation scores."""
    counts = np.bincount(np.concatenate(list(prepared.train_shard_tokens())),
                         minlength=prepared.vocab_size).astype(np.float64)
    probabilities = (counts + 0.5) / (counts.sum() + 0.5 * prepared.vocab_size)
    targets = np.concatenate([b["targets"][b["mask"] > 0] for b in prepared.eval_batches(8)])
    expected = -np.log(probabilities[targets]).mean()
    assert prepared.context_free_loss() == pytest.approx(expected, rel=1e-9)
    # Below a uniform guess (text is not uniform), and a sample of the records comes close.
    assert prepared.context_free_loss() < np.log(prepared.vocab_size) - 0.3
    assert prepared.context_free_loss(max_train_tokens=1) == pytest.approx(expected, rel=0.2)
