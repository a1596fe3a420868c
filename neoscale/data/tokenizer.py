"""The sentencepiece tokenizer: trained on the training split (deterministically) or loaded.

Trained models use identity normalisation, keep whitespace as is, have a dedicated newline piece
and byte fallback, so ``decode(encode(text)) == text`` for any text (rare or undecodable
characters become byte pieces). The EOS id (sentencepiece's default, 2) separates documents.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm

NUM_THREADS = 1  # fixed: a different thread count can change the trained vocabulary
MAX_TRAINING_BYTES = 32 << 20  # a bigger sample barely changes an 8k-32k vocabulary
MAX_SENTENCE_BYTES = 16384  # sentencepiece silently skips longer lines


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """A parsed ``--tokenizer``: train a model_type model of vocab_size, or load path."""

    vocab_size: int = 0
    model_type: str = "bpe"
    path: str | None = None


def parse(tokenizer: str) -> TokenizerSpec:
    """Parses "train:VOCAB", "train:VOCAB:bpe|unigram" or a path to a ``.model`` file."""
    if tokenizer.startswith("train:"):
        vocab, _, model_type = tokenizer[len("train:") :].partition(":")
        model_type = model_type or "bpe"
        if not vocab.isdigit() or model_type not in ("bpe", "unigram"):
            raise ValueError(
                f"bad --tokenizer={tokenizer}: use train:VOCAB, train:VOCAB:unigram or a path to "
                "a sentencepiece .model file"
            )
        return TokenizerSpec(vocab_size=int(vocab), model_type=model_type)
    path = os.path.expanduser(tokenizer)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--tokenizer={tokenizer} is not a file: give a sentencepiece .model file or "
            "train:VOCAB to train one"
        )
    return TokenizerSpec(path=path)


def _training_sentences(documents: Iterable[str]) -> Iterator[str]:
    """Non-empty lines of the documents, at most MAX_TRAINING_BYTES in all."""
    budget = MAX_TRAINING_BYTES
    for document in documents:
        for line in document.split("\n"):
            if line.strip():
                budget -= len(line.encode("utf-8"))
                if budget < 0:
                    return
                yield line[:MAX_SENTENCE_BYTES]


def train(documents: Iterable[str], vocab_size: int, model_type: str = "bpe") -> bytes:
    """Trains a sentencepiece model on the documents; returns the serialized model.

    Deterministic: same documents in the same order and same settings give the same bytes.
    """
    sentences = list(_training_sentences(documents))
    if not sentences:
        raise ValueError("cannot train a tokenizer on an empty training split: add documents")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            num_threads=NUM_THREADS,
            input_sentence_size=len(sentences),
            shuffle_input_sentence=False,
            max_sentence_length=MAX_SENTENCE_BYTES * 4,
            character_coverage=0.9995,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            user_defined_symbols=["\n"],
            split_digits=True,
            minloglevel=2,
        )
    except RuntimeError as error:
        message = str(error)
        too_high = re.search(r"too high \((\d+)\).*<= (\d+)", message)
        if too_high:
            raise ValueError(
                f"vocabulary {vocab_size} is larger than the training corpus supports "
                f"(at most {too_high.group(2)}): use --tokenizer=train:{too_high.group(2)} or "
                "less, or more data"
            ) from None
        too_small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
        if too_small:
            raise ValueError(
                f"vocabulary {vocab_size} is smaller than the {too_small.group(2)} pieces the "
                f"characters and bytes need: use --tokenizer=train:{too_small.group(2)} or more"
            ) from None
        raise ValueError(f"sentencepiece training failed: {message.splitlines()[0]}") from None
    return model.getvalue()


def load(path: str) -> spm.SentencePieceProcessor:
    """Loads a sentencepiece model; its EOS piece must exist (it separates documents)."""
    try:
        processor = spm.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError):
        raise ValueError(f"{path} is not a sentencepiece model: give a .model file or train:VOCAB") from None
    if processor.eos_id() < 0:
        raise ValueError(f"the tokenizer {path} has no EOS piece (eos_id=-1): train it with eos_id >= 0")
    return processor


def encode(processor: spm.SentencePieceProcessor, documents: Sequence[str], chunk: int = 4096) -> np.ndarray:
    """Tokenizes documents into one stream, each document followed by EOS: int32 [tokens].

    Works through ``chunk`` documents at a time so that large corpora never exist as Python
    lists of token ids all at once.
    """
    eos = np.array([processor.eos_id()], dtype=np.int32)
    pieces = []
    for start in range(0, len(documents), chunk):
        for ids in processor.encode(list(documents[start : start + chunk])):
            pieces += [np.array(ids, dtype=np.int32), eos]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int32)


def utf8_bytes(processor: spm.SentencePieceProcessor, ids: np.ndarray) -> int:
    """UTF-8 bytes the token ids stand for; EOS counts as one byte (the document separator)."""
    ids = np.asarray(ids)
    eos = processor.eos_id()
    documents = np.split(ids, np.flatnonzero(ids == eos))
    text_bytes = sum(len(processor.decode(d[d != eos].tolist()).encode("utf-8")) for d in documents)
    return text_bytes + int((ids == eos).sum())
