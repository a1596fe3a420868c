"""Bad input: each a one-line error naming the cause and the fix, nothing left in the cache."""

import json
import logging
import pathlib
import shutil

import pytest
from test_data import config_for, make_documents, write_corpus

from neoscale.data import check_seq_len, prepare


def assert_cache_clean(cache) -> None:
    assert not [p for p in cache.rglob("*") if p.is_file() or p.name.startswith(".tmp")]


def assert_fails(config, error_type, match: str) -> str:
    with pytest.raises(error_type, match=match) as error:
        prepare(config)
    message = str(error.value)
    assert "\n" not in message
    assert_cache_clean(pathlib.Path(config.cache_dir))
    return message


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def test_missing_file_and_empty_glob(tmp_path, cache):
    assert_fails(config_for(f"text:{tmp_path}/missing.txt", cache), FileNotFoundError, "no files")
    (tmp_path / "notes.md").write_text("not matched")
    assert_fails(config_for(f"text:{tmp_path}/*.txt", cache), FileNotFoundError, "check the path")


def test_empty_corpus(tmp_path, cache):
    (tmp_path / "blank.txt").write_text("  \n\n")
    (tmp_path / "empty.jsonl").write_text('{"text": ""}\n\n')
    assert_fails(config_for(f"text:{tmp_path}/*", cache), ValueError, "empty")


def test_undecodable_bytes_are_replaced_counted_and_reported(tmp_path, cache, caplog):
    documents = make_documents(120)
    data = write_corpus(tmp_path / "corpus", documents)
    (tmp_path / "corpus" / "bad.txt").write_bytes(b"caf\xe9 au lait \xff\xfe ok \xef\xbf\xbd")
    with caplog.at_level(logging.WARNING):
        prepared = prepare(config_for(data, cache))
    # \xe9 and \xff\xfe: 3 undecodable bytes (each its own U+FFFD); the literal U+FFFD is not one.
    assert prepared.description["replaced_undecodable"] == 3
    assert "bad.txt: 3 undecodable" in caplog.text


def test_jsonl_without_the_text_field(tmp_path, cache):
    (tmp_path / "a.jsonl").write_text(json.dumps({"body": "hello"}) + "\n")
    assert_fails(config_for(f"text:{tmp_path}/*.jsonl", cache), ValueError, "a.jsonl:1.*text_field")
    (tmp_path / "a.jsonl").write_text("{not json\n")
    assert_fails(config_for(f"text:{tmp_path}/*.jsonl", cache), ValueError, "not valid JSON")


def test_unknown_tfds_dataset(tmp_path, cache):
    message = assert_fails(
        config_for("tfds:no_such_dataset_xyz", cache, tfds_data_dir=str(tmp_path)),
        ValueError,
        "unknown tfds dataset 'no_such_dataset_xyz'",
    )
    assert "--tfds_data_dir" in message


def test_unreachable_tfds_data_dir(tmp_path, cache):
    missing = str(tmp_path / "nowhere")
    assert_fails(config_for("tfds:lm1b", cache, tfds_data_dir=missing), FileNotFoundError, "does not exist")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        assert_fails(
            config_for("tfds:lm1b", cache, tfds_data_dir="gs://bucket/tfds"),
            ValueError,
            r"pip install neoscale\[gcs\]",
        )


def test_vocabulary_larger_than_the_corpus_supports(tmp_path, cache):
    data = write_corpus(tmp_path / "corpus", make_documents(120))
    message = assert_fails(config_for(data, cache, tokenizer="train:50000"), ValueError, "at most \\d+")
    assert "--tokenizer=train:" in message


def test_vocabulary_too_small_for_the_characters(tmp_path, cache):
    data = write_corpus(tmp_path / "corpus", make_documents(120))
    assert_fails(config_for(data, cache, tokenizer="train:100"), ValueError, "smaller than")


def test_heldout_larger_than_the_corpus(tmp_path, cache):
    data = write_corpus(tmp_path / "corpus", make_documents(30))
    assert_fails(config_for(data, cache, heldout_tokens=100_000), ValueError, "lower heldout_tokens")


@pytest.mark.parametrize(
    "data, tokenizer, match",
    [
        ("nonsense", "train:400", "unknown --data"),
        ("tfds:c4/en:latest", "train:400", "bad tfds version"),
        ("builtin", "train:big", "bad --tokenizer"),
    ],
)
def test_bad_flags(cache, data, tokenizer, match):
    assert_fails(config_for(data, cache, tokenizer=tokenizer), ValueError, match)


def test_missing_tokenizer_model(tmp_path, cache):
    model = str(tmp_path / "missing.model")
    assert_fails(config_for("builtin", cache, tokenizer=model), FileNotFoundError, "not a file")


def test_seq_len_larger_than_the_model_positions():
    check_seq_len(2048, 2048)
    with pytest.raises(ValueError, match="seq_len=4096 .* max_positions=2048: use --seq_len=2048"):
        check_seq_len(4096, 2048)


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    data = write_corpus(tmp_path_factory.mktemp("corpus"), make_documents(120))
    return prepare(config_for(data, tmp_path_factory.mktemp("cache"))).directory


def prepared_config(directory, **overrides):
    return config_for(f"prepared:{directory}", pathlib.Path(directory).parent / "read-cache", **overrides)


def test_tokenizer_mismatch_between_shards_and_run(prepared_dir):
    for tokenizer in ("gpt2", "train:512"):
        match = r"tokenized with --tokenizer=train:400 .*not --tokenizer="
        with pytest.raises(ValueError, match=match) as error:
            prepare(prepared_config(prepared_dir, tokenizer=tokenizer))
        assert "\n" not in str(error.value)
    assert prepare(prepared_config(prepared_dir)).vocab_size == 400  # the matching one reads


def test_unreadable_shard_directory(tmp_path, prepared_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare(prepared_config(tmp_path / "nowhere"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train-00000-of-00001-000000.array_record").write_bytes(b"")
    with pytest.raises(ValueError, match="has no manifest.json .*it resumes"):
        prepare(prepared_config(tmp_path / "half"))
    broken = tmp_path / "broken"
    shutil.copytree(prepared_dir, broken)
    next(broken.glob("train-*.array_record")).unlink()
    with pytest.raises(ValueError, match="cannot read the shard .*prepare the data again") as error:
        prepare(prepared_config(broken))
    assert "\n" not in str(error.value)


def test_check_source_for_dry_runs(tmp_path):
    from neoscale.data import check_source

    check_source(config_for("tfds:c4/en", tmp_path))  # known to tfds, not prepared: fine
    with pytest.raises(ValueError, match="unknown tfds dataset 'openwebtext'"):
        check_source(config_for("tfds:openwebtext", tmp_path))
    with pytest.raises(FileNotFoundError, match="no files match"):
        check_source(config_for(f"text:{tmp_path}/*.jsonl", tmp_path))
    assert not list(tmp_path.iterdir())  # nothing prepared
    (tmp_path / "blank.txt").write_text("  \n\n")
    with pytest.raises(ValueError, match=r"the corpus of text:.* is empty \(1 file\(s\), no non-blank"):
        check_source(config_for(f"text:{tmp_path}/*.txt", tmp_path))  # not "0 training tokens"


def test_an_output_directory_that_is_a_file_or_unwritable(tmp_path, monkeypatch):
    from neoscale.data.pipeline import check_writable_dir

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--out=.*/file/sub cannot be a directory: .*/file is a file"):
        check_writable_dir(str(tmp_path / "file" / "sub"), "--out")
    check_writable_dir(str(tmp_path / "new" / "dir"), "--out")  # created later: fine
    check_writable_dir("gs://bucket/dir", "--out")  # object stores: checked when written
    monkeypatch.setattr("os.access", lambda path, mode: False)  # (root may write anywhere)
    with pytest.raises(ValueError, match=r"data.cache_dir=.*/new is not writable \(no write permission"):
        check_writable_dir(str(tmp_path / "new"), "data.cache_dir")
    with pytest.raises(ValueError, match="is not writable"):
        prepare(config_for("builtin", tmp_path / "cache"))


def test_hf_source_without_the_datasets_package(tmp_path, cache, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "datasets" else find_spec(name, *a))
    assert_fails(config_for(f"hf:{tmp_path}", cache), ValueError, r"pip install neoscale\[hf\]")
