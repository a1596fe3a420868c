"""Data: sources (builtin, text, tfds, hf), tokenizers (gpt2, sentencepiece), prepared token
shards and packed, resumable grain batches."""

from neoscale.data.hostio import host_io_plan
from neoscale.data.pipeline import (
    CorpusSize,
    DataConfig,
    PreparedData,
    check_seq_len,
    check_source,
    corpus_size,
    measure_throughput,
    prepare,
    tokens_to_prepare,
)
from neoscale.data.shards import TRAIN_TOKENS_MARGIN

__all__ = ["TRAIN_TOKENS_MARGIN", "CorpusSize", "DataConfig", "PreparedData", "check_seq_len",
           "check_source", "corpus_size", "host_io_plan", "measure_throughput", "prepare",
           "tokens_to_prepare"]
