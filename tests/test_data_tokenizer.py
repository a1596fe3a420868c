"""Tokenizers: GPT-2's BPE offline with the reference ids, sentencepiece behind the same interface."""

import pickle

import numpy as np
import pytest
from test_data import make_documents

from neoscale.data import tokenizer

# Ids of the reference GPT-2 tokenizer (REFERENCE.md; tiktoken's r50k_base ranks, whose sha256 the
# loader checks, with GPT-2's pre-tokenizer pattern).
GPT2_IDS = {
    "Hello world": [15496, 995],
    " Hello world": [18435, 995],
    "Hello, world!": [15496, 11, 995, 0],
    "The quick brown fox jumps over the lazy dog.": [
        464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13],
    "<|endoftext|>": [27, 91, 437, 1659, 5239, 91, 29],  # text, never the separator 50256
}
ROUND_TRIP = ["naïve café — 東京 👩‍🔬 emoji", "  leading and trailing  \n\n\ttabs\r\n", "", "\u00a0nbsp x"]


@pytest.fixture(scope="module")
def gpt2():
    return tokenizer.load("gpt2")


def test_gpt2_gives_the_reference_ids(gpt2):
    assert (gpt2.vocab_size, gpt2.eos_id) == (50257, 50256)
    for text, ids in GPT2_IDS.items():
        assert gpt2.encode(text) == ids, text
    assert gpt2.encode_batch(list(GPT2_IDS)) == list(GPT2_IDS.values())
    assert gpt2.decode([15496, 995]) == "Hello world"


def test_gpt2_round_trips_any_text(gpt2):
    for text in ROUND_TRIP:
        assert gpt2.decode(gpt2.encode(text)) == text
    assert pickle.loads(pickle.dumps(gpt2)).encode("Hello world") == [15496, 995]


def test_sentencepiece_has_the_same_interface(tmp_path):
    model = tokenizer.train(make_documents(120), 400)
    path = tmp_path / "m.model"
    path.write_bytes(model)
    sp = tokenizer.load(str(path))
    assert (sp.vocab_size, sp.eos_id) == (400, 2)
    text = "Document 7.\nkalo mine ruvo."
    assert sp.decode(sp.encode(text)) == text
    assert sp.encode_batch([text, text]) == [sp.encode(text)] * 2
    assert pickle.loads(pickle.dumps(sp)).encode(text) == sp.encode(text)
    ids = np.array(sp.encode(text) + [2] + sp.encode("ka"))
    assert tokenizer.utf8_bytes(sp, ids) == len(text.encode()) + 1 + 2


def test_vocab_size_of_each_setting(tmp_path):
    path = tmp_path / "m.model"
    path.write_bytes(tokenizer.train(make_documents(120), 300, "unigram"))
    assert tokenizer.vocab_size_of("gpt2") == 50257
    assert tokenizer.vocab_size_of("train:2048") == 2048
    assert tokenizer.vocab_size_of(str(path)) == 300


def test_trained_settings_cannot_be_loaded_before_preparation():
    with pytest.raises(ValueError, match="trained during data preparation"):
        tokenizer.load("train:512")


def test_a_corpus_of_at_most_100_sentences_trains_a_tokenizer():
    # sentencepiece refuses input_sentence_size in 1..100: such a corpus once failed inside it
    sentences = [" ".join(make_documents(1, seed=i)[0].split()[:12]) for i in range(40)]
    model = tokenizer.train(sentences, 300)
    trained = tokenizer.SentencePieceTokenizer(model)
    assert trained.decode(trained.encode(sentences[0])) == sentences[0]
