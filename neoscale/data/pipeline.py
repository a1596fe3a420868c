"""Preparing a corpus once (split, tokenize, shard) and serving packed, resumable batches.

``prepare(DataConfig(...))`` returns a ``PreparedData``; its ``train_iterator`` is a grain
``DatasetIterator`` over an endless, per-epoch reshuffled stream of packed windows read from the
prepared array_record shards (random access: the corpus is never held in memory), and
``eval_batches`` the fixed held-out set. Preparation (``neoscale.data.shards``) writes into
``{cache_dir}/data/{key}`` and is resumable; its key hashes the source's fingerprint (file names,
sizes and mtimes; package versions; tfds name, version and size), the tokenizer (settings, or the
model's sha256), the data seed and heldout_tokens; seq_len is applied at read time, so every
sequence length shares one preparation. ``--data=prepared:DIR`` reads a directory prepared by
``python -m neoscale.prepare`` (local or gs://, read where it is: nothing is copied to the host).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time

import grain
import numpy as np
from etils import epath

from neoscale.data import packing, records, shards, sources, tokenizer

log = logging.getLogger(__name__)

CONTEXT_FREE_SAMPLE_TOKENS = 1 << 24  # training tokens counted for the context-free loss
SMALL_CORPUS_BYTES = 32 << 20  # below this, tokenizing in one process beats starting workers
# UTF-8 bytes per token, for estimates before tokenizing (measured on the built-in English corpus
# by benchmarks/data_throughput.py; a trained sentencepiece vocabulary V interpolates in log V).
GPT2_BYTES_PER_TOKEN = 3.84
SENTENCEPIECE_BYTES_PER_TOKEN = {512: 1.78, 2048: 2.63, 8192: 3.29, 32768: 3.81}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to train on. Every size of a study uses the same DataConfig (and so the same shards).

    data: "builtin" | "text:GLOB" | "tfds:NAME[:VERSION]" | "hf:NAME[:CONFIG]" | "prepared:DIR".
    tfds_data_dir: where the tfds dataset was built (local path or gs://); None: tfds default.
    tokenizer: "gpt2", "train:VOCAB" (BPE), "train:VOCAB:unigram", or a sentencepiece .model path.
    seq_len: tokens per training sequence.
    heldout_tokens: size of the fixed held-out evaluation set, the same for every model size:
        whole documents drawn at random (by the data seed) until they hold heldout_tokens + 1
        tokens; all of them are evaluated (the largest multiple of seq_len that fits).
    seed: the DATA seed: held-out documents, the tokenizer's training order, window shuffling.
    cache_dir: where prepared data is cached (the runner passes WORKDIR/cache).
    text_field: the text field of .jsonl records, tfds examples and hf examples.
    tfds_split: the tfds / hf split documents are read from (held-out documents are taken from it).
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


@dataclasses.dataclass(frozen=True)
class CorpusSize:
    """Training tokens of a corpus: exact once prepared, else estimated from its bytes."""

    train_tokens: int
    exact: bool
    documents: int | None
    source: str


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


def _tokenizer_id(spec: tokenizer.TokenizerSpec) -> dict:
    fields = dataclasses.asdict(spec)
    if spec.path:
        with open(spec.path, "rb") as f:
            fields["sha256"] = hashlib.sha256(f.read()).hexdigest()
        fields["path"] = None  # the same model anywhere is the same tokenizer
    elif spec.pretrained:
        fields["ranks_sha256"] = tokenizer.GPT2_RANKS_SHA256
    else:
        fields["settings"] = [tokenizer.NUM_THREADS, tokenizer.MAX_TRAINING_BYTES]
    return fields


def cache_directory(config: DataConfig) -> str:
    """Where ``prepare(config)`` keeps (or will keep) its shards; prepared:DIR gives DIR."""
    source = config.source()
    if source.kind == "prepared":
        return source.pattern
    fields = {
        "format": shards.FORMAT,
        "source": sources.fingerprint(source),
        "tokenizer": _tokenizer_id(tokenizer.parse(config.tokenizer)),
        "seed": config.seed,
        "heldout_tokens": config.heldout_tokens,
        "heldout_max_fraction": shards.HELDOUT_MAX_FRACTION,
    }
    key = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser(config.cache_dir), "data", key)


def _read_manifest(directory: str) -> dict | None:
    path = epath.Path(directory) / shards.MANIFEST
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path} ({type(error).__name__}): prepare the data again") from None


def check_tokenizer(manifest: dict, setting: str, directory: str) -> None:
    """One-line ValueError when the run's ``--tokenizer`` is not the one the shards were made with."""
    recorded = manifest["tokenizer"]
    spec = tokenizer.parse(setting)
    if spec.pretrained:
        same = recorded["name"] == spec.pretrained
    elif spec.path:
        same = recorded.get("model_sha256") == _tokenizer_id(spec)["sha256"]
    else:
        same = recorded.get("setting") == setting
    if not same:
        raise ValueError(
            f"{directory} was tokenized with --tokenizer={recorded.get('setting', recorded['name'])} "
            f"({recorded['name']}, vocabulary {recorded['vocab_size']}), not --tokenizer={setting}: "
            "pass that tokenizer or prepare the data again with this one"
        )


def _prepared_manifest(config: DataConfig, directory: str) -> dict:
    """The manifest of a prepared:DIR source, checked (one-line errors)."""
    try:
        manifest = _read_manifest(directory)
    except OSError as error:
        raise ValueError(f"cannot read --data=prepared:{directory} ({error.strerror or error})") from None
    if manifest is None:
        if not epath.Path(directory).exists():
            raise FileNotFoundError(f"--data=prepared:{directory} does not exist: give the --out "
                                    "directory of python -m neoscale.prepare")
        raise ValueError(
            f"{directory} has no {shards.MANIFEST} (not a prepared directory, or its preparation "
            "did not finish): run python -m neoscale.prepare --out=DIR (it resumes)"
        )
    if manifest.get("format") != shards.FORMAT:
        raise ValueError(f"{directory} was prepared in format {manifest.get('format')}, this version "
                         f"reads {shards.FORMAT}: prepare the data again")
    check_tokenizer(manifest, config.tokenizer, directory)
    return manifest


def _workers(source: sources.SourceSpec) -> int:
    try:
        estimated_bytes, _ = sources.estimate(source)
    except ValueError:
        estimated_bytes = SMALL_CORPUS_BYTES
    return 1 if estimated_bytes < SMALL_CORPUS_BYTES else os.cpu_count() or 1


def prepare(config: DataConfig, *, workers: int | None = None,
            max_train_tokens: int | None = None) -> PreparedData:
    """Prepares the data once (later calls, and restarts of an interrupted preparation, reuse it).

    workers: tokenizer processes (default: one for small corpora, else every core).
    max_train_tokens: read only enough of the source for this many training tokens
    (``tokens_to_prepare`` gives a study's); a later call asking for more extends the preparation.
    None: all of the source when nothing is prepared yet, else the preparation as it is (a run's
    own call, after its study prepared what it reads).
    Raises ValueError / FileNotFoundError with one-line messages for bad input; such a failure
    leaves nothing in the cache (and an existing preparation as it was).
    """
    _check_config(config)
    source = config.source()
    if source.kind == "prepared":
        _prepared_manifest(config, source.pattern)
        return PreparedData(source.pattern, config)
    directory = cache_directory(config)
    check_writable_dir(config.cache_dir, "data.cache_dir")
    manifest = _read_manifest(directory)
    if manifest is None or (max_train_tokens is not None and not shards.covers(manifest, max_train_tokens)):
        log.info("preparing %s into %s", config.data, directory)
        process_index, process_count = _preparing_processes(directory)
        options = shards.PrepareOptions(
            tokenizer=config.tokenizer, heldout_tokens=config.heldout_tokens, seed=config.seed,
            workers=workers or _workers(source), process_index=process_index,
            process_count=process_count, max_train_tokens=max_train_tokens)
        try:
            shards.prepare_shards(source, options, directory)
        except (ValueError, FileNotFoundError):
            if manifest is None:
                shutil.rmtree(directory, ignore_errors=True)  # bad input: fixing it changes the key
            raise
    return PreparedData(directory, config)


def tokens_to_prepare(config: DataConfig, largest_run_tokens: float) -> int | None:
    """Training tokens a study's own preparation reads when its largest run reads
    ``largest_run_tokens``: that plus ``shards.TRAIN_TOKENS_MARGIN`` (what ``python -m
    neoscale.prepare --train_tokens`` prepares). None (all of it) for local text (and the
    built-in corpus) under ``SMALL_CORPUS_BYTES``: prepared whole in seconds, its held-out set
    samples all of it. (tfds and hf sources are always capped: sizing them may need the network.)"""
    source = config.source()
    if source.kind in ("text", "builtin") and sources.estimate(source)[0] < SMALL_CORPUS_BYTES:
        return None
    return shards.max_train_tokens(largest_run_tokens)


def check_writable_dir(path: str, flag: str) -> None:
    """One-line ValueError when a local output directory given by ``flag`` is a file or cannot be
    created or written (gs:// and other stores are checked when written)."""
    if "://" in path:
        return
    path = os.path.abspath(os.path.expanduser(path))
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{flag}={path} cannot be a directory: {existing} is a file; pass "
                         f"{flag}=DIR, a new or existing directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}={path} is not writable (no write permission on {existing}); pass "
                         f"{flag}=DIR somewhere you can write")


def _preparing_processes(directory: str) -> tuple[int, int]:
    """(process index, count) sharing a preparation: every JAX process of a multi-host job when
    the cache is shared storage (gs://), each tokenizing its own documents; a local cache is
    private to its host, which prepares it all (the result is the same on every host)."""
    if "://" not in directory:
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def estimated_bytes_per_token(setting: str) -> float:
    """UTF-8 bytes per token of English text for a tokenizer setting (for estimates only)."""
    spec = tokenizer.parse(setting)
    if spec.pretrained:
        return GPT2_BYTES_PER_TOKEN
    vocab = spec.vocab_size or tokenizer.vocab_size_of(setting)
    sizes = sorted(SENTENCEPIECE_BYTES_PER_TOKEN)
    logs = np.log([max(min(vocab, sizes[-1]), sizes[0])])
    return float(np.interp(logs, np.log(sizes), [SENTENCEPIECE_BYTES_PER_TOKEN[v] for v in sizes])[0])


def corpus_size(config: DataConfig, *, read_cache: bool = True) -> CorpusSize:
    """Training tokens of the corpus, cheaply: exact from the manifest when prepared, else the
    source's bytes (file sizes, tfds metadata) over ``estimated_bytes_per_token``, less the
    held-out set. Nothing is tokenized; with ``read_cache=False`` the cache is not looked at
    (a fresh study, or a gs:// cache that cannot be read from here)."""
    source = config.source()
    if source.kind == "prepared":
        manifest = _prepared_manifest(config, source.pattern)
    else:
        manifest = _read_manifest(cache_directory(config)) if read_cache else None
    capped = manifest is not None and source.kind != "prepared" and not shards.covers(manifest, None)
    if manifest is not None and not capped:  # (a capped cache is extended as studies need)
        return CorpusSize(int(manifest["train_stream_tokens"]), True, int(manifest["documents"]),
                          manifest["source"])
    num_bytes, documents = sources.estimate(source)
    tokens = int(num_bytes / estimated_bytes_per_token(config.tokenizer)) - config.heldout_tokens
    return CorpusSize(max(tokens, 0), False, documents, source.describe())


def check_source(config: DataConfig) -> None:
    """Cheap checks for --dry_run (nothing read or prepared): the source exists (a tfds name is
    known, a glob matches, a prepared directory has a manifest and the run's tokenizer), the
    tokenizer setting is valid. Raises a one-line ValueError / FileNotFoundError."""
    _check_config(config)
    source = config.source()
    tokenizer.parse(config.tokenizer)
    if source.kind == "prepared":
        _prepared_manifest(config, source.pattern)
    else:
        sources.check(source)


class PreparedData:
    """A prepared corpus: tokenizer, training shards and the fixed held-out set.

    Attributes: vocab_size, eos_id, seq_len, train_tokens (target tokens in one epoch),
    heldout_tokens (target tokens evaluated), bytes_per_token (held-out UTF-8 bytes per target
    token), tokenizer (encode/decode, see ``neoscale.data.tokenizer``), heldout_stream (the
    held-out tokens), manifest and description (JSON-able, with the held-out and training
    mixtures by tokens), directory.
    """

    def __init__(self, directory: str, config: DataConfig):
        self.directory = directory
        self.seq_len = config.seq_len
        self.seed = config.seed
        root = epath.Path(directory)  # read where it is (local or gs://): nothing is copied
        self.manifest: dict = json.loads((root / shards.MANIFEST).read_text())
        self.tokenizer = tokenizer.from_identity(self.manifest["tokenizer"], directory)
        self.vocab_size: int = self.tokenizer.vocab_size
        self.eos_id: int = self.tokenizer.eos_id
        self.tokenizer_path = str(root / shards.TOKENIZER_MODEL)  # sentencepiece only
        self._shards = [s for s in self.manifest["shards"] if s["records"] > 0]
        self._paths = [str(root / s["path"]) for s in self._shards]
        for path in self._paths:
            if "://" not in path and not os.access(path, os.R_OK):
                raise ValueError(f"cannot read the shard {path} listed in {directory}/{shards.MANIFEST}: "
                                 "check the directory's permissions or prepare the data again")
        self._source = None
        self.num_train_windows = int(self._reader(slice(None)).window_offsets[-1])
        if self.num_train_windows < 1:
            raise ValueError(
                f"the training split holds {self.manifest['train_stream_tokens']} tokens, too few "
                f"for one window of seq_len + 1 = {self.seq_len + 1}: lower seq_len or add data"
            )
        with (root / shards.HELDOUT_NPY).open("rb") as f:
            self.heldout_stream: np.ndarray = np.load(io.BytesIO(f.read()))
        self.num_heldout_windows = packing.num_windows(len(self.heldout_stream), self.seq_len)
        if self.num_heldout_windows < 1:
            raise ValueError(f"the held-out set holds {len(self.heldout_stream)} tokens, fewer than "
                             f"seq_len + 1 = {self.seq_len + 1}: raise heldout_tokens")
        self.train_tokens: int = self.num_train_windows * self.seq_len
        self.heldout_tokens: int = self.num_heldout_windows * self.seq_len
        targets = self.heldout_stream[1 : self.heldout_tokens + 1]
        self.bytes_per_token: float = tokenizer.utf8_bytes(self.tokenizer, targets) / len(targets)
        self.description: dict = {
            **{k: v for k, v in self.manifest.items() if k not in ("shards", "source_fingerprint")},
            "tokenizer": self.manifest["tokenizer"].get("setting", self.manifest["tokenizer"]["name"]),
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "shards": len(self._shards),
            "seq_len": self.seq_len,
            "train_tokens": self.train_tokens,
            "heldout_tokens": self.heldout_tokens,
            "bytes_per_token": round(self.bytes_per_token, 6),
            "cache": directory,
        }

    def _reader(self, rows: slice) -> packing.ShardWindows:
        if self._source is None:
            self._source = self._record_source()
        return packing.ShardWindows(
            source=self._source,
            tokens=np.array([s["tokens"] for s in self._shards], np.int64),
            record_tokens=int(self.manifest["record_tokens"]),
            dtype=np.dtype(self.manifest["dtype"]),
            seq_len=self.seq_len,
            rows=rows,
        )

    def _record_source(self):
        """Random access to the shards' records where they are: array_record's reader for a local
        directory; byte-range reads (``records.RangeRecords``) on gs:// and other stores."""
        from array_record.python.array_record_data_source import ArrayRecordDataSource

        offset_paths = [epath.Path(p + records.OFFSETS_SUFFIX) for p in self._paths]
        if "://" not in self.directory or not offset_paths[0].exists():
            # (gs:// shards prepared before offsets were written: riegeli reads them itself)
            return ArrayRecordDataSource(self._paths)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            offsets = list(pool.map(lambda p: np.load(io.BytesIO(p.read_bytes())), offset_paths))
        itemsize = np.dtype(self.manifest["dtype"]).itemsize
        record_tokens = int(self.manifest["record_tokens"])
        last = [(s["tokens"] - (s["records"] - 1) * record_tokens) * itemsize for s in self._shards]
        return records.RangeRecords(self._paths, offsets, record_tokens * itemsize, last)

    def train_shard_tokens(self):
        """Yields each training shard's token stream (for tests and inspection; reads everything)."""
        for path in self._paths:
            from array_record.python.array_record_module import ArrayRecordReader

            reader = ArrayRecordReader(path)
            contents = reader.read_all()
            reader.close()
            yield np.concatenate([np.frombuffer(r, self.manifest["dtype"]) for r in contents])


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

        Window order: a seeded permutation of all shards' windows per epoch (epoch e uses
        seed + e), batches taken from the concatenation of epochs; process p gets rows
        [p*local, (p+1)*local) of each global batch and reads only those windows.
        ``get_state()`` / ``set_state()`` (or orbax with grain.checkpoint.CheckpointSave /
        CheckpointRestore) resume with exactly the next batch. Batches are read by background
        threads.
        """
        rows = self._local_rows(global_batch_size, process_index, process_count)
        if global_batch_size > self.num_train_windows:
            raise ValueError(
                f"global batch size {global_batch_size} exceeds the {self.num_train_windows} "
                f"training sequences of one epoch: lower the batch size or seq_len, or add data"
            )
        seed = self.seed if seed is None else seed
        dataset = packing.shard_dataset(self._reader(rows), global_batch_size, seed)
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

    def context_free_loss(self, max_train_tokens: int = CONTEXT_FREE_SAMPLE_TOKENS) -> float:
        """Held-out loss (nats per target token) of the best prediction that ignores context: the
        training split's token frequencies (add-1/2 smoothed) scored on the held-out targets that
        evaluation scores. Small models sit on this plateau before their loss falls as a power law
        (``neoscale.scaling.ladder_law``). Counts at most ``max_train_tokens`` training tokens, from
        records spread evenly over the shards (all of them in a corpus that small).
        """
        if self._source is None:
            self._source = self._record_source()
        record_tokens = int(self.manifest["record_tokens"])
        n_records = len(self._source)
        wanted = min(n_records, max(1, max_train_tokens // record_tokens))
        keys = np.unique(np.linspace(0, n_records - 1, wanted).round().astype(np.int64))
        counts = np.zeros(self.vocab_size, np.float64)
        dtype = np.dtype(self.manifest["dtype"])
        for start in range(0, keys.size, 64):
            batch = [int(k) for k in keys[start : start + 64]]
            chunk = (self._source.__getitems__(batch) if hasattr(self._source, "__getitems__")
                     else [self._source[k] for k in batch])
            for record in chunk:
                counts += np.bincount(np.frombuffer(record, dtype), minlength=self.vocab_size)[
                    : self.vocab_size]
        probabilities = (counts + 0.5) / (counts.sum() + 0.5 * self.vocab_size)
        targets = self.heldout_stream[1 : self.heldout_tokens + 1]
        return float(-np.log(probabilities[targets]).mean())

    def bits_per_byte(self, loss_nats_per_token: float) -> float:
        """Converts a held-out loss in nats per token to bits per UTF-8 byte."""
        return loss_nats_per_token / math.log(2) / self.bytes_per_token


def measure_throughput(prepared: PreparedData, global_batch_size: int, num_batches: int = 200,
                       clock=time.perf_counter) -> float:
    """Input tokens per second the training iterator delivers over ``num_batches`` batches, after
    one warm-up batch (tokens counted from the batches themselves)."""
    iterator = prepared.train_iterator(global_batch_size)
    next(iterator)
    start, tokens = clock(), 0
    for _ in range(num_batches):
        tokens += next(iterator)["inputs"].size
    return tokens / (clock() - start)
