"""What each host of a study downloads, stores and reads: ``host_io_plan`` (for ``--dry_run``).

Preparation (the study's own, ``pipeline.tokens_to_prepare``) reads only what the largest run
reads plus ``shards.TRAIN_TOKENS_MARGIN`` and downloads it: each host its own share for ``hf:``
(its files) and ``tfds:`` (its records) into a gs:// cache, the whole source for ``text:`` and
``builtin`` (every host reads every file and keeps its documents) or into a local cache (each host
prepares its own copy); nothing for ``prepared:DIR``. Training stores no shard on a host (shards on
gs:// are read in place, ``neoscale.data.records``; a local cache is the host's own disk) and reads
the windows its rows of every batch need, ``seq_len + 1`` tokens each (one ranged read, two when
a window crosses a record boundary).
"""

from __future__ import annotations

import dataclasses
import os
import shutil

from neoscale.data import pipeline, shards, tokenizer


@dataclasses.dataclass(frozen=True)
class HostIO:
    """Bytes per host: ``download`` (source read by preparation), ``store`` (shards on the host's
    disk) and ``read`` (shard bytes read by training, all runs); ``prepare_tokens`` the training
    tokens prepared; ``largest_run_tokens`` what the largest run reads."""

    hosts: int
    download: float
    store: float
    read: float
    prepare_tokens: float
    largest_run_tokens: float


def _run_tokens(run) -> float:
    """Training tokens a planned run reads, with its cooldown branches."""
    cooldown = sum(b.cooldown_steps for b in getattr(run, "branches", ()))
    return (run.steps + cooldown) * run.batch_size * run.seq_len


def largest_run_tokens(runs) -> int:
    """Training tokens the largest planned run reads (a cooldown branch continues its run's data
    from its fork: no run reads past its own steps)."""
    return max(run.steps * run.batch_size * run.seq_len for run in runs)


def host_io(config: pipeline.DataConfig, runs, hosts: int, corpus_tokens: float | None,
            vocab_size: int) -> HostIO:
    """Per-host bytes for the planned ``runs`` (objects with steps, batch_size, seq_len and
    branches) on ``hosts`` hosts; ``corpus_tokens``: the corpus's training tokens (None: unknown,
    then the largest run's)."""
    source = config.source()
    largest = largest_run_tokens(runs)
    prepare_tokens = corpus_tokens or largest
    if source.kind != "prepared" and (cap := pipeline.tokens_to_prepare(config, largest)) is not None:
        prepare_tokens = min(prepare_tokens, cap) if corpus_tokens else cap
    text_bytes = prepare_tokens * pipeline.estimated_bytes_per_token(config.tokenizer)
    remote = "://" in pipeline.cache_directory(config)  # else each host prepares its own copy
    if source.kind == "prepared":
        download = 0.0
    elif source.kind in ("hf", "tfds") and remote:
        download = text_bytes / hosts
    else:
        download = text_bytes
    itemsize = shards.token_dtype(vocab_size).itemsize
    store = 0.0 if remote else prepare_tokens * itemsize
    read = sum(_run_tokens(run) / run.seq_len / hosts * (run.seq_len + 1) * itemsize for run in runs)
    return HostIO(hosts, download, store, read, prepare_tokens, largest)


def _gb(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:,.1f} GB"


def host_io_plan(config: pipeline.DataConfig, runs, hosts: int, corpus_tokens: float | None) -> str:
    """One paragraph for a dry run: what each host will download, store and read."""
    vocab_size = tokenizer.vocab_size_of(config.tokenizer)
    io = host_io(config, runs, hosts, corpus_tokens, vocab_size)
    source = config.source()
    remote = "://" in pipeline.cache_directory(config)
    share = {"hf": "its own files", "tfds": "its own records"}.get(
        source.kind, "every file: each host reads the whole source")
    if not remote:
        share = "the whole source: each host prepares its own copy in its local cache"
    download = (f"download nothing (prepared: {io.prepare_tokens:,.0f} training tokens)"
                if source.kind == "prepared" else
                f"download {_gb(io.download)} of source text to prepare {io.prepare_tokens:,.0f} "
                f"training tokens ({share})")
    lines = [f"data per host ({hosts} host{'s' * (hosts > 1)}): {download}; store "
             f"{_gb(io.store)} of shards on its disk"
             + (" (read in place from gs://)" if not io.store else "")
             + f"; read {_gb(io.read)} of shards (its rows' windows) over all runs"]
    if source.kind != "prepared" and io.prepare_tokens < (corpus_tokens or float("inf")):
        lines.append(f"  (only what the largest run reads, {io.largest_run_tokens:,.0f} tokens, plus "
                     f"{shards.TRAIN_TOKENS_MARGIN:.0%}; a later study that reads more extends the "
                     "preparation)")
    if source.kind in ("text", "builtin") and hosts > 1:
        lines.append("  (text sources are read whole by every host: prepare them once and train on "
                     "--data=prepared:DIR)")
    return "\n".join(lines)



def local_free_bytes(path: str) -> int:
    """Free bytes on the local disk that ``path`` (or its nearest existing parent) is on."""
    path = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def disk_warning(config: pipeline.DataConfig, runs, hosts: int, corpus_tokens: float | None,
                 disk_bytes: int | None, disk: str) -> str | None:
    """One line when the shards a host stores do not fit its disk (``disk_bytes``, described by
    ``disk``; None: unknown, no check), with the fix; else None."""
    io = host_io(config, runs, hosts, corpus_tokens, tokenizer.vocab_size_of(config.tokenizer))
    if disk_bytes is None or io.store <= disk_bytes:
        return None
    return (f"each host stores {_gb(io.store)} of shards in {pipeline.cache_directory(config)}, more "
            f"than {disk} ({_gb(disk_bytes)}): put the study on gs:// (--workdir=gs://BUCKET/...) or "
            "the cache on a larger disk (--config.data.cache_dir=DIR)")
