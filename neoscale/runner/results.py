"""results.csv: one row per evaluation point of every run and cooldown branch, written atomically.

Columns (the contract with ``neoscale.scaling``, which defines them): see ``COLUMNS``. ``status``
is ``done``, ``running`` or ``failed:<reason>``; ``budget_flops`` is a main run's IsoFLOP budget
(empty outside IsoFLOP studies, and always empty for a cooldown branch: a branch spends a fraction
of its run's budget, so it belongs to no IsoFLOP slice); ``cooldown`` the fraction of the run at
which a WSD cooldown branch ends (empty for a main run); ``final`` is true on the last evaluation
row of each finished run or branch; ``parent`` the main run a branch was forked from (the run
itself for a main run) and ``fork_step`` the step it was forked at (empty for a main run), so that
fits resample a branch with its parent and never use its curve before the fork; ``epochs`` the
passes over the corpus's training tokens the run (or branch) made, empty when unknown; ``seed`` the
run's model seed (replicate seeds of one size differ only in it; empty in studies from before
replicates, which read as one seed per size). After them, the downstream-task columns of the runs
that scored tasks, ``task_<name>_bpb``, ``_acc`` and ``_chance``
(``neoscale.evaluation.scoring``), sorted by name. Losses are
in nats per token on the fixed held-out set; FLOPs follow ``neoscale.accounting`` (its default
``neoscale`` convention).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

from etils import epath

from neoscale.files import write_atomic
from neoscale.runner.plan import PlannedRun
from neoscale.scaling.results import RESULTS_COLUMNS as COLUMNS

RESULTS_FILE = "results.csv"
TASK_PREFIX = "task_"  # downstream-task columns: task_<name>_{bpb,acc,chance}


def run_columns(run: PlannedRun, name: str | None = None, cooldown: float | None = None) -> dict:
    """The columns that describe a run, or (``name`` one of its branches') a cooldown branch."""
    m = run.model
    columns = {"run": run.name, "size": run.size, "d_model": m.d_model,
               "num_layers": m.num_layers, "num_heads": m.num_heads, "num_experts": m.num_experts,
               "top_k": m.top_k, "params_total": run.params_total,
               "params_non_embedding": run.params_non_embedding, "params_active": run.params_active,
               "budget_flops": run.budget_flops, "cooldown": None, "parent": run.name,
               "fork_step": None, "epochs": run.epochs, "seed": run.seed}
    if name is None or name == run.name:
        return columns
    branch = next((b for b in run.branches if b.name == name), None)
    if branch is None:
        raise ValueError(f"{name!r} is not a cooldown branch of run {run.name!r}")
    epochs = None if run.epochs is None else run.epochs * branch.steps / run.steps
    return {**columns, "run": name, "budget_flops": None, "cooldown": cooldown,
            "fork_step": branch.fork_step, "epochs": epochs}


def point_columns(point: Mapping[str, Any]) -> dict:
    """The columns of one evaluation point (an EvalPoint as a dict, or a metrics.jsonl record):
    the task metrics come from an EvalPoint's ``tasks`` or a record's own ``task_*`` fields."""
    tasks = point.get("tasks") or {k: v for k, v in point.items() if k.startswith(TASK_PREFIX)}
    return {"step": point["step"], "tokens": point["tokens"], "flops": point["flops"],
            "train_loss": point.get("train_loss", point.get("loss")),
            "eval_loss": point["eval_loss"], "wall_seconds": point.get("wall_seconds"), **tasks}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV text with the header COLUMNS, then the rows' task columns sorted (missing values empty)."""
    rows = list(rows)
    tasks = sorted({k for row in rows for k in row if k.startswith(TASK_PREFIX)})
    columns = (*COLUMNS, *tasks)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def write_results(workdir: str | epath.Path, rows: Iterable[Mapping[str, Any]]) -> epath.Path:
    path = epath.Path(workdir) / RESULTS_FILE
    write_atomic(path, to_csv(rows))
    return path


TEXT_COLUMNS = ("run", "size", "status", "parent")  # the others but ``final`` are numbers


def read_results(workdir: str | epath.Path):
    """results.csv as a pandas DataFrame (empty cells are NaN, and so is a number column's cell
    that is no number, e.g. a row cut off mid-write; ``final`` is bool)."""
    import pandas as pd

    with (epath.Path(workdir) / RESULTS_FILE).open() as f:
        frame = pd.read_csv(f, dtype={column: str for column in TEXT_COLUMNS})
    frame["final"] = frame["final"].astype(str).str.lower() == "true"
    for column in frame.columns:
        if column not in TEXT_COLUMNS and column != "final":
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


class RunRows:
    """The evaluation rows of one run or branch, with its current status."""

    def __init__(self, columns: dict, status: str = "running"):
        self.columns = columns
        self.status = status
        self.points: list[dict] = []

    def add(self, point: Mapping[str, Any]) -> None:
        """Adds an evaluation point; drops points at or after its step (a resumed run redoes them)."""
        row = point_columns(point)
        self.points = [p for p in self.points if p["step"] < row["step"]] + [row]

    def rows(self) -> list[dict]:
        out = []
        for i, point in enumerate(self.points):
            final = self.status == "done" and i == len(self.points) - 1
            out.append({**self.columns, **point, "status": self.status, "final": final})
        if not out and self.status.startswith("failed"):
            out.append({**self.columns, "status": self.status, "final": False})
        return out


RUN_COLUMNS_FILE = "study_run.json"  # in each run directory: its run_columns, for collect()
FAILED_KEY = "failed"  # in RUN_COLUMNS_FILE: the reason its run failed (until it is retried)


def collect(runs_dir: str | epath.Path, exclude: Iterable[str] = ()) -> list[dict]:
    """Rows of every run directory under ``runs_dir`` that holds a RUN_COLUMNS_FILE, except
    ``exclude``: how several slices (each running part of the sizes into one shared workdir) see
    each other's runs, and how a rerun with fewer sizes keeps the others. Finished runs give their
    evaluation points, failed ones their reason (``failed:<reason>``), others their metrics so far."""
    from neoscale.files import read_json
    from neoscale.training.loop import FINISHED_FILE, FINISHED_IF_DELETED
    from neoscale.training.metrics import read_metrics

    rows: list[dict] = []
    runs_dir = epath.Path(runs_dir)
    if not runs_dir.exists():
        return rows
    excluded = set(exclude)
    for run_dir in sorted(runs_dir.iterdir(), key=lambda p: p.name):
        columns_file = run_dir / RUN_COLUMNS_FILE
        if run_dir.name in excluded or not columns_file.exists():
            continue
        columns = read_json(
            columns_file, what="the run's row in results.csv",
            if_deleted="deleting it is safe: its study writes it again when it reaches the run "
            "(until then the run is left out of results.csv)")
        failed = columns.pop(FAILED_KEY, None)
        entry = RunRows(columns, f"failed:{failed}" if failed else "running")
        finished = run_dir / FINISHED_FILE
        if finished.exists():
            entry.status = "done"
            points = read_json(finished, what="a finished run's result",
                               if_deleted=FINISHED_IF_DELETED)["eval_points"]
        else:
            points = [r for r in read_metrics(run_dir) if r.get("eval_loss") is not None]
        fork = entry.columns.get("fork_step")
        for point in points:
            if fork is None or point["step"] > fork:
                entry.add(point)
        rows += [{k: v for k, v in row.items() if k in COLUMNS or k.startswith(TASK_PREFIX)}
                 for row in entry.rows()]
    return rows


def fitted_runs(frame) -> list[str]:
    """The runs (and branches) whose final rows a fit of ``frame`` uses, sorted."""
    from neoscale.scaling.results import final_points

    return sorted(final_points(frame)[0]["run"].astype(str))


def fit_regression(previous: dict | None, new: dict) -> str | None:
    """Why fit ``new`` must not replace ``previous`` (fit.json contents, their ``runs`` from
    ``fitted_runs``), or None: it lost final points the previous fit used (rows cut from
    results.csv, a loss that is no number, a run no longer done), or, on the same runs, a law
    fitted before now fails (it raised: bad settings or data, not too few points)."""
    if previous is None or "error" in previous:
        return None
    new_runs = set(new.get("runs") or [])
    if previous.get("runs") is not None:
        lost = sorted(set(previous["runs"]) - new_runs)
        grew = bool(new_runs - set(previous["runs"]))
    else:  # a fit.json from before the runs were recorded: compare counts
        lost = [] if new["data"]["final_points"] >= previous["data"]["final_points"] else ["?"]
        grew = new["data"]["final_points"] > previous["data"]["final_points"]
    if lost:
        named = ", ".join(lost[:4]) + (", ..." if len(lost) > 4 else "")
        return (f"the new fit lost {len(lost)} of the {previous['data']['final_points']} final "
                f"points the previous fit used ({named}): results.csv lost rows (cut off?) or "
                "holds a loss that is no number (runs removed on purpose: delete fit.json, refit)")
    if grew:
        return None
    broken = [key for key, law in previous["laws"].items() if law.get("status") == "fitted"
              and new["laws"].get(key, {}).get("status") == "failed"]
    if broken:
        return (f"{', '.join(broken)} fitted before and now fail on the same runs "
                f"({new['laws'][broken[0]]['reason']})")
    return None


def read_fit(path: str | epath.Path) -> dict | None:
    """The fit in a fit.json, or None when there is none (no file, a recorded error, unreadable)."""
    import json

    path = epath.Path(path)
    try:
        fit = json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        return None
    return fit if isinstance(fit, dict) and "laws" in fit else None
