"""Packing token streams into training windows: an in-memory stream, or array_record shards.

The stream (documents joined by EOS) is cut into ``num_windows = (len(stream) - 1) // seq_len``
windows of ``seq_len + 1`` tokens with stride ``seq_len``: window ``w`` is
``stream[w*seq_len : (w+1)*seq_len + 1]``, its inputs the first ``seq_len`` tokens and its targets
the last ``seq_len``. So in one epoch every token of ``stream[:num_windows*seq_len]`` is an input
exactly once and every token of ``stream[1:num_windows*seq_len + 1]`` a target exactly once; the
tail of fewer than ``seq_len`` tokens is dropped.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np


def num_windows(num_tokens: int, seq_len: int) -> int:
    """Windows of seq_len + 1 tokens (stride seq_len) that fit in a stream of num_tokens."""
    return max(num_tokens - 1, 0) // seq_len


@dataclasses.dataclass(frozen=True, eq=False)
class GatherWindows:
    """Maps window ids int [rows] to {"inputs", "targets"}: int32 [rows, seq_len] each.

    ``rows`` selects this process's share of a global batch of window ids.
    """

    stream: np.ndarray
    seq_len: int
    rows: slice

    def __call__(self, window_ids: np.ndarray) -> dict[str, np.ndarray]:
        starts = np.asarray(window_ids)[self.rows].astype(np.int64) * self.seq_len
        windows = self.stream[starts[:, None] + np.arange(self.seq_len + 1)].astype(np.int32)
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}


def train_dataset(
    stream: np.ndarray, seq_len: int, global_batch_size: int, rows: slice, seed: int
) -> grain.MapDataset:
    """Endless MapDataset of packed batches {"inputs", "targets"}: int32 [local rows, seq_len].

    Window ids are shuffled per epoch (grain's index shuffle, epoch e seeded with seed + e), the
    epochs concatenated and cut into global batches of ``global_batch_size`` window ids (a batch
    may span two epochs); ``rows`` picks this process's rows of each global batch.
    """
    return (
        grain.MapDataset.range(num_windows(len(stream), seq_len))
        .shuffle(seed=seed)
        .repeat()
        .batch(global_batch_size, drop_remainder=True)
        .map(GatherWindows(stream, seq_len, rows))
    )


@dataclasses.dataclass(frozen=True, eq=False)
class ShardWindows:
    """Window ids int [rows] -> {"inputs", "targets"}: int32 [rows, seq_len], read from shards.

    Each shard is its own stream (cut into windows as above); global window ids enumerate the
    shards' windows in order. Shard ``s`` holds ``tokens[s]`` ids in records of ``record_tokens``
    (its last record shorter); ``source`` reads records by global record key (all shards'
    records in order), so a window costs one or two random-access record reads.
    """

    source: object  # grain/array_record random-access source of bytes records
    tokens: np.ndarray  # int64 [shards]
    record_tokens: int
    dtype: np.dtype
    seq_len: int
    rows: slice

    @property
    def window_offsets(self) -> np.ndarray:
        """int64 [shards + 1]: first global window id of each shard (and the total)."""
        windows = np.maximum(self.tokens - 1, 0) // self.seq_len
        return np.concatenate([[0], np.cumsum(windows)])

    @property
    def record_offsets(self) -> np.ndarray:
        records = -(-self.tokens // self.record_tokens)
        return np.concatenate([[0], np.cumsum(records)])

    def __call__(self, window_ids: np.ndarray) -> dict[str, np.ndarray]:
        ids = np.asarray(window_ids)[self.rows].astype(np.int64)
        window_offsets, record_offsets = self.window_offsets, self.record_offsets
        shard = np.searchsorted(window_offsets, ids, side="right") - 1
        start = (ids - window_offsets[shard]) * self.seq_len  # token offset inside the shard
        first = start // self.record_tokens
        last = (start + self.seq_len) // self.record_tokens
        if hasattr(self.source, "read_spans"):  # a remote store: read only the windows' bytes
            return self._read_spans(shard, first, last, start)
        keys = sorted({int(record_offsets[s] + r) for s, a, b in zip(shard, first, last, strict=True)
                       for r in range(a, b + 1)})
        records = dict(zip(keys, self.source.__getitems__(keys), strict=True))
        windows = np.empty((len(ids), self.seq_len + 1), np.int32)
        for row, (s, a, b, t) in enumerate(zip(shard, first, last, start, strict=True)):
            pieces = [np.frombuffer(records[int(record_offsets[s] + r)], self.dtype) for r in range(a, b + 1)]
            stream = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
            offset = t - a * self.record_tokens
            windows[row] = stream[offset : offset + self.seq_len + 1]
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}

    def _read_spans(self, shard, first, last, start) -> dict[str, np.ndarray]:
        """Windows from byte spans of their records (``source.read_spans``: one ranged read per
        record a window touches, of only the tokens in the window)."""
        itemsize, size = np.dtype(self.dtype).itemsize, self.record_tokens
        spans, rows = [], []
        for row, (s, a, b, t) in enumerate(zip(shard, first, last, start, strict=True)):
            for r in range(a, b + 1):
                lo, hi = max(t - r * size, 0), min(t + self.seq_len + 1 - r * size, size)
                spans.append((int(self.record_offsets[s] + r), lo * itemsize, hi * itemsize))
                rows.append(row)
        windows = np.empty((len(shard), self.seq_len + 1), np.int32)
        pieces: list[list[np.ndarray]] = [[] for _ in range(len(shard))]
        for row, data in zip(rows, self.source.read_spans(spans), strict=True):
            pieces[row].append(np.frombuffer(data, self.dtype))
        for row, parts in enumerate(pieces):
            windows[row] = np.concatenate(parts)
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}


def shard_dataset(reader: ShardWindows, global_batch_size: int, seed: int) -> grain.MapDataset:
    """Endless MapDataset of batches from shards, ordered exactly as ``train_dataset``."""
    return (
        grain.MapDataset.range(int(reader.window_offsets[-1]))
        .shuffle(seed=seed)
        .repeat()
        .batch(global_batch_size, drop_remainder=True)
        .map(reader)
    )
