"""Executing a study plan: every run (and its cooldown branches) in turn, then fit, plots, report.

WORKDIR layout::

    plan.json           the study config and the plan (what the report's table shows)
    runs/<run>/         one training run (config.json, metrics.jsonl, tensorboard/, checkpoints/,
                        finished.json); cooldown branches are runs named <run>_cd<fraction>
    results.csv         one row per evaluation point (rewritten atomically after every one)
    fit.json            the fitted laws (neoscale.scaling.fit_study)
    plots/*.png, *.svg  the figures (neoscale.plots.draw_study)
    report.md           the summary with the figures inline

Resumable at every level: ``train`` skips a finished run and resumes an interrupted one from its
latest checkpoint. A run that fails (non-finite loss, out of memory, bad settings) is recorded
with its reason and the study goes on; a preemption stops the study (rerun to resume). Every
process runs this; only process 0 writes results, fit, plots and report.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
from etils import epath

from neoscale.data.pipeline import DataConfig
from neoscale.files import CorruptFileError, read_json, to_json, write_atomic
from neoscale.runner import forecasts as forecasts_lib
from neoscale.runner import report as report_lib
from neoscale.runner import results as results_lib
from neoscale.runner.plan import Branch, PlannedRun, format_table, total_flops
from neoscale.training.checkpoint import DiskFullError, is_disk_full
from neoscale.training.config import RunConfig
from neoscale.training.loop import NonFiniteLossError, settings_conflict, train
from neoscale.training.metrics import read_metrics
from neoscale.training.stopping import Preempted, StopSignal, stop_signals
from neoscale.workdir_lock import WorkdirLocked

PLAN_FILE = "plan.json"
FIT_FILE = "fit.json"
PLOTS_DIR = "plots"
RUNS_DIR = "runs"
# RunConfig fields a study's ``train`` section or ``size_overrides`` may set directly.
RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunConfig))


@dataclasses.dataclass
class StudyOutcome:
    """What ``run_study`` did: failures maps a run name to its reason."""

    failures: dict[str, str]
    trained: list[str]  # runs that trained at least one step in this invocation
    skipped: list[str]  # runs found finished
    outputs: list[str]  # files written at the end (results, fit, plots, report)


def is_compile_out_of_memory(error: BaseException) -> bool:
    """The compiler refused the program as larger than the device's memory: deterministic (every
    host compiles the same program), so a pod records the run as failed and goes on together."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text and ("compile" in text.lower() or "exceeds" in text)


def failure_reason(error: BaseException) -> str:
    """A short one-line reason for results.csv (``failed:<reason>``)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, DiskFullError) or is_disk_full(error):  # before RESOURCE_EXHAUSTED below
        return "disk full: " + text[:300]
    if isinstance(error, CorruptFileError):  # names the file and whether deleting it is safe
        return "corrupt file: " + text
    if isinstance(error, NonFiniteLossError):
        return text if text.startswith("non-finite") else "non-finite loss: " + text
    if isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
        return "out of memory: " + text[:200]
    if isinstance(error, ValueError | FileNotFoundError):
        return "bad settings or data: " + text
    return f"{type(error).__name__}: {text[:300]}"


def study_data_config(study: ml_collections.ConfigDict, cache_dir: str) -> DataConfig:
    """The one DataConfig of a study: prepared once, up front, and read by every run."""
    d = study.data
    return DataConfig(data=d.data, tokenizer=d.tokenizer, seq_len=int(d.seq_len),
                      heldout_tokens=d.heldout_tokens, seed=d.seed, cache_dir=cache_dir,
                      tfds_data_dir=d.tfds_data_dir, tfds_split=d.tfds_split,
                      text_field=d.text_field, max_documents=d.max_documents)


def eval_fields(study: ml_collections.ConfigDict) -> dict[str, Any]:
    """The RunConfig fields of the downstream tasks every run scores (a study config from before
    the ``eval`` section scores none)."""
    evaluation = study.get("eval") or {}
    return {"eval_tasks": evaluation.get("tasks") or "",
            "eval_task_examples": evaluation.get("max_examples")}


class SettingsConflict(ValueError):
    """Planned runs whose directories hold runs with other settings (bad input: nothing written)."""


def check_reuse(plan: Sequence[PlannedRun], study: ml_collections.ConfigDict,
                workdir: str | epath.Path, cache_dir: str, data: Any = None) -> None:
    """Raises SettingsConflict, in one line, naming every planned run and branch whose directory
    already holds a run (finished or checkpointed) with other settings, and the fields that
    differ (old -> new). Reads only: a refused rerun leaves the study as it was."""
    workdir = epath.Path(workdir)
    conflicts: dict[str, list[str]] = {}  # "field old -> new; ..." -> runs
    for run in plan:
        for branch in (None, *run.branches):
            changed = settings_conflict(run_config(run, study, workdir, cache_dir, branch), data=data)
            if changed:
                conflicts.setdefault(", ".join(changed), []).append(
                    run.name if branch is None else branch.name)
    if conflicts:
        described = "; ".join(f"{', '.join(names)} ({changes})" for changes, names in conflicts.items())
        raise SettingsConflict(
            f"workdir {str(workdir)!r} holds runs with other settings: {described}; use a new "
            "--workdir, or the same settings to reuse them")


def run_config(run: PlannedRun, study: ml_collections.ConfigDict, workdir: epath.Path,
               cache_dir: str, branch: Branch | None = None) -> RunConfig:
    """The RunConfig of a planned run, or of one of its cooldown branches."""
    train_cfg = study.train
    shared = {key: train_cfg[key] for key in train_cfg if key in RUN_FIELDS}
    shared = {key: value for key, value in shared.items() if value is not None}
    shared.pop("learning_rate_law", None)  # the plan resolved it into the run's learning_rate
    fields: dict[str, Any] = {
        **shared,
        "model": run.model,  # the model the plan printed
        "data": dataclasses.replace(study_data_config(study, cache_dir), seq_len=run.seq_len),
        "workdir": str(workdir / RUNS_DIR / run.name),
        "steps": run.steps,
        "batch_size": run.batch_size,
        "micro_batches": run.micro_batches,
        "mesh": study.mesh,
        "learning_rate": run.learning_rate,
        "warmup_steps": run.warmup_steps,
        "schedule": run.schedule,
        "eval_every": run.eval_every,
        "checkpoint_every": run.checkpoint_every,
        **eval_fields(study),
    }
    if run.seed is not None:  # a replicate's own model seed (plans from before seeds: train.seed)
        fields["seed"] = run.seed
    if run.branches:
        from math import gcd

        fork_steps = [b.fork_step for b in run.branches]
        fields["keep_checkpoint_every"] = gcd(*fork_steps) if len(fork_steps) > 1 else fork_steps[0]
    fields.update({k: v for k, v in run.overrides.items() if k in RUN_FIELDS})
    if branch is not None:
        fields.update(
            workdir=str(workdir / RUNS_DIR / branch.name), steps=branch.steps,
            cooldown_steps=branch.cooldown_steps, init_from=(run.name, branch.fork_step),
            eval_every=branch.steps, checkpoint_every=max(1, branch.cooldown_steps // 2),
            keep_checkpoint_every=None)
    return RunConfig(**fields)


class Progress:
    """The study's overall progress line: runs done / total, FLOPs done / total, ETA."""

    def __init__(self, plan: Sequence[PlannedRun], enabled: bool):
        self.enabled = enabled
        self.total_runs = sum(1 + len(run.branches) for run in plan)
        self.total_flops = total_flops(plan)
        self.done_runs = 0
        self.done_flops = 0.0
        self.start = self.run_start = time.monotonic()
        self.rate: float | None = None  # FLOP/s of the last trained run (larger runs run faster)

    def finish(self, flops: float, trained: bool) -> None:
        self.done_runs += 1
        self.done_flops += flops
        if trained:
            self.rate = flops / max(time.monotonic() - self.run_start, 1e-9)

    def line(self, current: str = "") -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        parts = [f"[study] runs {self.done_runs}/{self.total_runs}",
                 f"FLOPs {self.done_flops:.3g}/{self.total_flops:.3g} "
                 f"({self.done_flops / max(self.total_flops, 1e-30):.0%})",
                 f"elapsed {format_duration(elapsed)}"]
        if self.rate:  # at the last run's speed: an upper bound, as larger models run faster
            parts.append(f"ETA {format_duration((self.total_flops - self.done_flops) / self.rate)}")
        if current:
            parts.append(f"now {current}")
            self.run_start = time.monotonic()
        print(" | ".join(parts), file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    """'4m05s', '2h03m10s', '3d04h'."""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _eval_records(run_dir: epath.Path) -> list[dict]:
    """Evaluation records already in a run's metrics.jsonl (an interrupted run's earlier points)."""
    return [r for r in read_metrics(run_dir) if r.get("eval_loss") is not None]


def run_study(
    plan: Sequence[PlannedRun],
    study: ml_collections.ConfigDict,
    workdir: str | epath.Path,
    *,
    cache_dir: str,
    data: Any = None,
    train_fn: Callable[..., Any] = train,
    forecast_targets: Sequence[dict] = (),
) -> StudyOutcome:
    """Trains every planned run and branch (skipping finished ones), then fits, draws, reports.

    ``data``: the study's prepared data (else each run's is opened to check its settings). Raises
    SettingsConflict before writing anything when the workdir holds runs with other settings
    (``check_reuse``). ``forecast_targets``: sizes to forecast, not train ({run, size, N, D, C}:
    ``forecasts.targets_of``), added to plan.json's ``forecast_targets``. Raises Preempted (after
    writing results) when a run was preempted, or Interrupted on Ctrl-C (``stopping``): rerun to
    resume.
    """
    workdir = epath.Path(workdir)
    primary = jax.process_index() == 0
    check_reuse(plan, study, workdir, cache_dir, data)
    measured = {}  # what the data say, beside the config (plan.json's "measured")
    if primary and data is not None and study.fit.get("context_free_loss") is None:
        measured["context_free_loss"] = data.context_free_loss()  # the ladder law's H
    if primary:
        print(f"[study] {study.name}: {len(plan)} runs into {workdir}", file=sys.stderr)
        print(format_table(plan), file=sys.stderr, flush=True)
        workdir.mkdir(parents=True, exist_ok=True)
        full_plan = merged_plan(workdir, plan)
        targets = forecasts_lib.merge_targets(forecasts_lib.load_targets(workdir), forecast_targets)
        write_atomic(workdir / PLAN_FILE, to_json(
            {"study": study.to_dict(), "runs": [run.to_dict() for run in full_plan],
             "measured": measured, "forecast_targets": targets}, indent=1))
    table: dict[str, results_lib.RunRows] = {}
    for run in plan:
        table[run.name] = results_lib.RunRows(results_lib.run_columns(run), "pending")
        for branch in run.branches:
            table[branch.name] = results_lib.RunRows(
                results_lib.run_columns(run, branch.name, branch.fraction), "pending")

    def write_results() -> None:
        if primary:  # this study's runs, then what the disk holds: runs not reached yet in this
            # invocation (finished ones keep their rows) and runs other slices put into the workdir
            started = {name: entry for name, entry in table.items() if entry.status != "pending"}
            rows = [row for entry in started.values() for row in entry.rows()]
            rows += results_lib.collect(workdir / RUNS_DIR, exclude=started)
            results_lib.write_results(workdir, rows)

    progress = Progress(plan, primary)
    outcome = StudyOutcome(failures={}, trained=[], skipped=[], outputs=[])

    def record_failure(name: str, run_dir: epath.Path, reason: str) -> None:
        """results.csv's ``failed:<reason>`` for this run, kept in its directory so that a later
        invocation that does not plan the run keeps the reason (results.collect reads it)."""
        table[name].status = f"failed:{reason}"
        outcome.failures[name] = reason
        if primary:
            run_dir.mkdir(parents=True, exist_ok=True)
            columns = {**table[name].columns, results_lib.FAILED_KEY: reason}
            write_atomic(run_dir / results_lib.RUN_COLUMNS_FILE, json.dumps(columns))

    def execute(name: str, config: RunConfig, flops: float, stop: StopSignal) -> bool:
        """Trains one run or branch; returns True if it finished."""
        if stop.is_set():  # SIGTERM or Ctrl-C came as the previous run finished
            raise stop.error(f"before {name}: the finished runs are kept")
        entry = table[name]
        run_dir = epath.Path(config.workdir)
        entry.status = "running"
        if primary:
            run_dir.mkdir(parents=True, exist_ok=True)
            columns = dict(entry.columns, fork_step=config.init_from[1] if config.init_from else None)
            write_atomic(run_dir / results_lib.RUN_COLUMNS_FILE, json.dumps(columns))
        for record in _eval_records(run_dir):
            entry.add(record)
        progress.line(current=name)

        def on_eval(point) -> None:
            entry.add(dataclasses.asdict(point))
            write_results()

        try:
            result = train_fn(config, on_eval=on_eval)
        except Preempted:
            write_results()
            raise
        except (KeyboardInterrupt, SystemExit, WorkdirLocked):  # locked: another slice trains it
            raise
        except Exception as error:  # noqa: BLE001 - failure isolation: record and go on
            if stop.is_set():  # a second Ctrl-C that JAX turned into another error
                write_results()
                raise stop.error(f"while {name} trained") from error
            if (jax.process_count() > 1 and not isinstance(error, NonFiniteLossError)
                    and not is_compile_out_of_memory(error)):
                raise  # on one host only (data, memory, a bug): going on would desynchronize hosts
            reason = failure_reason(error)
            record_failure(name, run_dir, reason)
            if primary:
                print(f"[study] {name} failed: {reason}", file=sys.stderr, flush=True)
            write_results()
            progress.finish(flops, trained=False)
            return False
        entry.points = []
        for point in result.eval_points:
            if config.init_from is None or point.step > config.init_from[1]:
                entry.add(dataclasses.asdict(point))
        entry.status = "done"
        (outcome.skipped if result.skipped else outcome.trained).append(name)
        write_results()
        progress.finish(flops, trained=not result.skipped)
        return True

    with stop_signals() as stop:  # SIGTERM or a first Ctrl-C: checkpoint, results, then stop
        for run in plan:
            finished = execute(run.name, run_config(run, study, workdir, cache_dir), run.flops,
                               stop)
            for branch in run.branches:
                if not finished:
                    record_failure(branch.name, workdir / RUNS_DIR / branch.name,
                                   f"its run {run.name} failed")
                    progress.finish(branch.cooldown_steps * run.step_flops, trained=False)
                    continue
                execute(branch.name, run_config(run, study, workdir, cache_dir, branch),
                        branch.cooldown_steps * run.step_flops, stop)
    progress.line()
    if primary:
        outcome.outputs = finish_study(workdir, study, full_plan, outcome.failures, measured)
        steps = [name for name in report_lib.OUTPUT_STEPS if name in outcome.failures]
        kept = str(workdir / FIT_FILE) not in outcome.outputs
        if steps and kept and results_lib.read_fit(workdir / FIT_FILE):
            print(f"[study] {', '.join(steps)} failed: {FIT_FILE}, {PLOTS_DIR}/ and "
                  f"{report_lib.REPORT_FILE} keep the previous fit", file=sys.stderr, flush=True)
    return outcome


def merged_plan(workdir: epath.Path, plan: Sequence[PlannedRun]) -> list[PlannedRun]:
    """``plan`` and the runs of WORKDIR/plan.json it does not name (a rerun with fewer sizes keeps
    the others in the plan and the report's table), in the old order, new runs last."""
    if not (epath.Path(workdir) / PLAN_FILE).exists():
        return list(plan)
    _, previous = load_plan(workdir)
    planned = {run.name: run for run in plan}
    previous_names = {run.name for run in previous}
    return ([planned.get(run.name, run) for run in previous]
            + [run for run in plan if run.name not in previous_names])


def load_plan(workdir: epath.Path) -> tuple[ml_collections.ConfigDict, list[PlannedRun]]:
    """(the study config, the plan) that ``run_study`` wrote to WORKDIR/plan.json."""
    data = read_json(epath.Path(workdir) / PLAN_FILE, what="the study's plan",
                     if_deleted="deleting it is safe: rerunning the study's neoscale.run command "
                     "writes it again (neoscale.fit --workdir needs it)")
    return (ml_collections.ConfigDict(data["study"]),
            [PlannedRun.from_dict(run) for run in data["runs"]])


def load_measured(workdir: epath.Path) -> dict[str, Any]:
    """What the study measured on its data (plan.json's "measured": the ladder law's H as
    ``context_free_loss``); a plan.json written before "measured" existed kept H in the study
    config's ``fit.context_free_loss``."""
    data = json.loads((epath.Path(workdir) / PLAN_FILE).read_text())
    if "measured" in data:
        return dict(data["measured"])
    legacy = (data["study"].get("fit") or {}).get("context_free_loss")
    return {} if legacy is None else {"context_free_loss": legacy}


def finish_study(workdir: epath.Path, study: ml_collections.ConfigDict,
                 plan: Sequence[PlannedRun], failures: dict[str, str],
                 measured: dict[str, Any] | None = None) -> list[str]:
    """Fits the laws, draws the figures and writes the report (process 0). Returns the paths.

    ``measured``: what the runner measured on the data (``load_measured``); the study config's
    ``fit.context_free_loss``, when set, is used instead of the measured H.

    The forecast ledger (``forecasts``): the saved forecasts that runs trained since cover are
    scored into fit.json's ``forecasts_scored``; once fit.json is written, this fit's forecasts
    (plan.json's ``forecast_targets`` not yet trained among them) are appended to it.

    fit.json, plots/ and report.md are replaced together or not at all, so they never disagree.
    Each of these is recorded in ``failures`` (key "fit", "plots" or "report") and, when the study
    has a fit, leaves the three as they were: a fit that fails; a fit that lost runs the previous
    fit used or in which a law fitted before now fails on the same runs (``results.fit_regression``);
    figures or a report that fail. A study with no fit yet gets fit.json and report.md saying why.
    results.csv and the runs are kept either way.
    """
    workdir = epath.Path(workdir)
    frame = results_lib.read_results(workdir)
    outputs = [str(workdir / results_lib.RESULTS_FILE)]
    previous = results_lib.read_fit(workdir / FIT_FILE)
    curves = None
    try:
        from neoscale import scaling

        if frame.empty or not frame["final"].any():  # not the settings' fault: the runs' reasons
            fit = {"error": "no finished run to fit (every run failed: their reasons are above)"}
        else:
            curves = scaling.load_curves(workdir)  # per-step metrics: Approach 1 and run curves
            fit = scaling.fit_study(frame, curves=curves,
                                    schedules=scaling.load_schedules(workdir),
                                    n_bootstrap=int(study.fit.n_bootstrap),
                                    seed=int(study.fit.seed), pin_E=study.fit.get("pin_E"),
                                    context_free_loss=_context_free_loss(study, measured),
                                    forecast_targets=_untrained_targets(workdir, frame))
            fit["runs"] = results_lib.fitted_runs(frame)
            fit["forecasts_scored"] = forecasts_lib.score(forecasts_lib.read(workdir), frame)
    except Exception as error:  # noqa: BLE001 - keep the runs' results whatever the fit does
        fit = {"error": failure_reason(error)}
    if "error" in fit:
        failures["fit"] = fit["error"]
        if previous is not None:
            return outputs
    else:
        worse = results_lib.fit_regression(previous, fit)
        if worse:
            failures["fit"] = worse
            return outputs
    plots_dir = workdir / PLOTS_DIR
    scratch = plots_dir.parent / f".{plots_dir.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        drawn: list[epath.Path] = []
        if "error" not in fit:
            try:
                from neoscale import plots

                drawn = plots.draw_study(frame, fit, scratch, curves=curves)
            except Exception as error:  # noqa: BLE001
                failures["plots"] = failure_reason(error)
                if previous is not None:
                    return outputs
        figures = [str(plots_dir / path.name) for path in drawn]
        try:
            text = report_lib.render(study, plan, frame, fit, figures, failures, workdir)
        except Exception as error:  # noqa: BLE001 - the runs and results.csv are kept
            failures["report"] = failure_reason(error)
            if previous is not None:
                return outputs
            text = None
        write_atomic(workdir / FIT_FILE, to_json(fit, indent=1, sort_keys=True))
        outputs.append(str(workdir / FIT_FILE))
        if "error" not in fit:
            forecasts_lib.append(workdir, forecasts_lib.records(fit, forecasts_lib.git_commit()))
            outputs.append(str(workdir / forecasts_lib.LEDGER_FILE))
        if drawn:
            plots_dir.mkdir(parents=True, exist_ok=True)
            for path in drawn:
                path.replace(plots_dir / path.name)
            outputs += figures
        if text is not None:
            write_atomic(workdir / report_lib.REPORT_FILE, text)
            outputs.append(str(workdir / report_lib.REPORT_FILE))
        return outputs
    finally:
        if scratch.exists():
            scratch.rmtree()


def _untrained_targets(workdir: epath.Path, frame) -> list[dict]:
    """plan.json's forecast targets that no finished run has trained yet."""
    done = set(frame.loc[frame["final"], "run"].astype(str))
    return [t for t in forecasts_lib.load_targets(workdir) if t["run"] not in done]


def _context_free_loss(study: ml_collections.ConfigDict, measured: dict[str, Any] | None) -> float | None:
    """H of the ladder's law: the study config's, else the measured one."""
    configured = study.fit.get("context_free_loss")
    return configured if configured is not None else (measured or {}).get("context_free_loss")
