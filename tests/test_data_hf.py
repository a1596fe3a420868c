"""The hf:NAME[:CONFIG] source (Hugging Face datasets, streaming), offline on local .jsonl files."""

import json

import pytest
from test_data import config_for, make_documents, split_documents, train_documents

from neoscale.data import prepare

pytest.importorskip("datasets")  # the optional neoscale[hf] extra


def test_hf_streaming_dataset_from_local_files(tmp_path):
    documents = make_documents(150, seed=3)
    folder = tmp_path / "hfdata"
    folder.mkdir()
    for part in range(3):
        with open(folder / f"part{part}.jsonl", "w") as f:
            for text in documents[part::3]:
                f.write(json.dumps({"text": text, "meta": part}) + "\n")
    prepared = prepare(config_for(f"hf:{folder}", tmp_path / "cache"))
    assert prepared.description["source"] == f"hf:{folder}"
    assert prepared.description["documents"] == 150
    heldout = split_documents(prepared, prepared.heldout_stream)[:-1]
    assert sorted(train_documents(prepared) + heldout) == sorted(documents)
    with pytest.raises(ValueError, match="no string field 'body'"):
        prepare(config_for(f"hf:{folder}", tmp_path / "cache2", text_field="body"))
