"""Data: built-in / local text / tfds sources, a sentencepiece tokenizer, packed batches."""

from neoscale.data.pipeline import (
    DataConfig,
    PreparedData,
    check_seq_len,
    measure_throughput,
    prepare,
)

__all__ = ["DataConfig", "PreparedData", "check_seq_len", "measure_throughput", "prepare"]
