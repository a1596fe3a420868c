"""Where documents come from: ``builtin``, ``text:GLOB``, ``tfds:NAME[:VERSION]``, ``hf:NAME[:CONFIG]``.

Every source streams its documents (``documents(spec)`` is an iterator of ``(label, text)``; no
source is ever held in memory as a list), offers a cheap ``fingerprint`` (identifies the data for
the cache without reading the text) and ``estimate`` (bytes and documents, from file sizes or
dataset metadata, for planning before anything is tokenized). ``label`` names the sub-source a
document comes from, so held-out and training mixtures can be reported.

* ``builtin``: Wikipedia summaries and Shakespeare's plays (labels "wikipedia", "shakespeare").
* ``text:GLOB``: ``.jsonl`` files give one document per non-empty line, from the ``text_field``
  (default ``text``) of each JSON object; every other file is one document. Label: the name of
  the file's directory. Undecodable bytes are replaced by U+FFFD, counted and logged, not fatal.
* ``tfds:NAME[:VERSION]``: a tensorflow-datasets dataset prepared in ``tfds_data_dir`` (or the
  tfds default), split ``tfds_split``, text feature ``text_field``. array_record datasets are
  read with ``tfds.data_source`` + grain; TFRecord datasets need TensorFlow (``neoscale[tf]``).
* ``hf:NAME[:CONFIG]``: a Hugging Face ``datasets`` dataset read in streaming mode (split
  ``tfds_split``, field ``text_field``); NAME may also be a local directory of .jsonl/.parquet
  files. Needs ``pip install neoscale[hf]`` and, for hub datasets, the network.
* ``prepared:DIR``: token shards written by ``python -m neoscale.prepare`` (no documents are
  read; see ``neoscale.data.shards``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib
import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterator

import grain

from neoscale.data import builtin

log = logging.getLogger(__name__)

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_REPLACEMENT = "\ufffd"
KINDS = ("builtin", "text", "tfds", "hf", "prepared")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A parsed ``--data`` value. ``kind`` is one of KINDS."""

    kind: str
    pattern: str = ""  # the glob for "text", "name[:version]" for "tfds", "name[:config]" for "hf"
    text_field: str = "text"
    tfds_data_dir: str | None = None
    tfds_split: str = "train"
    max_documents: int | None = None

    def describe(self) -> str:
        return self.kind if self.kind == "builtin" else f"{self.kind}:{self.pattern}"


@dataclasses.dataclass
class ReadStats:
    """Counters filled while a source is read (for the description)."""

    files: int = 0
    replaced_undecodable: int = 0
    extra: dict = dataclasses.field(default_factory=dict)


def parse(data: str, **options) -> SourceSpec:
    """Parses "builtin" | "text:GLOB" | "tfds:NAME[:VERSION]" | "hf:NAME[:CONFIG]" | "prepared:DIR"."""
    if data == "builtin":
        return SourceSpec("builtin", **options)
    kind, _, rest = data.partition(":")
    if kind in KINDS and kind != "builtin" and rest:
        if kind == "tfds" and ":" in rest and not _VERSION.match(rest.rpartition(":")[2]):
            raise ValueError(f"bad tfds version in --data={data}: use tfds:NAME or tfds:NAME:X.Y.Z")
        return SourceSpec(kind, rest, **options)
    raise ValueError(
        f"unknown --data={data!r}: use builtin, text:GLOB (.txt/.jsonl files), tfds:NAME[:VERSION], "
        "hf:NAME[:CONFIG] or prepared:DIR"
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


def _jsonl_text(line: str, spec: SourceSpec, where: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise ValueError(f"{where} is not valid JSON: .jsonl files need one JSON object per line") from None
    if not isinstance(record, dict) or not isinstance(record.get(spec.text_field), str):
        raise ValueError(
            f"{where} has no string field {spec.text_field!r}: set text_field to the field holding the text"
        )
    return record[spec.text_field]


def _text_documents(spec: SourceSpec, stats: ReadStats) -> Iterator[tuple[str, str]]:
    for path in _text_files(spec):
        label = os.path.basename(os.path.dirname(os.path.abspath(path))) or "text"
        stats.files += 1
        bad_in_file = 0
        with open(path, "rb") as f:
            if not path.endswith(".jsonl"):
                text, bad_in_file = _decode(f.read())
                yield label, text
            else:
                for line_number, raw in enumerate(f, 1):
                    line, bad = _decode(raw)
                    bad_in_file += bad
                    if line.strip():
                        yield label, _jsonl_text(line, spec, f"{path}:{line_number}")
        if bad_in_file:
            stats.replaced_undecodable += bad_in_file
            log.warning("%s: %d undecodable byte sequence(s) replaced by U+FFFD", path, bad_in_file)


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


def _import_text_builder(pattern: str) -> None:
    """Registers tfds's text builders (c4, wikipedia, ...): without TensorFlow, ``import
    tensorflow_datasets`` skips the ``text`` package, whose modules import fine one by one."""
    name = pattern.partition("/")[0].partition(":")[0]
    if name.isidentifier():
        with contextlib.suppress(Exception):
            importlib.import_module(f"tensorflow_datasets.text.{name}")


def _tfds_builder(spec: SourceSpec, require_prepared: bool = True):
    import tensorflow_datasets as tfds  # slow import: only for tfds sources

    _check_tfds_data_dir(spec.tfds_data_dir)
    data_dir = os.path.expanduser(spec.tfds_data_dir) if spec.tfds_data_dir else None
    where = f"in {spec.tfds_data_dir}" if spec.tfds_data_dir else "in the default tfds data_dir"
    _import_text_builder(spec.pattern)
    try:
        builder = tfds.builder(spec.pattern, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError, import errors of builder code, ...
        raise ValueError(
            f"unknown tfds dataset {spec.pattern!r} {where} ({type(error).__name__}): check the "
            "name and --tfds_data_dir"
        ) from None
    if not require_prepared:
        return builder
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


def _tfds_records(spec: SourceSpec, builder, start: int, step: int) -> Iterator[tuple[int, object]]:
    """Yields (record index, raw text feature: bytes or str) of examples start, start+step, ..."""
    num_examples = builder.info.splits[spec.tfds_split].num_examples
    count = min(num_examples, spec.max_documents or num_examples)
    if builder.info.file_format.value == "array_record":
        source = builder.as_data_source(split=spec.tfds_split)
        dataset = grain.MapDataset.source(source)[start:count:step].map(lambda ex: ex[spec.text_field])
        records = dataset.to_iter_dataset(grain.ReadOptions(num_threads=4))
        yield from zip(range(start, count, step), records, strict=True)
        return
    if importlib.util.find_spec("tensorflow") is None:
        raise ValueError(
            f"tfds dataset {spec.pattern!r} is stored as {builder.info.file_format.value}, "
            "which needs TensorFlow: pip install neoscale[tf] (or rebuild it with "
            "--file_format=array_record)"
        )
    import tensorflow_datasets as tfds

    dataset = builder.as_dataset(split=spec.tfds_split, shuffle_files=False).take(count)
    for index, example in enumerate(tfds.as_numpy(dataset)):
        if index % step == start:
            yield index, example[spec.text_field]


def _tfds_documents(spec: SourceSpec, stats: ReadStats, start: int, step: int):
    builder = _tfds_builder(spec)
    stats.extra.update(tfds_name=builder.info.full_name, tfds_split=spec.tfds_split)
    label = builder.info.name
    for index, value in _tfds_records(spec, builder, start, step):
        if isinstance(value, bytes):
            value, bad = _decode(value)
            stats.replaced_undecodable += bad
        if str(value).strip():
            yield index, label, str(value)


def _hf_dataset(spec: SourceSpec):
    if importlib.util.find_spec("datasets") is None:
        raise ValueError(
            f"--data=hf:{spec.pattern} needs the Hugging Face datasets package: pip install neoscale[hf]"
        )
    import datasets

    name, _, config = spec.pattern.partition(":")
    if os.path.isdir(os.path.expanduser(name)):
        name = os.path.expanduser(name)
    try:
        return datasets.load_dataset(name, config or None, split=spec.tfds_split, streaming=True)
    except Exception as error:  # DatasetNotFoundError, ConnectionError, ValueError of bad splits, ...
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ValueError(
            f"cannot open --data=hf:{spec.pattern} split {spec.tfds_split!r} ({reason}): check the "
            "name, config, split and network"
        ) from None


def _hf_label(spec: SourceSpec) -> str:
    return os.path.basename(spec.pattern.partition(":")[0].rstrip("/")) or spec.pattern


def _hf_text(spec: SourceSpec, example: dict, where: str) -> str:
    text = example.get(spec.text_field)
    if not isinstance(text, str):
        raise ValueError(f"hf:{spec.pattern} {where} has no string field {spec.text_field!r}: set "
                         f"text_field to one of {sorted(example)}")
    return text


def _hf_documents(spec: SourceSpec, stats: ReadStats) -> Iterator[tuple[str, str]]:
    for index, example in enumerate(_hf_dataset(spec)):
        yield _hf_label(spec), _hf_text(spec, example, f"example {index}")


ROW_BITS = 32  # an hf document id by file: file << ROW_BITS | row


def splits_by_file(spec: SourceSpec) -> bool:
    """Whether ``documents(spec, start=p, step=P)`` gives each process whole files of the source
    (hf datasets read whole: no max_documents), so that each document is downloaded by one
    process, its id does not depend on P, and a restart can resume after a document id. (A
    dataset of fewer than P files leaves some processes without documents.)"""
    return spec.kind == "hf" and spec.max_documents is None


def _hf_documents_by_file(spec: SourceSpec, stats: ReadStats, start: int, step: int,
                          resume_after: int | None) -> Iterator[tuple[int, str, str]]:
    """(id, label, text) of the files start, start + step, ...; id = file << ROW_BITS | row, the
    same whatever the process count; after ``resume_after`` (an id) when given."""
    dataset = _hf_dataset(spec)
    first_file, first_row = 0, 0
    if resume_after is not None:
        first_file, first_row = resume_after >> ROW_BITS, (resume_after & ((1 << ROW_BITS) - 1)) + 1
    for file in range(start, dataset.n_shards, step):
        if file < first_file:
            continue
        skip = first_row if file == first_file else 0
        rows = dataset.shard(num_shards=dataset.n_shards, index=file)
        stats.files += 1
        for row, example in enumerate(rows.skip(skip) if skip else rows, skip):
            text = _hf_text(spec, example, f"file {file} row {row}")
            if text.strip():
                yield file << ROW_BITS | row, _hf_label(spec), text


def documents(spec: SourceSpec, stats: ReadStats | None = None, *, start: int = 0,
              step: int = 1, resume_after: int | None = None) -> Iterator[tuple[int, str, str]]:
    """Streams (document id, label, text) of one process's share of the source's non-blank
    documents: those whose id is ``start`` modulo ``step``, among the first max_documents; for
    sources that ``splits_by_file``, the files ``start`` modulo ``step`` instead (after the
    document ``resume_after``, when given).

    Ids number the non-blank documents in source order (tfds: the example index; hf by file:
    file << ROW_BITS | row). Raises FileNotFoundError / ValueError with a one-line message on bad
    input, when reached.
    """
    stats = stats if stats is not None else ReadStats()
    if spec.kind == "tfds":  # random access: only this share's examples are read
        yield from _tfds_documents(spec, stats, start, step)
        return
    if splits_by_file(spec):  # only this share's files are read
        yield from _hf_documents_by_file(spec, stats, start, step, resume_after)
        return
    readers = {"builtin": lambda s, _: builtin.documents(), "text": _text_documents, "hf": _hf_documents}
    if spec.kind not in readers:
        raise ValueError(f"--data={spec.describe()} holds token shards, not documents")
    index = 0
    for label, text in readers[spec.kind](spec, stats):
        if spec.max_documents is not None and index >= spec.max_documents:
            return
        if text.strip():
            if index % step == start:
                yield index, label, text
            index += 1


def fingerprint(spec: SourceSpec) -> dict:
    """Identifies the source's data without reading the text: used in the cache key."""
    fields = dataclasses.asdict(spec)
    if spec.kind == "builtin":
        fields["files"] = builtin.fingerprint()
    elif spec.kind == "text":
        fields["files"] = [
            [os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in _text_files(spec)
        ]
    elif spec.kind == "tfds":
        builder = _tfds_builder(spec)
        fields["tfds"] = [builder.info.full_name, builder.info.splits[spec.tfds_split].num_examples]
    elif spec.kind == "hf":
        import datasets

        fields["datasets_version"] = datasets.__version__
        fields["document_ids"] = "file-row"  # since documents are read by file (ids changed)
        name = os.path.expanduser(spec.pattern.partition(":")[0])
        if os.path.isdir(name):
            paths = sorted(glob.glob(os.path.join(name, "**"), recursive=True))
            paths = [p for p in paths if os.path.isfile(p)]
            fields["files"] = [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths]
    return fields


def estimate(spec: SourceSpec) -> tuple[int, int | None]:
    """(UTF-8 bytes, documents or None) of the source, cheaply: file sizes or dataset metadata.

    Raises ValueError when the size cannot be known without reading the data (hf datasets whose
    metadata the hub does not give).
    """
    if spec.kind == "builtin":
        num_bytes, num_documents = sum(path.stat().st_size for _, path in builtin.files()), None
    elif spec.kind == "text":
        num_bytes, num_documents = sum(os.stat(p).st_size for p in _text_files(spec)), None
    elif spec.kind == "tfds":
        split = _tfds_builder(spec).info.splits[spec.tfds_split]
        num_bytes, num_documents = int(split.num_bytes), int(split.num_examples)
    elif spec.kind == "hf":
        num_bytes, num_documents = _hf_estimate(spec)
    else:
        raise ValueError(f"--data={spec.describe()} is prepared: read its manifest instead")
    if spec.max_documents is not None and num_documents is not None and spec.max_documents < num_documents:
        num_bytes = num_bytes * spec.max_documents // num_documents
        num_documents = spec.max_documents
    return num_bytes, num_documents


def _hf_estimate(spec: SourceSpec) -> tuple[int, int | None]:
    name = os.path.expanduser(spec.pattern.partition(":")[0])
    if os.path.isdir(name):
        paths = [p for p in glob.glob(os.path.join(name, "**"), recursive=True) if os.path.isfile(p)]
        return sum(os.stat(p).st_size for p in paths), None
    if importlib.util.find_spec("datasets") is None:
        raise ValueError(f"--data=hf:{spec.pattern} needs the Hugging Face datasets package: "
                         "pip install neoscale[hf]")
    import datasets

    try:
        info = datasets.load_dataset_builder(name, spec.pattern.partition(":")[2] or None).info
        split = info.splits[spec.tfds_split]
        return int(split.num_bytes), int(split.num_examples)
    except Exception:
        raise ValueError(
            f"the size of hf:{spec.pattern} split {spec.tfds_split!r} is unknown without reading it: "
            "prepare it first (python -m neoscale.prepare) and use --data=prepared:DIR"
        ) from None


def _check_hf(spec: SourceSpec) -> None:
    """The datasets package is there and the dataset exists (a local directory, or on the hub:
    one metadata request, no retries, so an offline machine answers in a second)."""
    if importlib.util.find_spec("datasets") is None:
        raise ValueError(f"--data=hf:{spec.pattern} needs the Hugging Face datasets package: "
                         "pip install neoscale[hf]")
    name = spec.pattern.partition(":")[0]
    if os.path.isdir(os.path.expanduser(name)):
        return
    import huggingface_hub

    try:
        huggingface_hub.HfApi().dataset_info(name, timeout=10)
    except huggingface_hub.errors.RepositoryNotFoundError:
        raise ValueError(f"unknown Hugging Face dataset {name!r} in --data=hf:{spec.pattern}: check "
                         "the name (huggingface.co/datasets/NAME)") from None
    except Exception as error:  # noqa: BLE001 - no network, a proxy, a timeout
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise ValueError(f"cannot reach the Hugging Face hub to check --data=hf:{spec.pattern} "
                         f"({reason}): run where the hub is reachable, or prepare the corpus there "
                         "and use --data=prepared:DIR") from None


SMALL_TEXT_BYTES = 1 << 20  # text sources this small are read whole by ``check`` (emptiness)


def check(spec: SourceSpec) -> None:
    """Cheap existence check (no reading, no preparation): one-line ValueError/FileNotFoundError."""
    if spec.kind == "text":
        files = _text_files(spec)
        if sum(os.stat(p).st_size for p in files) < SMALL_TEXT_BYTES and next(documents(spec), None) is None:
            raise ValueError(f"the corpus of {spec.describe()} is empty ({len(files)} file(s), no "
                             "non-blank documents): point --data at files with text")
    elif spec.kind == "tfds":
        _tfds_builder(spec, require_prepared=False)
    elif spec.kind == "hf":
        _check_hf(spec)
    elif spec.kind == "builtin":
        builtin.files()
