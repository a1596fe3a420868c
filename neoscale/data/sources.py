"""Where documents come from: ``builtin``, ``text:GLOB`` or ``tfds:NAME[:VERSION]``.

Each source offers a cheap ``fingerprint`` (identifies the data for the cache without reading the
text) and ``read`` (all documents as strings plus a JSON-able description).

* ``text:GLOB``: ``.jsonl`` files give one document per non-empty line, from the ``text_field``
  (default ``text``) of each JSON object; every other file is one document. Undecodable bytes are
  replaced by U+FFFD, counted in the description and logged, not fatal.
* ``tfds:NAME[:VERSION]``: a tensorflow-datasets dataset prepared in ``tfds_data_dir`` (or the
  tfds default), split ``tfds_split``, text feature ``text_field``. array_record datasets are
  read with ``tfds.data_source`` + grain; TFRecord datasets need TensorFlow (``neoscale[tf]``).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import logging
import os
import re

import grain

from neoscale.data import builtin

log = logging.getLogger(__name__)

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_REPLACEMENT = "\ufffd"


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A parsed ``--data`` value. ``kind`` is "builtin", "text" or "tfds"."""

    kind: str
    pattern: str = ""  # the glob for "text", "name[:version]" for "tfds"
    text_field: str = "text"
    tfds_data_dir: str | None = None
    tfds_split: str = "train"
    max_documents: int | None = None


def parse(data: str, **options) -> SourceSpec:
    """Parses "builtin" | "text:GLOB" | "tfds:NAME[:VERSION]" (extra fields go to SourceSpec)."""
    if data == "builtin":
        return SourceSpec("builtin", **options)
    kind, _, rest = data.partition(":")
    if kind in ("text", "tfds") and rest:
        if kind == "tfds" and ":" in rest and not _VERSION.match(rest.rpartition(":")[2]):
            raise ValueError(f"bad tfds version in --data={data}: use tfds:NAME or tfds:NAME:X.Y.Z")
        return SourceSpec(kind, rest, **options)
    raise ValueError(
        f"unknown --data={data!r}: use builtin, text:GLOB (.txt/.jsonl files) or tfds:NAME[:VERSION]"
    )


def _text_files(spec: SourceSpec) -> list[str]:
    paths = sorted(
        p for p in glob.glob(os.path.expanduser(spec.pattern), recursive=True) if os.path.isfile(p)
    )
    if not paths:
        raise FileNotFoundError(
            f"no files match --data=text:{spec.pattern}: check the path or glob (quote it so the "
            "shell does not expand it)"
        )
    return paths


def _decode(raw: bytes) -> tuple[str, int]:
    """UTF-8 decoding with replacement; returns (text, number of undecodable byte sequences)."""
    text = raw.decode("utf-8", errors="replace")
    return text, text.count(_REPLACEMENT) - raw.count(_REPLACEMENT.encode("utf-8"))


def _read_text(spec: SourceSpec) -> tuple[list[str], dict]:
    documents, replaced, num_files = [], 0, 0
    for path in _text_files(spec):
        with open(path, "rb") as f:
            text, bad = _decode(f.read())
        replaced += bad
        num_files += 1
        if bad:
            log.warning("%s: %d undecodable byte sequence(s) replaced by U+FFFD", path, bad)
        if not path.endswith(".jsonl"):
            documents.append(text)
            continue
        for line_number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(
                    f"{path}:{line_number} is not valid JSON: .jsonl files need one JSON object per line"
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get(spec.text_field), str):
                raise ValueError(
                    f"{path}:{line_number} has no string field {spec.text_field!r}: set "
                    "text_field to the field holding the text"
                )
            documents.append(record[spec.text_field])
    return documents, {"files": num_files, "replaced_undecodable": replaced}


def _check_tfds_data_dir(data_dir: str | None) -> None:
    if data_dir is None:
        return
    if data_dir.startswith("gs://"):
        if importlib.util.find_spec("gcsfs") is None:
            raise ValueError(
                f"--tfds_data_dir={data_dir} needs gcsfs to read gs:// paths: pip install neoscale[gcs]"
            )
    elif not os.path.isdir(os.path.expanduser(data_dir)):
        raise FileNotFoundError(
            f"--tfds_data_dir={data_dir} does not exist: give the directory the dataset was built into"
        )


def _tfds_builder(spec: SourceSpec):
    import tensorflow_datasets as tfds  # slow import: only for tfds sources

    _check_tfds_data_dir(spec.tfds_data_dir)
    data_dir = os.path.expanduser(spec.tfds_data_dir) if spec.tfds_data_dir else None
    where = f"in {spec.tfds_data_dir}" if spec.tfds_data_dir else "in the default tfds data_dir"
    try:
        builder = tfds.builder(spec.pattern, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError, import errors of builder code, ...
        raise ValueError(
            f"unknown tfds dataset {spec.pattern!r} {where} ({type(error).__name__}): check the "
            "name and --tfds_data_dir"
        ) from None
    if not builder.is_prepared():
        raise ValueError(
            f"tfds dataset {spec.pattern!r} is not prepared {where}: build it first, e.g. "
            f"tfds build {spec.pattern.partition(':')[0]} --file_format=array_record "
            f"--data_dir=DIR"
        )
    if spec.tfds_split not in builder.info.splits:
        raise ValueError(
            f"tfds dataset {spec.pattern!r} has no split {spec.tfds_split!r}: choose one of "
            f"{sorted(builder.info.splits)}"
        )
    if spec.text_field not in builder.info.features:
        raise ValueError(
            f"tfds dataset {spec.pattern!r} has no feature {spec.text_field!r}: set text_field "
            f"to one of {sorted(builder.info.features)}"
        )
    return builder


def _tfds_records(spec: SourceSpec, builder):
    """Yields the raw text feature (bytes or str) of each example, in dataset order."""
    num_examples = builder.info.splits[spec.tfds_split].num_examples
    count = min(num_examples, spec.max_documents or num_examples)
    if builder.info.file_format.value == "array_record":
        source = builder.as_data_source(split=spec.tfds_split)
        dataset = grain.MapDataset.source(source)[:count].map(lambda ex: ex[spec.text_field])
        yield from dataset.to_iter_dataset(grain.ReadOptions(num_threads=4))
        return
    if importlib.util.find_spec("tensorflow") is None:
        raise ValueError(
            f"tfds dataset {spec.pattern!r} is stored as {builder.info.file_format.value}, "
            "which needs TensorFlow: pip install neoscale[tf] (or rebuild it with "
            "--file_format=array_record)"
        )
    import tensorflow_datasets as tfds

    dataset = builder.as_dataset(split=spec.tfds_split, shuffle_files=False).take(count)
    for example in tfds.as_numpy(dataset):
        yield example[spec.text_field]


def _read_tfds(spec: SourceSpec) -> tuple[list[str], dict]:
    builder = _tfds_builder(spec)
    documents, replaced = [], 0
    for value in _tfds_records(spec, builder):
        if isinstance(value, bytes):
            value, bad = _decode(value)
            replaced += bad
        documents.append(str(value))
    if replaced:
        log.warning("%s: %d undecodable byte sequence(s) replaced", spec.pattern, replaced)
    return documents, {
        "tfds_name": builder.info.full_name,
        "tfds_split": spec.tfds_split,
        "replaced_undecodable": replaced,
    }


def fingerprint(spec: SourceSpec) -> dict:
    """Identifies the source's data without reading the text: used in the cache key."""
    fields = dataclasses.asdict(spec)
    if spec.kind == "builtin":
        fields["files"] = builtin.fingerprint()
    elif spec.kind == "text":
        fields["files"] = [
            [os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in _text_files(spec)
        ]
    else:
        builder = _tfds_builder(spec)
        fields["tfds"] = [builder.info.full_name, builder.info.splits[spec.tfds_split].num_examples]
    return fields


def read(spec: SourceSpec) -> tuple[list[str], dict]:
    """All non-empty documents of the source and a JSON-able description of them.

    Raises FileNotFoundError / ValueError with a one-line message on bad input.
    """
    if spec.kind == "builtin":
        documents, description = builtin.read()
    elif spec.kind == "text":
        documents, description = _read_text(spec)
    else:
        documents, description = _read_tfds(spec)
    documents = [d for d in documents if d.strip()]
    if spec.max_documents is not None:
        documents = documents[: spec.max_documents]
    if not documents:
        raise ValueError(
            f"the corpus of {spec.kind}:{spec.pattern} is empty (no non-blank documents): "
            "point --data at files with text"
        )
    description = {
        "source": spec.kind if spec.kind == "builtin" else f"{spec.kind}:{spec.pattern}",
        "documents": len(documents),
        "bytes": sum(len(d.encode("utf-8")) for d in documents),
        "replaced_undecodable": 0,
        **{k: v for k, v in description.items() if k != "bytes"},
    }
    return documents, description
