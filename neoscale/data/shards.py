"""Preparing a corpus into token shards: split off held-out documents, tokenize in parallel, write.

Layout of a prepared directory (local or gs://)::

    layout.json                        the number of shares Q (the first start's process count)
    tokenizer.json                     the tokenizer's identity (and its setting)
    tokenizer.model                    sentencepiece tokenizers only
    train-PPPPP-of-QQQQQ-KKKKKK.array_record   training shards of process P of Q, in order K
    SHARD.offsets.npy                  where each record of SHARD starts (reads in place, no copy)
    state-PPPPP-of-QQQQQ-KKKKKK.npz    what process P knew after shard K (held-out candidates)
    done-PPPPP-of-QQQQQ.json           share P finished (to its max_train_tokens, or exhausted)
    train-extra.array_record           held-out candidates that were not needed (back to training)
    heldout.npy                        the held-out documents' tokens, each followed by EOS
    heldout.json                       held-out document ids, labels and tokens
    manifest.json                      written last: shards, token counts, mixtures, description

A shard's records hold ``RECORD_TOKENS`` token ids each (the last one fewer): the shard's
documents, each followed by EOS, as one stream of ``dtype`` (uint16 when the vocabulary fits).

**Held-out documents** are chosen before anything is written: document ``i`` gets the key
``u = document_key(seed, i)``, uniform in [0, 1); the held-out set is the documents with the smallest keys,
taken in key order until they hold ``heldout_tokens + 1`` tokens (with their EOS), i.e. a uniform
random sample of whole documents across all sources. Every held-out document is evaluated (none is
taken out of training and then dropped). While tokenizing, each process keeps the smallest-key
documents it has seen that could still be held out (only keys below ``HELDOUT_MAX_FRACTION`` are
eligible); the others go to its shards. At the end, process 0 merges the processes' candidates,
keeps the global prefix and writes the rest to ``train-extra``. A trained tokenizer learns from
documents with keys at or above ``HELDOUT_MAX_FRACTION`` (never held out), in key order.

**Resuming**: a shard is written under a temporary name and renamed (on gs:// copied) into place
after its state file, so a complete shard is never rewritten and a partial one never read; a
restart skips the documents of complete shards without tokenizing them.

**Processes** (``--distributed``): process ``p`` of ``P`` tokenizes the documents ``i % P == p``
(tfds array_record sources read only those records; ``hf:`` datasets are split by file instead,
process ``p`` reading the files ``f % P == p``, so each document is downloaded once, and a
restart resumes after the last document of its complete shards), with ``workers`` tokenizer
processes.

**Shares**: the documents are split into as many shares as the preparation's first start had
processes (recorded in ``layout.json``); a restart on any number of processes works through the same
shares (process ``p`` of ``P`` takes shares ``q % P == p``), so the manifest and the training tokens
are those of an uninterrupted preparation whatever the host count of each start.

**Reading only what is needed**: with ``max_train_tokens``, each share stops reading once its
shards hold its part (``max_train_tokens / Q`` for ``Q`` shares); the held-out set comes from the
documents read. A later call asking for more tokens **extends** the preparation: each share reads
on from where it stopped, every new document going to training (the held-out set stays as it was),
and the manifest is rewritten; one asking for fewer (or as many) reuses it as it is.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import heapq
import io
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator

import numpy as np
from etils import epath

from neoscale.data import records as records_lib
from neoscale.data import sources
from neoscale.data import tokenizer as tokenizer_lib

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the files change meaning
RECORD_TOKENS = 16384  # token ids per array_record record
DOCUMENTS_PER_SHARD = 32768  # documents of one process per shard
HELDOUT_MAX_FRACTION = 0.25  # only documents with keys below this can be held out
CHUNK_DOCUMENTS = 256  # documents per tokenizer task
MANIFEST, TOKENIZER_JSON, TOKENIZER_MODEL = "manifest.json", "tokenizer.json", "tokenizer.model"
HELDOUT_NPY, HELDOUT_JSON, EXTRA_SHARD = "heldout.npy", "heldout.json", "train-extra.array_record"
LAYOUT = "layout.json"
WRITER_OPTIONS = "group_size:1,uncompressed"  # random access to single records
POLL_SECONDS = 5.0
MAX_BYTES_PER_TOKEN = 4  # text per token, at most, for English (GPT-2: 3.84; sentencepiece: fewer)
TRAIN_TOKENS_MARGIN = 0.02  # prepared beyond what a study's largest run reads: it never wraps an epoch


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """What to prepare and how. heldout_tokens and seed fix the held-out set."""

    tokenizer: str
    heldout_tokens: int
    seed: int = 0
    workers: int = 1
    process_index: int = 0
    process_count: int = 1
    documents_per_shard: int = DOCUMENTS_PER_SHARD
    max_train_tokens: int | None = None  # stop reading once the shards hold this many (None: all)


def max_train_tokens(train_tokens: float | None) -> int | None:
    """The training tokens to prepare for a study whose largest run reads ``train_tokens`` (None:
    all of the source): that plus ``TRAIN_TOKENS_MARGIN``."""
    return None if train_tokens is None else int(np.ceil(train_tokens * (1 + TRAIN_TOKENS_MARGIN)))


def covers(manifest: dict, max_train_tokens: int | None) -> bool:
    """Whether a prepared directory's manifest holds what ``max_train_tokens`` asks for: the whole
    source was read, or at least that many tokens were asked for when it was prepared."""
    prepared = manifest.get("max_train_tokens")
    if prepared is None or manifest.get("complete"):
        return True
    return max_train_tokens is not None and prepared >= max_train_tokens


def document_key(seed: int, document_id: int) -> float:
    """A uniform key in [0, 1) for a document: splitmix64 of (seed, id), a fixed hash that every
    process and every restart computes alike."""
    mask = (1 << 64) - 1
    x = (document_id + seed * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    x ^= x >> 31
    return (x >> 11) / float(1 << 53)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def _name(kind: str, options: PrepareOptions, shard: int | None = None, ext: str = "") -> str:
    name = f"{kind}-{options.process_index:05d}-of-{options.process_count:05d}"
    return f"{name}-{shard:06d}{ext}" if shard is not None else f"{name}{ext}"


# ---------------------------------------------------------------------------------------------
# Files: written locally, then committed into the output directory (rename, or copy to gs://).


def _commit(local: str, final: epath.Path) -> None:
    """Moves a finished local file to its final name (atomically on a local disk and on GCS)."""
    if "://" in str(final):
        epath.Path(local).copy(final, overwrite=True)
        os.remove(local)
    else:
        os.replace(local, final)


def _write_bytes(final: epath.Path, data: bytes, scratch: str) -> None:
    fd, local = tempfile.mkstemp(prefix=".tmp-", dir=scratch)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    _commit(local, final)


class _ShardWriter:
    """Writes one token stream as records of RECORD_TOKENS ids into an array_record file."""

    def __init__(self, path: str, dtype: np.dtype):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.path = path
        self._writer = ArrayRecordWriter(path, WRITER_OPTIONS)
        self._dtype = dtype
        self._pending: list[np.ndarray] = []
        self._pending_tokens = 0
        self.tokens = self.records = self.documents = self.bytes = 0
        self.labels: dict[str, int] = {}  # tokens per document label

    def add_document(self, document: _Candidate, eos_id: int) -> None:
        """Appends a document's tokens and EOS."""
        self.add(np.append(document.tokens, eos_id))
        self.documents += 1
        self.bytes += document.num_bytes
        self.labels[document.label] = self.labels.get(document.label, 0) + len(document.tokens) + 1

    def add(self, tokens: np.ndarray) -> None:
        self._pending.append(tokens.astype(self._dtype))
        self._pending_tokens += len(tokens)
        self.tokens += len(tokens)
        if self._pending_tokens >= RECORD_TOKENS:
            stream = np.concatenate(self._pending)
            full = len(stream) // RECORD_TOKENS * RECORD_TOKENS
            for start in range(0, full, RECORD_TOKENS):
                self._writer.write(stream[start : start + RECORD_TOKENS].tobytes())
                self.records += 1
            self._pending = [stream[full:]]
            self._pending_tokens = len(stream) - full

    def close(self, name: str) -> dict:
        """Writes the last partial record; returns the shard's manifest entry (named ``name``)."""
        if self._pending_tokens:
            self._writer.write(np.concatenate(self._pending).tobytes())
            self.records += 1
        self._writer.close()
        return {"path": name, "tokens": self.tokens, "records": self.records,
                "documents": self.documents, "bytes": self.bytes, "labels": self.labels}


# ---------------------------------------------------------------------------------------------
# Documents of this process, tokenized in parallel.


def _documents(spec: sources.SourceSpec, options: PrepareOptions, stats: sources.ReadStats,
               skip: int, last_id: int | None) -> Iterator[tuple[int, str, str]]:
    """(document id, label, text) of this process's share, in order, less its first ``skip``
    documents (those of complete shards, the last of them ``last_id``): sources read by file
    start after that document; the others read and drop them."""
    if last_id is not None and sources.splits_by_file(spec):
        return sources.documents(spec, stats, start=options.process_index, step=options.process_count,
                                 resume_after=last_id)
    documents = sources.documents(spec, stats, start=options.process_index, step=options.process_count)
    for _ in _take(documents, skip):
        pass
    return documents


_WORKER_TOKENIZER: tokenizer_lib.Tokenizer | None = None


def _init_worker(tokenizer: tokenizer_lib.Tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _encode_chunk(texts: list[str]) -> list[np.ndarray]:
    assert _WORKER_TOKENIZER is not None
    return [np.asarray(ids, np.int32) for ids in _WORKER_TOKENIZER.encode_batch(texts)]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def tokenize(documents: Iterable[tuple[int, str, str]], tokenizer: tokenizer_lib.Tokenizer,
             workers: int) -> Iterator[tuple[int, str, int, np.ndarray]]:
    """(id, label, UTF-8 bytes, token ids int64 [n]) per document, in order, with ``workers``
    processes. At most ~4 chunks per worker are in flight, so memory stays bounded."""
    chunks = _chunks(documents, CHUNK_DOCUMENTS)
    if workers <= 1:
        _init_worker(tokenizer)
        for chunk in chunks:
            for (i, label, text), ids in zip(chunk, _encode_chunk([t for _, _, t in chunk]), strict=True):
                yield i, label, len(text.encode("utf-8")), ids
        return
    context = multiprocessing.get_context("spawn" if _jax_running() else "fork")
    with context.Pool(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        in_flight: collections.deque = collections.deque()
        for chunk in itertools.chain(chunks, [None]):
            if chunk is not None:
                in_flight.append((chunk, pool.apply_async(_encode_chunk, ([t for _, _, t in chunk],))))
            while in_flight and (chunk is None or len(in_flight) > 4 * workers):
                done, result = in_flight.popleft()
                for (i, label, text), ids in zip(done, result.get(), strict=True):
                    yield i, label, len(text.encode("utf-8")), ids


def _jax_running() -> bool:
    """Whether JAX has started its backends (threads that a fork must not copy)."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def _take(iterator: Iterator, count: int) -> Iterator:
    for _ in range(count):
        try:
            yield next(iterator)
        except StopIteration:
            return


# ---------------------------------------------------------------------------------------------
# Held-out candidates: the smallest-key documents that together reach the held-out target.


@dataclasses.dataclass(order=True)
class _Candidate:
    neg_key: float  # heapq is a min-heap: the largest key sits on top
    id: int
    label: str = dataclasses.field(compare=False)
    num_bytes: int = dataclasses.field(compare=False)
    tokens: np.ndarray = dataclasses.field(compare=False)  # without EOS


class _Candidates:
    """Smallest-key documents whose tokens (each + EOS) reach ``target``; evicts the others."""

    def __init__(self, target: int):
        self.target = target
        self.heap: list[_Candidate] = []
        self.total = 0

    def push(self, candidate: _Candidate) -> list[_Candidate]:
        """Adds a candidate; returns the candidates no longer needed (back to training)."""
        heapq.heappush(self.heap, candidate)
        self.total += len(candidate.tokens) + 1
        evicted = []
        while self.heap and self.total - (len(self.heap[0].tokens) + 1) >= self.target:
            evicted.append(heapq.heappop(self.heap))
            self.total -= len(evicted[-1].tokens) + 1
        return evicted

    def to_bytes(self) -> bytes:
        items = sorted(self.heap, reverse=True)  # ascending key
        buffer = io.BytesIO()
        np.savez(
            buffer,
            keys=np.array([-c.neg_key for c in items], np.float64),
            ids=np.array([c.id for c in items], np.int64),
            labels=np.array([c.label for c in items], dtype=str),
            num_bytes=np.array([c.num_bytes for c in items], np.int64),
            lengths=np.array([len(c.tokens) for c in items], np.int64),
            tokens=np.concatenate([c.tokens for c in items] or [np.zeros(0, np.int64)]),
        )
        return buffer.getvalue()

    @staticmethod
    def load(data: bytes) -> list[_Candidate]:
        fields = np.load(io.BytesIO(data))
        splits = np.split(fields["tokens"], np.cumsum(fields["lengths"])[:-1]) if len(fields["ids"]) else []
        return [_Candidate(-float(k), int(i), str(label), int(b), t.astype(np.int64))
                for k, i, label, b, t in zip(fields["keys"], fields["ids"], fields["labels"],
                                             fields["num_bytes"], splits, strict=True)]


# ---------------------------------------------------------------------------------------------
# The tokenizer: loaded, or trained on documents that can never be held out.


def _training_sample(spec: sources.SourceSpec, options: PrepareOptions) -> Iterator[str]:
    """The documents with the smallest keys at or above HELDOUT_MAX_FRACTION (never held out),
    in key order (the data seed's order), about 1.5 x ``tokenizer.MAX_TRAINING_BYTES`` of them:
    a uniform sample of the corpus (of its documents a capped preparation reads), whatever its
    size, kept in a bounded heap."""
    heap: list[tuple[float, int, str]] = []  # (-key, id, text): the largest key on top
    held_bytes = count = read = 0
    budget = 1.5 * tokenizer_lib.MAX_TRAINING_BYTES
    # A capped preparation reads about its first max_train_tokens of documents: so does this.
    limit = None if options.max_train_tokens is None else options.max_train_tokens * MAX_BYTES_PER_TOKEN
    for i, _, text in sources.documents(spec):
        if limit is not None and read >= limit:
            break
        count, read = count + 1, read + len(text)
        key = document_key(options.seed, i)
        if key < HELDOUT_MAX_FRACTION or (held_bytes > budget and key > -heap[0][0]):
            continue
        heapq.heappush(heap, (-key, i, text))
        held_bytes += len(text)
        while held_bytes - len(heap[0][2]) > budget:
            held_bytes -= len(heapq.heappop(heap)[2])
    if not count:
        raise ValueError(f"the corpus of {spec.describe()} is empty (no non-blank documents): "
                         "point --data at files with text")
    return (text for _, _, text in sorted(heap, reverse=True))


def _tokenizer(spec: sources.SourceSpec, options: PrepareOptions, out: epath.Path,
               scratch: str) -> tokenizer_lib.Tokenizer:
    """Loads the run's tokenizer, or (process 0) trains and records it; other processes wait."""
    setting = tokenizer_lib.parse(options.tokenizer)
    recorded = out / TOKENIZER_JSON
    if recorded.exists():
        identity = json.loads(recorded.read_text())
        return tokenizer_lib.from_identity(identity, str(out))
    if not setting.trained:
        tok = tokenizer_lib.load(options.tokenizer)
    elif options.process_index == 0:
        model = tokenizer_lib.train(_training_sample(spec, options), setting.vocab_size, setting.model_type)
        tok = tokenizer_lib.SentencePieceTokenizer(model)
    else:
        _wait_for(recorded, "the tokenizer (process 0 trains it)")
        return tokenizer_lib.from_identity(json.loads(recorded.read_text()), str(out))
    if options.process_index == 0:
        if isinstance(tok, tokenizer_lib.SentencePieceTokenizer):
            _write_bytes(out / TOKENIZER_MODEL, tok.model, scratch)
        identity = {**tok.identity(), "setting": options.tokenizer}
        _write_bytes(recorded, json.dumps(identity, indent=1).encode(), scratch)
    return tok


def _wait_for(path: epath.Path, what: str) -> None:
    start = time.monotonic()
    while not path.exists():
        if time.monotonic() - start > 60:
            log.info("waiting for %s (%s)", what, path)
            start = time.monotonic()
        time.sleep(POLL_SECONDS)


# ---------------------------------------------------------------------------------------------
# One process's share.


def _share_limit(options: PrepareOptions) -> int | None:
    """One share's part of ``max_train_tokens`` (None: all of its documents)."""
    if options.max_train_tokens is None:
        return None
    return -(-options.max_train_tokens // options.process_count)


def _share_covers(done: dict, limit: int | None) -> bool:
    """Whether a finished share (its done file) holds what ``limit`` tokens ask for."""
    if done.get("exhausted", True) or done.get("limit") is None:
        return True
    return limit is not None and done["limit"] >= limit


def _process_share(spec, options: PrepareOptions, tok, out: epath.Path, scratch: str) -> dict:
    """Tokenizes one share's documents (``options.process_index`` of ``process_count`` shares)
    into shards, skipping complete ones, or extends a finished share to a larger
    ``max_train_tokens``; returns its summary (also written as its done file)."""
    done_path = out / _name("done", options, ext=".json")
    limit = _share_limit(options)
    done = json.loads(done_path.read_text()) if done_path.exists() else None
    if done is not None and _share_covers(done, limit):
        return done
    extending = done is not None  # its held-out candidates are final: new documents train
    dtype = token_dtype(tok.vocab_size)
    candidates = _Candidates(options.heldout_tokens + 1)
    shards: list[dict] = []
    shard = 0
    while (out / _name("train", options, shard, ".array_record")).exists():
        shard += 1
    last_id, read = None, 0  # the last document read, and how many were read
    if shard:  # resume: the state after the last complete shard
        state = json.loads((out / _name("state", options, shard - 1, ".json")).read_text())
        shards, last_id = state["shards"], state.get("last_id")
        for c in _Candidates.load((out / _name("state", options, shard - 1, ".npz")).read_bytes()):
            candidates.push(c)
        # (states written before "read" was recorded: every document read is in a shard or held)
        read = state.get("read", sum(s["documents"] for s in shards) + len(candidates.heap))
        log.info("resuming share %d at shard %d", options.process_index, shard)
    stats = sources.ReadStats()
    written = sum(s["tokens"] for s in shards)
    exhausted = True  # the share's documents were all read
    if limit is not None and written >= limit:
        documents, exhausted = iter(()), False  # the part was reached before the last restart
    else:
        documents = _documents(spec, options, stats, read, last_id)
    writer, shard_start = None, read
    for position, (i, label, num_bytes, ids) in enumerate(tokenize(documents, tok, options.workers), read):
        if writer is not None and position - shard_start >= options.documents_per_shard:
            shards.append(_finish_shard(writer, candidates, options, shard, out, scratch, shards,
                                        last_id, position))
            written += shards[-1]["tokens"]
            writer, shard = None, shard + 1
        if writer is None:
            shard_start = position
            local = os.path.join(scratch, f".tmp-{_name('train', options, shard, '.array_record')}")
            writer = _ShardWriter(local, dtype)
        key = document_key(options.seed, i)
        to_train = [_Candidate(-key, i, label, num_bytes, ids)]
        if key < HELDOUT_MAX_FRACTION and not extending:
            to_train = candidates.push(to_train[0])
        for c in to_train:
            writer.add_document(c, tok.eos_id)
        last_id, read = i, position + 1
        if limit is not None and written + writer.tokens >= limit:
            exhausted = False
            break  # the study reads no more than this: the rest of the corpus is never read
    if writer is not None:
        shards.append(_finish_shard(writer, candidates, options, shard, out, scratch, shards,
                                    last_id, read))
    summary = {"shards": shards, "stats": {"files": stats.files,
                                           "replaced_undecodable": stats.replaced_undecodable,
                                           **stats.extra},
               "candidates": _name("state", options, len(shards) - 1, ".npz") if shards else None,
               "limit": limit, "exhausted": exhausted}
    if extending:
        summary["candidates"], summary["stats"] = done["candidates"], done["stats"]
    elif not shards:  # no documents in this share: its (empty) candidates still need a file
        _write_bytes(out / _name("state", options, 0, ".npz"), candidates.to_bytes(), scratch)
        summary["candidates"] = _name("state", options, 0, ".npz")
    _write_bytes(done_path, json.dumps(summary).encode(), scratch)
    return summary


def _finish_shard(writer: _ShardWriter, candidates: _Candidates, options: PrepareOptions, shard: int,
                  out: epath.Path, scratch: str, previous: list[dict], last_id: int | None,
                  read: int) -> dict:
    """Closes a shard; commits its state (candidates, shard list, the id of the last document
    read and how many were read) and then the shard itself."""
    name = _name("train", options, shard, ".array_record")
    entry = writer.close(name)
    _write_bytes(out / _name("state", options, shard, ".npz"), candidates.to_bytes(), scratch)
    state = {"shards": [*previous, entry], "last_id": last_id, "read": read}
    _write_bytes(out / _name("state", options, shard, ".json"), json.dumps(state).encode(), scratch)
    _commit_shard(writer.path, out / name, entry["records"], scratch)
    return entry


def _commit_shard(local: str, final: epath.Path, records: int, scratch: str) -> None:
    """Commits a shard after its record offsets (``records.RangeRecords`` reads it in place)."""
    offsets = records_lib.save_offsets(records_lib.record_offsets(local, records))
    _write_bytes(final.parent / (final.name + records_lib.OFFSETS_SUFFIX), offsets, scratch)
    _commit(local, final)


# ---------------------------------------------------------------------------------------------
# Finishing (process 0): the held-out set, the extra shard, the manifest.


def _finish(spec, options: PrepareOptions, tok, out: epath.Path, scratch: str, start: float) -> dict:
    summaries = []
    limit = _share_limit(options)
    for p in range(options.process_count):
        done = out / _name("done", dataclasses.replace(options, process_index=p), ext=".json")
        _wait_for(done, f"share {p}")
        while not _share_covers(summary := json.loads(done.read_text()), limit):
            time.sleep(POLL_SECONDS)  # its process is extending it
        summaries.append(summary)
    pool = sorted(c for s in summaries for c in _Candidates.load((out / s["candidates"]).read_bytes()))
    pool.reverse()  # ascending key
    heldout, total = [], 0
    for c in pool:
        if total >= options.heldout_tokens + 1:
            break
        heldout.append(c)
        total += len(c.tokens) + 1
    if total < options.heldout_tokens + 1:
        raise ValueError(
            f"the corpus of {spec.describe()} is too small for heldout_tokens={options.heldout_tokens}: "
            f"the documents that may be held out (a random {HELDOUT_MAX_FRACTION:.0%} of them) hold "
            f"only {total} tokens; lower heldout_tokens or add data"
        )
    dtype = token_dtype(tok.vocab_size)
    shards = [s for summary in summaries for s in summary["shards"]]
    rest = pool[len(heldout):]
    if rest:
        writer = _ShardWriter(os.path.join(scratch, f".tmp-{EXTRA_SHARD}"), dtype)
        for c in sorted(rest, key=lambda c: c.id):
            writer.add_document(c, tok.eos_id)
        shards.append(writer.close(EXTRA_SHARD))
        _commit_shard(writer.path, out / EXTRA_SHARD, shards[-1]["records"], scratch)
    stream = np.concatenate([np.append(c.tokens, tok.eos_id) for c in heldout]).astype(dtype)
    buffer = io.BytesIO()
    np.save(buffer, stream)
    _write_bytes(out / HELDOUT_NPY, buffer.getvalue(), scratch)
    heldout_labels: dict[str, int] = {}
    for c in heldout:
        heldout_labels[c.label] = heldout_labels.get(c.label, 0) + len(c.tokens) + 1
    heldout_record = {"ids": [c.id for c in heldout], "labels": [c.label for c in heldout],
                      "tokens": [len(c.tokens) + 1 for c in heldout]}
    _write_bytes(out / HELDOUT_JSON, json.dumps(heldout_record).encode(), scratch)
    train_labels: dict[str, int] = {}
    for s in shards:
        for label, count in s["labels"].items():
            train_labels[label] = train_labels.get(label, 0) + count
    train_tokens = sum(s["tokens"] for s in shards)
    if train_tokens < 2:
        raise ValueError(f"the corpus of {spec.describe()} leaves no training tokens after the "
                         "held-out set: lower heldout_tokens or add data")
    train_documents = sum(s["documents"] for s in shards)
    stats = summaries[0]["stats"]
    manifest = {
        "format": FORMAT,
        "source": spec.describe(),
        "source_fingerprint": sources.fingerprint(spec),
        "tokenizer": json.loads((out / TOKENIZER_JSON).read_text()),
        "dtype": dtype.name,
        "record_tokens": RECORD_TOKENS,
        "seed": options.seed,
        "heldout_tokens_requested": options.heldout_tokens,
        "max_train_tokens": options.max_train_tokens,
        "complete": all(s.get("exhausted", True) for s in summaries),  # the whole source was read
        "process_count": options.process_count,
        "shards": shards,
        "train_stream_tokens": train_tokens,
        "train_documents": train_documents,
        "heldout_stream_tokens": int(len(stream)),
        "heldout_documents": len(heldout),
        "documents": train_documents + len(heldout),
        "bytes": sum(s["bytes"] for s in shards) + sum(c.num_bytes for c in heldout),
        "train_mixture": _fractions(train_labels),
        "heldout_mixture": _fractions(heldout_labels),
        "files": stats.get("files", 0),
        "replaced_undecodable": stats.get("replaced_undecodable", 0),
        **{k: v for k, v in stats.items() if k not in ("files", "replaced_undecodable")},
        "prepare_seconds": round(time.perf_counter() - start, 2),
    }
    if spec.kind == "builtin":
        from neoscale.data import builtin

        manifest["credits"] = builtin.CREDITS
    _write_bytes(out / MANIFEST, json.dumps(manifest, indent=1, default=str).encode(), scratch)
    return manifest


def _fractions(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values()) or 1
    return {label: round(count / total, 4) for label, count in sorted(counts.items())}


def prepare_shards(spec: sources.SourceSpec, options: PrepareOptions, out: str) -> dict:
    """Prepares (or resumes preparing, or extends to a larger ``max_train_tokens``) ``spec`` into
    ``out``; returns the manifest.

    Every process of a distributed preparation calls this with its process_index; each works
    through its shares of the preparation's layout, process 0 finishes (held-out set and
    manifest) once all shares are done, the others wait for the manifest.
    """
    start = time.perf_counter()
    out_path = epath.Path(out)
    manifest = _read_json(out_path / MANIFEST)
    _check_same_preparation(spec, options, out, manifest, _read_json(out_path / TOKENIZER_JSON))
    if manifest is not None and covers(manifest, options.max_train_tokens):
        return manifest
    out_path.mkdir(parents=True, exist_ok=True)
    with _scratch(out) as scratch:
        tok = _tokenizer(spec, options, out_path, scratch)
        count = _layout(options, out_path, scratch)
        share = dataclasses.replace(options, process_count=count)
        for index in range(options.process_index, count, options.process_count):
            _process_share(spec, dataclasses.replace(share, process_index=index), tok, out_path, scratch)
        if options.process_index == 0:
            return _finish(spec, dataclasses.replace(share, process_index=0), tok, out_path, scratch,
                           start)
    while (manifest := _read_json(out_path / MANIFEST)) is None or not covers(
            manifest, options.max_train_tokens):
        time.sleep(POLL_SECONDS)  # process 0 writes (or rewrites) the manifest
    return manifest


def _check_same_preparation(spec: sources.SourceSpec, options: PrepareOptions, out: str,
                            manifest: dict | None, recorded_tokenizer: dict | None) -> None:
    """One-line ValueError when ``out`` holds (part of) a preparation of another source or with
    other settings: resuming or extending it would mix two corpora."""
    ours = {"source": spec.describe(), "tokenizer": options.tokenizer, "seed": options.seed,
            "heldout_tokens": options.heldout_tokens}
    theirs = {}
    if manifest is not None:
        theirs = {"source": manifest.get("source"), "seed": manifest.get("seed"),
                  "heldout_tokens": manifest.get("heldout_tokens_requested")}
        recorded_tokenizer = manifest.get("tokenizer")
    if recorded_tokenizer is not None and not _same_tokenizer(recorded_tokenizer, options.tokenizer):
        theirs["tokenizer"] = recorded_tokenizer.get("setting", recorded_tokenizer.get("name"))
    differ = [key for key in theirs if theirs[key] != ours[key]]
    if differ:
        raise ValueError(f"{out} holds another preparation ("
                         + ", ".join(f"{key} {theirs[key]!r}" for key in differ) + "; this one: "
                         + ", ".join(f"{key} {ours[key]!r}" for key in differ)
                         + "): pass a new output directory, or delete that one to replace it")


def _same_tokenizer(recorded: dict, setting: str) -> bool:
    """Whether a recorded tokenizer identity is ``setting``'s (a model file by its contents)."""
    spec = tokenizer_lib.parse(setting)
    if spec.pretrained:
        return recorded.get("name") == spec.pretrained
    if spec.path:
        with open(spec.path, "rb") as f:
            return recorded.get("model_sha256") == hashlib.sha256(f.read()).hexdigest()
    return recorded.get("setting") == setting


def _read_json(path: epath.Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _layout(options: PrepareOptions, out: epath.Path, scratch: str) -> int:
    """The number of shares the documents are split into: the process count of the
    preparation's first start (read from ``layout.json``, or from the files of a preparation
    begun before it was written), recorded by that start."""
    path = out / LAYOUT
    if not path.exists():
        started = {int(p.name.split("-of-")[1][:5]) for p in out.glob("state-*-of-*")}
        count = started.pop() if len(started) == 1 else options.process_count
        _write_bytes(path, json.dumps({"process_count": count}).encode(), scratch)
    return int(json.loads(path.read_text())["process_count"])


@contextlib.contextmanager
def _scratch(out: str) -> Iterator[str]:
    """A local directory for files being written: inside ``out`` when local (renames stay on one
    file system), else a temporary directory."""
    if "://" in out:
        directory = tempfile.mkdtemp(prefix="neoscale-prepare-")
    else:
        directory = tempfile.mkdtemp(prefix=".tmp-", dir=out)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
