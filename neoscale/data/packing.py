"""Packing a token stream into training windows, and the train/held-out document split.

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


def heldout_documents(document_bytes: np.ndarray, budget_bytes: int, seed: int) -> np.ndarray:
    """Indices (sorted) of the held-out documents: a seeded random subset of whole documents.

    Documents are taken in a seeded permutation until they hold at least ``budget_bytes`` UTF-8
    bytes. The choice depends only on the documents' sizes and the seed, not on the tokenizer.
    """
    order = np.random.default_rng(seed).permutation(len(document_bytes))
    cumulative = np.cumsum(document_bytes[order])
    count = int(np.searchsorted(cumulative, budget_bytes)) + 1
    return np.sort(order[:count])
