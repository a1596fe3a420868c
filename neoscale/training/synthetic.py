"""``--data=synthetic``: a deterministic, learnable token source with the real pipeline's interface.

Each sequence is an arithmetic progression modulo the vocabulary with a random start and a random
stride in [1, 4], so a model can learn it and the loss falls. Batch ``t`` is a pure function of
(seed, t): resuming from a saved iterator state reproduces the stream exactly, and process ``p``
of ``n`` gets rows [p*local, (p+1)*local) of the same global batch. Useful for tests and
benchmarks (no tokenizer, no files).
"""

from __future__ import annotations

import grain
import numpy as np

EVAL_STREAM = 1 << 40  # batch indices of the held-out stream start here (never reached by training)


class SyntheticData:
    """Same attributes and methods as ``neoscale.data.PreparedData`` (those the loop uses)."""

    def __init__(self, vocab_size: int, seq_len: int, seed: int = 0, heldout_tokens: int = 8192):
        if vocab_size < 2:
            raise ValueError(f"synthetic data needs vocab_size >= 2, got {vocab_size}")
        self.vocab_size = vocab_size
        self.eos_id = vocab_size - 1
        self.seq_len = seq_len
        self.seed = seed
        self.heldout_tokens = max(seq_len, heldout_tokens // seq_len * seq_len)
        self.train_tokens = None  # endless
        self.bytes_per_token = None
        self.description = {"data": "synthetic", "vocab_size": vocab_size, "seq_len": seq_len,
                            "seed": seed, "heldout_tokens": self.heldout_tokens}

    def _batch(self, index: int, global_batch_size: int, rows: slice) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        start = rng.integers(0, self.vocab_size, size=(global_batch_size, 1))
        stride = rng.integers(1, 5, size=(global_batch_size, 1))
        tokens = (start + stride * np.arange(self.seq_len + 1)) % self.vocab_size
        tokens = tokens[rows].astype(np.int32)
        return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}

    @staticmethod
    def _local_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
        if global_batch_size < 1 or global_batch_size % process_count:
            raise ValueError(f"global batch size {global_batch_size} is not a positive multiple "
                             f"of the process count {process_count}: choose a multiple")
        local = global_batch_size // process_count
        return slice(process_index * local, (process_index + 1) * local)

    def train_iterator(self, global_batch_size: int, *, process_index: int = 0,
                       process_count: int = 1) -> grain.DatasetIterator:
        """Endless grain iterator of {"inputs", "targets"}: int32 [global/process_count, seq]."""
        rows = self._local_rows(global_batch_size, process_index, process_count)
        dataset = grain.MapDataset.range(EVAL_STREAM).map(
            lambda index: self._batch(int(index), global_batch_size, rows))
        return iter(dataset)

    def eval_batches(self, global_batch_size: int, *, process_index: int = 0,
                     process_count: int = 1) -> list[dict[str, np.ndarray]]:
        """The fixed held-out set (heldout_tokens / seq_len sequences, the same whatever the
        batch size) in ceil(sequences / batch) batches, with a "mask" that is 0 on the rows
        padding the last batch (they repeat the first sequences)."""
        rows = self._local_rows(global_batch_size, process_index, process_count)
        num_windows = self.heldout_tokens // self.seq_len
        heldout = self._batch(EVAL_STREAM, num_windows, slice(None))
        num_batches = -(-num_windows // global_batch_size)
        ids = np.arange(num_batches * global_batch_size).reshape(num_batches, global_batch_size)
        batches = []
        for batch_ids in ids[:, rows]:
            batch = {name: value[batch_ids % num_windows] for name, value in heldout.items()}
            mask = (batch_ids < num_windows)[:, None].repeat(self.seq_len, axis=1)
            batches.append({**batch, "mask": mask.astype(np.float32)})
        return batches

    def epochs(self, tokens_seen: int) -> float | None:
        return None

    def bits_per_byte(self, loss_nats_per_token: float) -> float | None:
        return None
