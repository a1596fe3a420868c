"""Tokenizers behind one small interface: GPT-2's byte-level BPE (offline) and sentencepiece.

``--tokenizer`` settings:

* ``gpt2``: GPT-2's (and GPT-Neo's) byte-level BPE, 50257 ids, ``<|endoftext|>`` = 50256 separates
  documents. Encoded by ``tiktoken`` from the ranks file vendored in ``assets/gpt2.tiktoken``
  (from the MIT-licensed ``openai-whisper`` sdist, byte-identical to tiktoken's ``r50k_base``;
  its sha256 is checked), so no network is needed. Text that spells ``<|endoftext|>`` is encoded
  as ordinary text, never as the separator.
* ``train:VOCAB[:bpe|unigram]``: a sentencepiece model trained on the training documents
  (deterministically). Trained models use identity normalisation, keep whitespace as is, have a
  dedicated newline piece and byte fallback, so ``decode(encode(text)) == text`` for any text.
  EOS (sentencepiece's default id 2) separates documents.
* a path to a sentencepiece ``.model`` file.

Every tokenizer offers ``name``, ``vocab_size``, ``eos_id``, ``encode(str) -> list[int]``,
``encode_batch(list[str]) -> list[list[int]]``, ``decode(ids) -> str`` and ``identity()`` (a
JSON-able dict that identifies the exact mapping, stored with prepared shards). Tokenizers pickle
cheaply, so worker processes can receive them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np
import sentencepiece as spm

NUM_THREADS = 1  # fixed: a different thread count can change the trained vocabulary
MAX_TRAINING_BYTES = 32 << 20  # a bigger sample barely changes an 8k-32k vocabulary
MAX_SENTENCE_BYTES = 16384  # sentencepiece silently skips longer lines

GPT2 = "gpt2"
GPT2_RANKS = pathlib.Path(__file__).with_name("assets") / "gpt2.tiktoken"
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"  # r50k_base
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_VOCAB_SIZE = 50257
GPT2_EOS = "<|endoftext|>"
GPT2_EOS_ID = 50256


class Tokenizer(Protocol):
    """What the data pipeline needs from a tokenizer."""

    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...

    def identity(self) -> dict: ...


class GPT2Tokenizer:
    """GPT-2's byte-level BPE through tiktoken, from the vendored ranks file."""

    name = GPT2
    vocab_size = GPT2_VOCAB_SIZE
    eos_id = GPT2_EOS_ID

    def __init__(self):
        import tiktoken
        import tiktoken.load

        ranks = tiktoken.load.load_tiktoken_bpe(str(GPT2_RANKS), expected_hash=GPT2_RANKS_SHA256)
        self._encoding = tiktoken.Encoding(
            GPT2,
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={GPT2_EOS: GPT2_EOS_ID},
            explicit_n_vocab=GPT2_VOCAB_SIZE,
        )

    def __reduce__(self):
        return GPT2Tokenizer, ()

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # Parallelism comes from worker processes; tiktoken's batch API would add a thread pool.
        return [self._encoding.encode_ordinary(text) for text in texts]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._encoding.decode([int(i) for i in ids], errors="replace")

    def identity(self) -> dict:
        return {"name": GPT2, "ranks_sha256": GPT2_RANKS_SHA256, "vocab_size": GPT2_VOCAB_SIZE,
                "eos_id": GPT2_EOS_ID}


class SentencePieceTokenizer:
    """A sentencepiece model (serialized bytes) behind the common interface."""

    name = "sentencepiece"

    def __init__(self, model: bytes, source: str = "<bytes>"):
        try:
            self.processor = spm.SentencePieceProcessor(model_proto=model)
        except (OSError, RuntimeError):
            raise ValueError(
                f"{source} is not a sentencepiece model: give a .model file or train:VOCAB"
            ) from None
        if self.processor.eos_id() < 0:
            raise ValueError(
                f"the tokenizer {source} has no EOS piece (eos_id=-1): train it with eos_id >= 0"
            )
        self.model = model
        self.vocab_size: int = self.processor.vocab_size()
        self.eos_id: int = self.processor.eos_id()

    def __reduce__(self):
        return SentencePieceTokenizer, (self.model,)

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.processor.encode(list(texts))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.processor.decode([int(i) for i in ids])

    def identity(self) -> dict:
        return {"name": self.name, "model_sha256": hashlib.sha256(self.model).hexdigest(),
                "vocab_size": self.vocab_size, "eos_id": self.eos_id}


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """A parsed ``--tokenizer``: GPT-2 (pretrained="gpt2"), train a model_type model of
    vocab_size, or load the sentencepiece model at path."""

    vocab_size: int = 0
    model_type: str = "bpe"
    path: str | None = None
    pretrained: str | None = None

    @property
    def trained(self) -> bool:
        return self.path is None and self.pretrained is None


def parse(tokenizer: str) -> TokenizerSpec:
    """Parses "gpt2", "train:VOCAB", "train:VOCAB:bpe|unigram" or a path to a ``.model`` file."""
    if tokenizer == GPT2:
        return TokenizerSpec(vocab_size=GPT2_VOCAB_SIZE, model_type="bpe", pretrained=GPT2)
    if tokenizer.startswith("train:"):
        vocab, _, model_type = tokenizer[len("train:") :].partition(":")
        model_type = model_type or "bpe"
        if not vocab.isdigit() or model_type not in ("bpe", "unigram"):
            raise ValueError(
                f"bad --tokenizer={tokenizer}: use gpt2, train:VOCAB, train:VOCAB:unigram or a "
                "path to a sentencepiece .model file"
            )
        return TokenizerSpec(vocab_size=int(vocab), model_type=model_type)
    path = os.path.expanduser(tokenizer)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--tokenizer={tokenizer} is not a file: give gpt2, a sentencepiece .model file or "
            "train:VOCAB to train one"
        )
    return TokenizerSpec(path=path)


def load(tokenizer: str) -> Tokenizer:
    """The tokenizer of a setting: "gpt2" or a sentencepiece ``.model`` path.

    ``train:VOCAB`` settings have no model until the data preparation trains one (see
    ``neoscale.data.prepare``); they raise ValueError here.
    """
    spec = parse(tokenizer)
    if spec.pretrained == GPT2:
        return GPT2Tokenizer()
    if spec.path is None:
        raise ValueError(
            f"--tokenizer={tokenizer} is trained during data preparation: load the prepared "
            "data's tokenizer (neoscale.data.prepare(...).tokenizer) instead"
        )
    with open(spec.path, "rb") as f:
        return SentencePieceTokenizer(f.read(), source=spec.path)


def from_identity(identity: dict, directory: str | None = None) -> Tokenizer:
    """Rebuilds the tokenizer a prepared directory recorded (its ``tokenizer.model`` if any)."""
    if identity["name"] == GPT2:
        return GPT2Tokenizer()
    from etils import epath

    return SentencePieceTokenizer((epath.Path(directory) / "tokenizer.model").read_bytes(),
                                  source=f"{directory}/tokenizer.model")


def vocab_size_of(tokenizer: str) -> int:
    """The vocabulary a tokenizer setting gives: gpt2 50257, train:V V, a .model file its own."""
    spec = parse(tokenizer)
    if spec.path:
        return load(spec.path).vocab_size
    return spec.vocab_size


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
            # every sentence (no sampling); sentencepiece refuses sizes 1..100, where 0 means all
            input_sentence_size=len(sentences) if len(sentences) > 100 else 0,
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


def utf8_bytes(tokenizer: Tokenizer, ids: np.ndarray) -> int:
    """UTF-8 bytes the token ids stand for; EOS counts as one byte (the document separator)."""
    ids = np.asarray(ids)
    eos = tokenizer.eos_id
    documents = np.split(ids, np.flatnonzero(ids == eos))
    text_bytes = sum(len(tokenizer.decode(d[d != eos]).encode("utf-8")) for d in documents)
    return text_bytes + int((ids == eos).sum())
