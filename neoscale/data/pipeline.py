"""Preparing a corpus once (read, split, tokenize, cache) and serving packed, resumable batches.

``prepare(DataConfig(...))`` returns a ``PreparedData``; its ``train_iterator`` is a grain
``DatasetIterator`` over an endless, per-epoch reshuffled stream of packed windows, and
``eval_batches`` the fixed held-out set. The cache directory ``{cache_dir}/data/{key}`` holds
``tokenizer.model``, ``train.npy`` and ``heldout.npy`` (token streams, documents joined by EOS)
and ``description.json``; it is built in a temporary directory and renamed into place, so a
failure never leaves a half-written cache behind (only a process killed mid-build leaves a
``.tmp-*`` directory, which is never read). The key hashes the source's fingerprint (file names,
sizes and mtimes; package versions; tfds name, version and size), the tokenizer settings (or the
given model's sha256), seed and heldout_tokens; seq_len is applied at read time, so every
sequence length shares one cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time

import grain
import numpy as np

from neoscale.data import packing, sources, tokenizer

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the cached files change meaning
HELDOUT_BYTES_PER_TOKEN = 8  # held-out documents are chosen to hold >= 8 bytes per wanted token


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to train on. Every size of a study uses the same DataConfig (and so the same cache).

    data: "builtin" | "text:GLOB" | "tfds:NAME[:VERSION]".
    tfds_data_dir: where the tfds dataset was built (local path or gs://); None: tfds default.
    tokenizer: "train:VOCAB" (BPE), "train:VOCAB:unigram", or a path to a sentencepiece .model.
    seq_len: tokens per training sequence.
    heldout_tokens: size of the fixed held-out evaluation set, the same for every model size
        (the first heldout_tokens tokens of the held-out documents' stream; evaluation uses the
        largest multiple of seq_len that fits).
    seed: chooses the held-out documents and the shuffling of training windows.
    cache_dir: where prepared data is cached (the runner passes WORKDIR/cache).
    text_field: the text field of .jsonl records and tfds examples.
    tfds_split: the tfds split documents are read from (held-out documents are taken from it).
    max_documents: read at most this many documents (None: all), e.g. for large tfds datasets.
    """

    data: str = "builtin"
    tfds_data_dir: str | None = None
    tokenizer: str = "train:8192"
    seq_len: int = 256
    heldout_tokens: int = 65536
    seed: int = 0
    cache_dir: str = "~/.cache/neoscale"
    text_field: str = "text"
    tfds_split: str = "train"
    max_documents: int | None = None

    def source(self) -> sources.SourceSpec:
        return sources.parse(
            self.data,
            text_field=self.text_field,
            tfds_data_dir=self.tfds_data_dir,
            tfds_split=self.tfds_split,
            max_documents=self.max_documents,
        )


def check_seq_len(seq_len: int, max_positions: int) -> None:
    """Raises the one-line error for a seq_len the model's position embeddings cannot hold."""
    if seq_len > max_positions:
        raise ValueError(
            f"seq_len={seq_len} is larger than the model's max_positions={max_positions}: "
            f"use --seq_len={max_positions} or less, or a model with more positions"
        )


def _check_config(config: DataConfig) -> None:
    if config.seq_len < 1:
        raise ValueError(f"seq_len={config.seq_len} must be positive")
    if config.heldout_tokens < config.seq_len:
        raise ValueError(
            f"heldout_tokens={config.heldout_tokens} is smaller than seq_len={config.seq_len}: "
            "raise heldout_tokens to at least one sequence"
        )
    if config.max_documents is not None and config.max_documents < 1:
        raise ValueError(f"max_documents={config.max_documents} must be positive (or None: all)")
    if not 0 <= config.seed < 2**32:
        raise ValueError(f"seed={config.seed} must be in [0, 2**32)")


def _cache_key(config: DataConfig, source: sources.SourceSpec, spec: tokenizer.TokenizerSpec):
    tokenizer_id = dataclasses.asdict(spec)
    if spec.path:
        with open(spec.path, "rb") as f:
            tokenizer_id["sha256"] = hashlib.sha256(f.read()).hexdigest()
    else:
        tokenizer_id["settings"] = [tokenizer.NUM_THREADS, tokenizer.MAX_TRAINING_BYTES]
    fields = {
        "format": CACHE_FORMAT,
        "source": sources.fingerprint(source),
        "tokenizer": tokenizer_id,
        "seed": config.seed,
        "heldout_tokens": config.heldout_tokens,
        "heldout_bytes_per_token": HELDOUT_BYTES_PER_TOKEN,
    }
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _split(documents: list[str], config: DataConfig) -> tuple[list[str], list[str]]:
    """(train, held-out) documents; held-out ones are whole documents chosen by packing."""
    sizes = np.array([len(d.encode("utf-8")) for d in documents], dtype=np.int64)
    budget = config.heldout_tokens * HELDOUT_BYTES_PER_TOKEN
    if len(documents) < 2 or budget > sizes.sum() // 2:
        raise ValueError(
            f"the corpus ({len(documents)} documents, {sizes.sum()} bytes) is too small for "
            f"heldout_tokens={config.heldout_tokens} (held-out documents need ~{budget} bytes, "
            "at most half the corpus): lower heldout_tokens or add data"
        )
    heldout = set(packing.heldout_documents(sizes, budget, config.seed).tolist())
    train = [d for i, d in enumerate(documents) if i not in heldout]
    return train, [documents[i] for i in sorted(heldout)]


def _build(config, source, spec, directory: str) -> None:
    """Reads, splits, trains/copies the tokenizer and tokenizes into ``directory``."""
    start = time.perf_counter()
    documents, description = sources.read(source)
    train_documents, heldout_documents = _split(documents, config)
    del documents
    model_path = os.path.join(directory, "tokenizer.model")
    if spec.path:
        shutil.copyfile(spec.path, model_path)
    else:
        order = np.random.default_rng(config.seed).permutation(len(train_documents))
        model = tokenizer.train((train_documents[i] for i in order), spec.vocab_size, spec.model_type)
        with open(model_path, "wb") as f:
            f.write(model)
    processor = tokenizer.load(model_path)
    train = tokenizer.encode(processor, train_documents)
    heldout = tokenizer.encode(processor, heldout_documents)
    if len(heldout) < config.heldout_tokens + 1:
        raise ValueError(
            f"the held-out documents hold only {len(heldout) - 1} tokens, fewer than "
            f"heldout_tokens={config.heldout_tokens}: lower heldout_tokens"
        )
    dtype = np.uint16 if processor.vocab_size() <= 2**16 else np.int32
    np.save(os.path.join(directory, "train.npy"), train.astype(dtype))
    heldout = heldout[: config.heldout_tokens + 1]  # the fixed held-out set
    np.save(os.path.join(directory, "heldout.npy"), heldout.astype(dtype))
    description.update(
        train_documents=len(train_documents),
        heldout_documents=len(heldout_documents),
        train_stream_tokens=len(train),
        tokenizer=config.tokenizer,
        vocab_size=processor.vocab_size(),
        eos_id=processor.eos_id(),
        seed=config.seed,
        prepare_seconds=round(time.perf_counter() - start, 2),
    )
    with open(os.path.join(directory, "description.json"), "w") as f:
        json.dump(description, f, indent=1)


def prepare(config: DataConfig) -> PreparedData:
    """Reads, tokenizes and caches the data once (later calls load the cache).

    Raises ValueError / FileNotFoundError with one-line messages for bad input; a failure
    leaves nothing in the cache.
    """
    _check_config(config)
    source = config.source()
    spec = tokenizer.parse(config.tokenizer)
    root = os.path.join(os.path.expanduser(config.cache_dir), "data")
    directory = os.path.join(root, _cache_key(config, source, spec))
    if not os.path.isdir(directory):
        log.info("preparing %s into %s", config.data, directory)
        os.makedirs(root, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=".tmp-", dir=root)
        try:
            _build(config, source, spec, scratch)
            try:
                os.replace(scratch, directory)
            except OSError:  # another process finished first: keep its identical cache
                if not os.path.isdir(directory):
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return PreparedData(directory, config)


class PreparedData:
    """A prepared corpus: tokenizer, training stream and the fixed held-out set.

    Attributes: vocab_size, eos_id, seq_len, train_tokens (target tokens in one epoch),
    heldout_tokens (target tokens evaluated), bytes_per_token (held-out UTF-8 bytes per target
    token), tokenizer_path, tokenizer (the loaded SentencePieceProcessor), train_stream and
    heldout_stream (the token streams), description (JSON-able).
    """

    def __init__(self, directory: str, config: DataConfig):
        self.directory = directory
        self.seq_len = config.seq_len
        self.seed = config.seed
        self.tokenizer_path = os.path.join(directory, "tokenizer.model")
        processor = tokenizer.load(self.tokenizer_path)
        self.tokenizer = processor  # sentencepiece.SentencePieceProcessor, e.g. to decode samples
        self.vocab_size: int = processor.vocab_size()
        self.eos_id: int = processor.eos_id()
        self.train_stream: np.ndarray = np.load(
            os.path.join(directory, "train.npy"), mmap_mode="r"
        )  # uint16|int32 [tokens]: training documents, each followed by EOS (memory-mapped)
        self.heldout_stream: np.ndarray = np.load(
            os.path.join(directory, "heldout.npy")
        )  # [heldout_tokens + 1]: the start of the held-out documents' stream
        self.num_train_windows = packing.num_windows(len(self.train_stream), self.seq_len)
        if self.num_train_windows < 1:
            raise ValueError(
                f"the training split holds {len(self.train_stream)} tokens, fewer than "
                f"seq_len + 1 = {self.seq_len + 1}: lower seq_len or add data"
            )
        self.num_heldout_windows = config.heldout_tokens // self.seq_len
        self.train_tokens: int = self.num_train_windows * self.seq_len
        self.heldout_tokens: int = self.num_heldout_windows * self.seq_len
        targets = self.heldout_stream[1 : self.heldout_tokens + 1]
        self.bytes_per_token: float = tokenizer.utf8_bytes(processor, targets) / len(targets)
        with open(os.path.join(directory, "description.json")) as f:
            self.description: dict = json.load(f)
        self.description.update(
            seq_len=self.seq_len,
            train_tokens=self.train_tokens,
            heldout_tokens=self.heldout_tokens,
            bytes_per_token=round(self.bytes_per_token, 6),
            tokenizer_path=self.tokenizer_path,
            cache=directory,
        )

    def _local_rows(self, global_batch_size: int, process_index: int, process_count: int):
        if global_batch_size < 1 or global_batch_size % process_count:
            raise ValueError(
                f"global batch size {global_batch_size} is not a positive multiple of the "
                f"process count {process_count}: choose a multiple"
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} not in [0, {process_count})")
        local = global_batch_size // process_count
        return slice(process_index * local, (process_index + 1) * local)

    def train_iterator(
        self,
        global_batch_size: int,
        *,
        process_index: int = 0,
        process_count: int = 1,
        seed: int | None = None,
    ) -> grain.DatasetIterator:
        """Endless iterator of {"inputs", "targets"}: int32 [global_batch_size // process_count,
        seq_len], targets = inputs shifted by one.

        Window order: a seeded permutation per epoch (epoch e uses seed + e), batches taken from
        the concatenation of epochs; process p gets rows [p*local, (p+1)*local) of each global
        batch. ``get_state()`` / ``set_state()`` (or orbax with grain.checkpoint.CheckpointSave /
        CheckpointRestore) resume with exactly the next batch. Batches are prepared by background
        threads.
        """
        rows = self._local_rows(global_batch_size, process_index, process_count)
        if global_batch_size > self.num_train_windows:
            raise ValueError(
                f"global batch size {global_batch_size} exceeds the {self.num_train_windows} "
                f"training sequences of one epoch: lower the batch size or seq_len, or add data"
            )
        seed = self.seed if seed is None else seed
        dataset = packing.train_dataset(self.train_stream, self.seq_len, global_batch_size, rows, seed)
        read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=16)
        return iter(dataset.to_iter_dataset(read_options))

    def eval_batches(
        self, global_batch_size: int, *, process_index: int = 0, process_count: int = 1
    ) -> list[dict]:
        """The fixed held-out set, in order, as batches {"inputs", "targets", "mask"}.

        inputs/targets: int32 [global_batch_size // process_count, seq_len]; mask: float32 of the
        same shape, 1 for held-out tokens and 0 for the padding rows that fill the last batch
        (those repeat the first windows). Weight the loss by ``mask`` to average over exactly
        ``heldout_tokens`` tokens whatever the batch size.
        """
        rows = self._local_rows(global_batch_size, process_index, process_count)
        num_batches = math.ceil(self.num_heldout_windows / global_batch_size)
        window_ids = np.arange(num_batches * global_batch_size) % self.num_heldout_windows
        real = np.arange(num_batches * global_batch_size) < self.num_heldout_windows
        gather = packing.GatherWindows(self.heldout_stream, self.seq_len, rows)
        batches = []
        for ids, keep in zip(window_ids.reshape(num_batches, -1), real.reshape(num_batches, -1), strict=True):
            batch = gather(ids)
            mask = np.broadcast_to(keep[rows, None], batch["targets"].shape)
            batches.append({**batch, "mask": mask.astype(np.float32)})
        return batches

    def epochs(self, tokens_seen: int) -> float:
        """Training epochs that tokens_seen (target tokens) amount to."""
        return tokens_seen / self.train_tokens

    def bits_per_byte(self, loss_nats_per_token: float) -> float:
        """Converts a held-out loss in nats per token to bits per UTF-8 byte."""
        return loss_nats_per_token / math.log(2) / self.bytes_per_token


def measure_throughput(prepared: PreparedData, global_batch_size: int, num_batches: int = 200) -> float:
    """Tokens per second (inputs) the training iterator delivers, after one warm-up batch."""
    iterator = prepared.train_iterator(global_batch_size)
    next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(iterator)
    return num_batches * global_batch_size * prepared.seq_len / (time.perf_counter() - start)
