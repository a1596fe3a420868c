"""Reading array_record shards where they are (gs://, any fsspec store): byte-range reads, no copy.

Shards are written uncompressed with one record per chunk (``shards.WRITER_OPTIONS``), so a
record's bytes sit contiguously in riegeli's logical chunk stream; riegeli interleaves a 24-byte
block header at every 64 KiB of the file. ``record_offsets`` finds where each record's bytes
begin (parsing the chunk headers of a local file, checked against array_record's own reader),
and preparation stores them beside the shard (``SHARD.offsets.npy``, 8 bytes per record of 32 KiB:
0.02%). ``RangeRecords`` then reads any record, or just the bytes of it a window needs, with one
ranged GET, many at once from a thread pool; grain's prefetching batches ahead adds the read-ahead.
"""

from __future__ import annotations

import concurrent.futures
import io
import struct

import numpy as np

BLOCK = 1 << 16  # riegeli's block size
BLOCK_HEADER = 24
CHUNK_HEADER = 40
OFFSETS_SUFFIX = ".offsets.npy"
READ_THREADS = 32  # concurrent range reads per host (GCS serves thousands per second per object set)


def _physical(logical: int) -> int:
    """File offset of a position in riegeli's logical stream (block headers skipped)."""
    usable = BLOCK - BLOCK_HEADER
    return logical // usable * BLOCK + BLOCK_HEADER + logical % usable


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            return value, position
        shift += 7


def _unblock(data: bytes, start: int) -> bytes:
    """Removes the block headers from ``data``, the file's bytes from offset ``start``."""
    pieces, position = [], start
    end = start + len(data)
    while position < end:
        if position % BLOCK < BLOCK_HEADER:
            position += BLOCK_HEADER - position % BLOCK
            continue
        stop = min(end, (position // BLOCK + 1) * BLOCK)
        pieces.append(data[position - start : stop - start])
        position = stop
    return b"".join(pieces)


def record_offsets(path: str, num_records: int) -> np.ndarray:
    """int64 [num_records]: the logical-stream offset of each record's bytes in a local shard
    written with ``group_size:1,uncompressed``; checked against array_record's reader."""
    from array_record.python.array_record_module import ArrayRecordReader

    with open(path, "rb") as f:
        stream = _unblock(f.read(), 0)
    offsets, position = [], 0
    while len(offsets) < num_records:
        header = stream[position : position + CHUNK_HEADER]
        if len(header) < CHUNK_HEADER:
            raise ValueError(f"{path}: {len(offsets)} records found, {num_records} expected")
        data_size = struct.unpack_from("<Q", header, 8)[0]
        chunk_type, records = header[24:25], int.from_bytes(header[25:32], "little")
        data = position + CHUNK_HEADER
        if chunk_type == b"r" and records == 1:
            if stream[data] != 0:
                raise ValueError(f"{path}: a compressed chunk; shards are written uncompressed")
            sizes_size, values = _varint(stream, data + 1)
            offsets.append(values + sizes_size)
        position = data + data_size
    offsets = np.asarray(offsets, np.int64)
    reader = ArrayRecordReader(path)
    try:
        for k, offset in enumerate(offsets):
            (record,) = reader.read([k])
            if stream[offset : offset + len(record)] != record:
                raise ValueError(f"{path}: record {k} is not where its chunk header says")
    finally:
        reader.close()
    return offsets


def save_offsets(offsets: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, offsets)
    return buffer.getvalue()


class RangeRecords:
    """Random-access records of shards on any fsspec store: ``__getitems__(keys) -> bytes``.

    paths: the shards; offsets[s]: ``record_offsets`` of shard s; record_bytes: bytes of a full
    record (every record but each shard's last); last_bytes[s]: bytes of shard s's last record.
    Keys number all shards' records in order. ``reads`` and ``bytes_read`` count what was fetched.
    """

    def __init__(self, paths: list[str], offsets: list[np.ndarray], record_bytes: int,
                 last_bytes: list[int], threads: int = READ_THREADS):
        import fsspec

        self._fs, _ = fsspec.core.url_to_fs(paths[0])
        self._paths = [self._fs._strip_protocol(p) for p in paths]
        self._offsets = offsets
        self._first_key = np.concatenate([[0], np.cumsum([len(o) for o in offsets])])
        self._record_bytes = record_bytes
        self._last_bytes = last_bytes
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="records")
        self.reads = self.bytes_read = 0

    def __len__(self) -> int:
        return int(self._first_key[-1])

    def _read(self, key: int, lo: int = 0, hi: int | None = None) -> bytes:
        """Bytes [lo, hi) of record ``key`` (hi None: to its end), with one ranged read."""
        shard = int(np.searchsorted(self._first_key, key, side="right")) - 1
        index = key - int(self._first_key[shard])
        size = self._last_bytes[shard] if index == len(self._offsets[shard]) - 1 else self._record_bytes
        hi = size if hi is None else min(hi, size)
        logical = int(self._offsets[shard][index]) + lo
        start, end = _physical(logical), _physical(logical + hi - lo - 1) + 1
        data = self._fs.cat_file(self._paths[shard], start=start, end=end)
        self.reads += 1
        self.bytes_read += len(data)
        return _unblock(data, start)

    def __getitem__(self, key: int) -> bytes:
        return self._read(int(key))

    def __getitems__(self, keys) -> list[bytes]:
        return list(self._pool.map(self._read, [int(k) for k in keys]))

    def read_spans(self, spans) -> list[bytes]:
        """Bytes [lo, hi) of records, for (key, lo, hi) spans: only what a window needs."""
        return list(self._pool.map(lambda span: self._read(*map(int, span)), spans))
