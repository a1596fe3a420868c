"""The tfds:NAME[:VERSION] source, on a dataset built offline by tests/tfds_builder.py."""

import importlib.util
import json
import shutil

import pytest
import tfds_builder
from test_data import split_documents, train_documents

from neoscale.data import DataConfig, prepare


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    tfds_builder.build(str(directory))
    return str(directory)


def tfds_config(data: str, data_dir, cache, **overrides) -> DataConfig:
    fields = dict(
        data=data,
        tfds_data_dir=data_dir,
        tokenizer="train:300",
        seq_len=32,
        heldout_tokens=512,
        cache_dir=str(cache),
    )
    return DataConfig(**{**fields, **overrides})


@pytest.mark.parametrize("name", ["neoscale_test_text", "neoscale_test_text:1.0.0"])
def test_tfds_dataset_is_read_through_data_source(data_dir, tmp_path, name):
    prepared = prepare(tfds_config(f"tfds:{name}", data_dir, tmp_path))
    description = prepared.description
    assert description["source"] == f"tfds:{name}"
    assert description["tfds_name"] == "neoscale_test_text/1.0.0"
    assert description["documents"] == tfds_builder.NeoscaleTestText.NUM_EXAMPLES
    # Every example is a training or a held-out document, decoded exactly, once.
    documents = train_documents(prepared) + split_documents(prepared, prepared.heldout_stream)[:-1]
    assert sorted(documents) == sorted(tfds_builder.document(i) for i in range(200))
    batch = next(prepared.train_iterator(8))
    assert batch["inputs"].shape == (8, 32)


def test_text_field_chooses_the_feature(data_dir, tmp_path):
    with pytest.raises(ValueError, match="no feature 'body'.*text_field") as error:
        prepare(tfds_config("tfds:neoscale_test_text", data_dir, tmp_path, text_field="body"))
    assert "\n" not in str(error.value)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_tfrecord_dataset_without_tensorflow_asks_for_the_tf_extra(data_dir, tmp_path):
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed: TFRecord datasets are readable")
    # Building TFRecord files needs TensorFlow, so relabel the array_record build as TFRecord.
    tfrecord_dir = tmp_path / "tfds"
    shutil.copytree(data_dir, tfrecord_dir)
    for info in tfrecord_dir.rglob("dataset_info.json"):
        fields = json.loads(info.read_text())
        info.write_text(json.dumps({**fields, "fileFormat": "tfrecord"}))
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"needs TensorFlow: pip install neoscale\[tf\]") as error:
        prepare(tfds_config("tfds:neoscale_test_text", str(tfrecord_dir), cache))
    assert "\n" not in str(error.value)
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_tfds_processes_read_only_their_share(data_dir, tmp_path, monkeypatch):
    import threading

    from neoscale.data import shards, sources

    monkeypatch.setattr(shards, "POLL_SECONDS", 0.02)
    spec = sources.parse("tfds:neoscale_test_text", tfds_data_dir=data_dir)
    share = [i for i, _, _ in sources.documents(spec, start=1, step=2)]
    assert share == list(range(1, 200, 2))
    out = str(tmp_path / "two")
    options = [shards.PrepareOptions("train:300", 512, process_index=p, process_count=2) for p in (0, 1)]
    worker = threading.Thread(target=shards.prepare_shards, args=(spec, options[1], out))
    worker.start()
    manifest = shards.prepare_shards(spec, options[0], out)
    worker.join()
    assert manifest["documents"] == 200
    prepared = prepare(tfds_config(f"prepared:{out}", None, tmp_path / "cache"))
    documents = train_documents(prepared) + split_documents(prepared, prepared.heldout_stream)[:-1]
    assert sorted(documents) == sorted(tfds_builder.document(i) for i in range(200))
