"""Refit and redraw a study's scaling laws from saved results, without training.

  python -m neoscale.fit --workdir=DIR
      reads DIR/results.csv (+ DIR/runs/*/metrics.jsonl, config.json), writes DIR/fit.json and DIR/plots/;
      for a study's own workdir (DIR/plan.json) also DIR/report.md, exactly as the study's end
      does (its fit settings), so nothing goes stale. Any setting other than the study's (--where,
      --group_by, --compare, --loss, --huber_delta, --seed, --n_bootstrap, --pin_E,
      --context_free_loss, --noplots) refits into DIR/refits/<the settings>/ (or --out_dir) and
      leaves the study's fit.json, plots/ and report.md alone.
  python -m neoscale.fit --results=FILE.csv --params_column="Model Size" \
      --flops_column="Training FLOP" --loss_column=loss --out_dir=OUT
      fits any table of finished runs (one row per run), e.g. published data.
  --where="source == 'chinchilla'"   keeps the rows a pandas query selects (the table's columns);
  --group_by=COLUMN                  fits each value of COLUMN on its own, into OUT/<value>/ (a
                                     value other than letters, digits and ._- gets a hash suffix:
                                     distinct values, distinct folders, all inside OUT);
  --loss=mse                         squared error on log losses instead of Huber (--huber_delta).
  --pin_E=1.69                       fix the irreducible loss of L(C) and Approach 3 (the
                                     evaluation set's, when the study cannot identify it).
  --forecast_sizes=w256d4h8          (a study's workdir, its own settings) plans these sizes at the
                                     study's tokens per parameter and forecasts them into the study's
                                     ledger, WORKDIR/forecasts.jsonl (neoscale.runner.forecasts); a
                                     refit with other settings neither writes nor scores the ledger.
  --context_free_loss=6.21            H of the ladder's law (the held-out loss of the training split's
                                     token frequencies; a study's plan.json records its own).
  --tasks=all (or arc_easy,piqa)      the loss-to-accuracy chain (neoscale.scaling.task_chain) on the
                                     table's task_<name>_bpb / task_<name>_acc columns, one row per
                                     evaluation; --task_targets=7e9:4e12 forecasts (N, D) with 95%
                                     intervals; into OUT/task_chain.json (instead of the loss fits).
  --group_by=COLUMN --compare=BASELINE
                                     compute multipliers: how much less compute each other group
                                     needs than BASELINE for the same loss, across compute, with
                                     95% intervals, into OUT/multiplier.json and multiplier.png.

Unit checks (bad input, exit 2): with both a tokens and a FLOPs column, the FLOPs per parameter
per token, median over rows, must be 4 to 12 (training FLOPs are ~6·N·D; ~2 means forward-only
FLOPs); with --vocab_size=V, no loss may exceed ln V (a uniform guess in nats; losses in bits are
larger by 1/ln 2). After the fit, a law whose bootstrap rejected over a quarter of its resamples
gets a hint on stderr: its interval's endpoints move between seeds; more resamples steady them.

A refit never makes a record worse: a fit into a folder whose fit.json was made with the same
settings is refused when it lost final points that fit used (a results.csv cut off mid-row, a loss
that is no number) or when a law fitted there now fails on the same points; fit.json, plots/ and
report.md are then kept as they were (every file is written atomically).

Exit status: 0 done, 2 bad input or a refused refit (one line on stderr: ``neoscale.fit: error: ...``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import uuid

from absl import app, flags
from etils import epath

from neoscale import workdir_lock

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "study directory holding results.csv (and runs/)")
flags.DEFINE_string("results", None, "any CSV of finished runs, one row per run")
flags.DEFINE_string(
    "out_dir", None, "where fit.json and plots/ go (default: --workdir, or the folder of --results)"
)
flags.DEFINE_string("params_column", "params_active", "--results: parameter-count column")
flags.DEFINE_string("tokens_column", None, "--results: training-tokens column")
flags.DEFINE_string("flops_column", None, "--results: training-FLOPs column")
flags.DEFINE_string("loss_column", "eval_loss", "--results: final-loss column")
flags.DEFINE_string("experts_column", None, "--results: expert-count column (MoE)")
flags.DEFINE_string("run_column", None, "--results: run-name column (bootstrap groups)")
flags.DEFINE_string("budget_column", None, "--results: IsoFLOP budget column")
flags.DEFINE_integer("n_bootstrap", 200, "bootstrap resamples for the 95% intervals")
flags.DEFINE_float("pin_E", None, "fix the irreducible loss E of L(C) and Approach 3 at this value "
                   "(nats, this evaluation set's) instead of fitting it")
flags.DEFINE_float("context_free_loss", None, "H of the ladder's law: the held-out loss (nats per "
                   "token) of the training split's token frequencies (a study's plan.json holds it)")
flags.DEFINE_integer("seed", 0, "bootstrap seed")
flags.DEFINE_bool("plots", True, "draw the figures")
flags.DEFINE_string("where", None, "pandas query selecting the rows to fit, e.g. \"source == 'x'\"")
flags.DEFINE_string("group_by", None, "fit each value of this column separately (into OUT/<value>/)")
flags.DEFINE_enum("loss", "huber", ["huber", "mse"], "objective on log-loss residuals")
flags.DEFINE_float("huber_delta", 1e-3, "--loss=huber: δ (Hoffmann et al.: 1e-3)")
flags.DEFINE_integer("vocab_size", None, "--results: vocabulary size, to check losses are in nats")
flags.DEFINE_string(
    "compare", None,
    "with --group_by=COLUMN: the baseline value of COLUMN (variant A); every other group B is "
    "compared with it: the compute multiplier C_A(L)/C_B(L) at equal loss (> 1: B needs less "
    "compute), across A's compute and 10x/100x beyond, with 95% paired-bootstrap intervals, into "
    "OUT/multiplier.json and OUT/multiplier.png (instead of per-group fits)")

flags.DEFINE_list("forecast_sizes", [], "a study's workdir, with its own settings: plan these sizes "
                  "at the study's tokens per parameter (N, D, C), forecast their loss and append the "
                  "forecasts to WORKDIR/forecasts.jsonl (scored once a later run trains them)")
flags.DEFINE_list("tasks", None, "fit the loss-to-accuracy chain for these tasks ('all': every "
                 "task_<name>_bpb/_acc pair of the table) into OUT/task_chain.json")
flags.DEFINE_list("task_targets", [], "--tasks: N:D pairs to forecast, e.g. 7e9:4e12")

FORWARD_ONLY_BELOW = 4.0  # FLOPs/(N·D): training is ~6 (forward 2 + backward 4); forward-only ~2
TOO_MANY_FLOPS_ABOVE = 12.0
REJECTED_HINT = 0.25  # share of a law's resamples rejected above which stderr suggests more


PROG = "neoscale.fit"


def _fail(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def _read_csv(path: epath.Path):
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"--results={path} does not exist")
    try:
        return pd.read_csv(io.StringIO(path.read_text()))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable CSV table ({e.__class__.__name__})") from None


def _select(raw):
    """Rows of --where, split by --group_by: [(group name or None, rows)]."""
    import pandas as pd

    if FLAGS.where:
        try:
            raw = raw.query(FLAGS.where)
        except (pd.errors.UndefinedVariableError, SyntaxError, ValueError, TypeError) as e:
            raise ValueError(f"--where={FLAGS.where!r} is not a query on columns {list(raw.columns)} "
                             f"({e.__class__.__name__}: {e})") from None
        if raw.empty:
            raise ValueError(f"--where={FLAGS.where!r} selects no rows")
    if not FLAGS.group_by:
        return [(None, raw)]
    if FLAGS.group_by not in raw.columns:
        raise ValueError(f"--group_by={FLAGS.group_by!r} is not a column; columns are {list(raw.columns)}")
    groups = [(_group_name(value), rows) for value, rows in raw.groupby(FLAGS.group_by, sort=True)]
    folders: dict[str, str] = {}
    for name, _ in groups:  # distinct on case-insensitive disks too (macOS, Windows)
        if name.lower() in folders:
            raise ValueError(f"--group_by={FLAGS.group_by!r} values {folders[name.lower()]!r} and "
                             f"{name!r} differ only in case: their folders would be one on a "
                             "case-insensitive disk; make the values distinct with --where")
        folders[name.lower()] = name
    return groups


def _group_name(value) -> str:
    """A value as a folder name, distinct for distinct values and always inside its parent: the
    value itself when it is letters, digits and ._- (not starting with '.'), else those characters
    and a hash of the value ('a b' -> 'a_b-<hash>', apart from 'a_b'; '..' -> 'value-<hash>')."""
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,79}", text):
        return text
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".")[:60] or "value"
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def check_units(table, vocab_size: int | None = None) -> None:
    """ValueError for unit mistakes a results table shows: forward-only (or otherwise off) FLOPs,
    when the FLOPs column was given beside tokens; losses above ln(vocab), when it is known."""
    import numpy as np

    per = (table["flops"] / (table["params_active"] * table["tokens"])).to_numpy(np.float64)
    per = per[np.isfinite(per) & (per > 0)]
    if per.size:
        ratio = float(np.median(per))
        if ratio < FORWARD_ONLY_BELOW:
            raise ValueError(
                f"FLOPs/(N·D) is {ratio:.3g} (median over rows; training is ~6·N·D): this looks like "
                f"forward-only FLOPs (2·N·D){' or FLOPs per device' if ratio < 1.5 else ''}; pass the "
                "training FLOPs (forward + backward), or leave out --flops_column to use 6·N·D")
        if ratio > TOO_MANY_FLOPS_ABOVE:
            raise ValueError(
                f"FLOPs/(N·D) is {ratio:.3g} (median over rows; training is ~6·N·D): check the "
                "FLOPs, parameter and token columns' units (thousands? millions?)")
    if vocab_size:
        worst = float(table["eval_loss"].max())
        if worst > np.log(vocab_size):
            raise ValueError(
                f"a loss of {worst:.3g} exceeds ln({vocab_size}) = {np.log(vocab_size):.3g}, the loss "
                "of a uniform guess in nats: losses in bits (log2) are 1/ln 2 = 1.44x larger; convert "
                "them (multiply by ln 2) or check --vocab_size")


def _load():
    """([(group name or None, results table)], curves or None)."""
    from neoscale.scaling import results as results_lib

    if FLAGS.workdir:
        workdir = epath.Path(FLAGS.workdir)
        table = results_lib.load_results(workdir / "results.csv")
        return _select(table), results_lib.load_curves(workdir) or None
    path = epath.Path(FLAGS.results)
    raw = _read_csv(path)
    tables = []
    for name, rows in _select(raw):
        if {"run", "final", "params_active"} <= set(rows.columns):  # a study's own results table
            table = results_lib.validate(rows)
        else:
            if FLAGS.tokens_column is None and FLAGS.flops_column is None:
                raise ValueError("pass --tokens_column or --flops_column (the other follows from C = 6·N·D)")
            table = results_lib.from_table(
                rows,
                params_column=FLAGS.params_column,
                loss_column=FLAGS.loss_column,
                tokens_column=FLAGS.tokens_column,
                flops_column=FLAGS.flops_column,
                experts_column=FLAGS.experts_column,
                run_column=FLAGS.run_column,
                budget_column=FLAGS.budget_column,
            )
        check_units(table, FLAGS.vocab_size)
        tables.append((name, table))
    return tables, None


# The settings that make a fit answer one question or another (a study's fit uses its own).
SETTINGS = ("where", "group_by", "compare", "loss", "huber_delta", "n_bootstrap", "seed", "pin_E",
            "context_free_loss", "plots")
REFITS_DIR = "refits"  # in a study's workdir: refits with other settings, one folder per settings


def _study_settings(study, measured: dict) -> dict:
    """The settings of a study's own fit (``runner.study.finish_study``); ``measured``: plan.json's
    measured values (the ladder law's H when the study config does not set it)."""
    from neoscale.scaling.optimize import HUBER_DELTA

    context_free_loss = study.fit.get("context_free_loss")
    if context_free_loss is None:
        context_free_loss = measured.get("context_free_loss")

    return {"where": None, "group_by": None, "compare": None, "loss": "huber",
            "huber_delta": HUBER_DELTA, "n_bootstrap": int(study.fit.n_bootstrap),
            "seed": int(study.fit.seed), "pin_E": study.fit.get("pin_E"),
            "context_free_loss": context_free_loss, "plots": True}


def _settings(defaults: dict | None) -> dict:
    """This fit's settings: the flags given, and for the others ``defaults`` (a study's own) or,
    without a study, the flags' defaults."""
    return {name: FLAGS[name].value if FLAGS[name].present or defaults is None else defaults[name]
            for name in SETTINGS}


def _same_dir(a: epath.Path, b: epath.Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, NotImplementedError, AttributeError):  # object storage: compare the names
        return str(a).rstrip("/") == str(b).rstrip("/")


def _out_dir(settings: dict, study_settings: dict | None) -> epath.Path:
    """Where this fit goes: --out_dir, else the workdir or the folder of --results; a study's
    workdir only with the study's own settings, other settings into WORKDIR/refits/<settings>/."""
    if FLAGS.out_dir:
        out = epath.Path(FLAGS.out_dir)
    else:
        out = epath.Path(FLAGS.workdir) if FLAGS.workdir else epath.Path(FLAGS.results).parent
    if study_settings is None or settings == study_settings or not _same_dir(
            out, epath.Path(FLAGS.workdir)):
        return out
    differ = {k: v for k, v in settings.items() if v != study_settings[k]}
    out = out / REFITS_DIR / _group_name("_".join(f"{k}-{v}" for k, v in differ.items()))
    changed = ", ".join(f"--{k}={v} (the study's: {study_settings[k]})" for k, v in differ.items())
    print(f"{PROG}: note: settings other than the study's, {changed}: writing to {out}; the "
          "study's fit.json, plots/ and report.md are left as they are", file=sys.stderr, flush=True)
    return out


def _hints(fit: dict, where: str) -> None:
    """stderr hints for laws whose bootstrap rejected many resamples."""
    for key, law in fit["laws"].items():
        counts = law.get("bootstrap")
        note = law.get("interval_note") or ""
        if not counts or not counts["requested"] or (note and "resamples were over-determined" not in note):
            continue  # no bootstrap, or no interval for a reason more resamples cannot mend
        share = counts["rejected_not_overdetermined"] / counts["requested"]
        if share > REJECTED_HINT:
            more = int(round(counts["requested"] / max(1 - share, 0.05), -2)) + 100
            print(f"{PROG}: hint: {key}{where} rejected {share:.0%} of its resamples as not "
                  f"over-determined: its interval rests on {counts['accepted']} refits and its "
                  f"endpoints move between seeds; --n_bootstrap={more} steadies them", file=sys.stderr)


def _refit_study(workdir: epath.Path, study, plan) -> dict:
    """A study's own workdir with its own settings: fit.json, plots/ and report.md rewritten by
    the study's own code (``finish_study``: a fit worse than the one there is refused)."""
    from neoscale.runner import report as report_lib
    from neoscale.runner import results as results_lib
    from neoscale.runner import study as study_lib

    fit_path = workdir / study_lib.FIT_FILE
    had_fit = results_lib.read_fit(fit_path) is not None
    failures: dict[str, str] = {}
    outputs = study_lib.finish_study(workdir, study, plan, failures, study_lib.load_measured(workdir))
    if failures:
        kept = (f"; {study_lib.FIT_FILE}, {study_lib.PLOTS_DIR}/ and {report_lib.REPORT_FILE} keep "
                "the previous fit" if had_fit and str(fit_path) not in outputs else "")
        raise ValueError("; ".join(f"{what} failed: {why}" for what, why in failures.items()) + kept)
    fit = json.loads(fit_path.read_text())
    return {"fit": str(fit_path),
            "report": str(workdir / report_lib.REPORT_FILE),
            "plots": [p for p in outputs if p.endswith((".png", ".svg"))],
            "laws": {k: v["status"] for k, v in fit["laws"].items()}}


def _baseline(names: list[str], wanted: str) -> str:
    """The group --compare names: by its (folder) name, or as a number (--compare=1 for 1.0)."""
    for name in names:
        if name == _group_name(wanted):
            return name
    try:
        return next(name for name in names if float(name) == float(wanted))
    except (ValueError, StopIteration):
        raise ValueError(f"--compare={wanted!r} is not a value of --group_by={FLAGS.group_by!r}; its "
                         f"values are {names}") from None


def _compare(settings: dict, out_dir: epath.Path) -> dict:
    """--compare: each group's compute multiplier over the baseline group (scaling.multiplier)."""
    from neoscale import plots
    from neoscale.files import to_json, write_atomic
    from neoscale.scaling import multiplier

    if not FLAGS.group_by:
        raise ValueError("--compare=BASELINE needs --group_by=COLUMN: the column whose values are "
                         "the variants")
    tables, _ = _load()
    names = [name for name, _ in tables]
    if len(names) < 2:
        raise ValueError(f"--group_by={FLAGS.group_by!r} has one value ({names[0]}): --compare needs "
                         "two or more")
    baseline = _baseline(names, FLAGS.compare)
    comparisons = multiplier.compare_groups(dict(tables), baseline, n_bootstrap=settings["n_bootstrap"],
                                            seed=settings["seed"], delta=_delta(settings))
    for name, result in comparisons.items():
        for note in result["notes"]:
            print(f"{PROG}: note: {name} vs {baseline}: {note}", file=sys.stderr)
    doc = {"group_by": FLAGS.group_by, "baseline": baseline, "n_bootstrap": settings["n_bootstrap"],
           "seed": settings["seed"], "what": multiplier.WHAT, "comparisons": comparisons}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "multiplier.json", to_json(doc, indent=1, sort_keys=True))
    figures = plots.draw_multiplier(doc, out_dir) if settings["plots"] else []
    return {"multiplier": str(out_dir / "multiplier.json"), "plots": [str(p) for p in figures],
            "baseline": baseline,
            "comparisons": {k: multiplier.summary_line(v) for k, v in comparisons.items()}}


def _delta(settings: dict) -> float:
    return settings["huber_delta"] if settings["loss"] == "huber" else float("inf")


def _fit(settings: dict, out_root: epath.Path) -> dict:
    """Fits every group, refuses a fit worse than the one its folder holds from the same settings
    (``runner.results.fit_regression``), then writes each group's fit.json and plots/."""
    from neoscale import scaling
    from neoscale.runner.results import fit_regression, fitted_runs, read_fit

    tables, curves = _load()
    schedules = scaling.load_schedules(FLAGS.workdir) if FLAGS.workdir else None
    fits = []
    for name, table in tables:
        out_dir = out_root if name is None else out_root / name
        fit = scaling.fit_study(table, curves=curves, schedules=schedules,
                                n_bootstrap=settings["n_bootstrap"], seed=settings["seed"],
                                delta=_delta(settings), pin_E=settings["pin_E"],
                                context_free_loss=settings["context_free_loss"])
        fit["runs"], fit["settings"] = fitted_runs(table), settings
        where = "" if name is None else f" ({FLAGS.group_by} = {name})"
        for entry in fit["data"]["dropped"]:
            print(f"{PROG}: dropped {entry['run']}{where}: {entry['reason']}", file=sys.stderr)
        _hints(fit, where)
        previous = read_fit(out_dir / "fit.json")
        if previous is not None and previous.get("settings") == fit["settings"]:
            worse = fit_regression(previous, fit)
            if worse:
                raise ValueError(f"{worse}; {out_dir / 'fit.json'} and its plots/ keep the previous "
                                 "fit (--out_dir=NEW to write this one elsewhere)")
        fits.append((name, table, fit, out_dir))
    summaries = {}
    for name, table, fit, out_dir in fits:
        figures = _write_fit(out_dir, table, fit, curves, settings["plots"])
        summaries[name] = {"fit": str(out_dir / "fit.json"), "plots": figures,
                           "laws": {k: v["status"] for k, v in fit["laws"].items()}}
    return summaries[None] if list(summaries) == [None] else {"groups": summaries}


def _write_fit(out_dir: epath.Path, table, fit: dict, curves, draw: bool) -> list[str]:
    """Draws the figures into a scratch folder, then writes fit.json and moves them into
    OUT/plots/: a failure leaves the folder's fit and figures as they were. Returns the figures."""
    from neoscale import plots
    from neoscale.files import to_json, write_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = out_dir / f".plots.{uuid.uuid4().hex[:8]}.tmp"
    try:
        drawn = plots.draw_study(table, fit, scratch, curves=curves) if draw else []
        write_atomic(out_dir / "fit.json", to_json(fit, indent=1, sort_keys=True))
        if drawn:
            (out_dir / "plots").mkdir(parents=True, exist_ok=True)
        for path in drawn:
            path.replace(out_dir / "plots" / path.name)
        return [str(out_dir / "plots" / path.name) for path in drawn]
    finally:
        if scratch.exists():
            scratch.rmtree()


def _task_chain() -> dict:
    """--tasks: the two-step task forecast on every evaluation row of the table."""
    import numpy as np

    from neoscale.files import write_atomic
    from neoscale.scaling import task_chain

    if bool(FLAGS.workdir) == bool(FLAGS.results):
        raise ValueError("pass exactly one of --workdir=DIR or --results=FILE.csv")
    path = epath.Path(FLAGS.workdir) / "results.csv" if FLAGS.workdir else epath.Path(FLAGS.results)
    table = _read_csv(path)
    renames = {FLAGS.run_column: "run", FLAGS.params_column: "params_active",
               FLAGS.tokens_column: "tokens"}
    table = table.rename(columns={k: v for k, v in renames.items() if k and k != v})
    try:
        targets = [tuple(float(v) for v in t.split(":")) for t in FLAGS.task_targets]
    except ValueError:
        targets = [()]
    if any(len(t) != 2 or not all(np.isfinite(t)) for t in targets):
        raise ValueError(f"--task_targets={','.join(FLAGS.task_targets)} must be N:D pairs, e.g. 7e9:4e12")
    tasks = None if FLAGS.tasks == ["all"] else FLAGS.tasks
    doc = task_chain.fit_table(table, tasks=tasks, targets=targets or None,
                               n_bootstrap=FLAGS.n_bootstrap, seed=FLAGS.seed)
    out_dir = epath.Path(FLAGS.out_dir or path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "task_chain.json", json.dumps(doc, indent=1, sort_keys=True))
    return {"task_chain": str(out_dir / "task_chain.json"),
            "tasks": {name: {"in_sample_error_points": round(t["in_sample_mean_abs_error_points"], 2),
                             "forecast_accuracy": [round(f["accuracy"], 4) for f in t.get("forecasts", [])]}
                      for name, t in doc["tasks"].items()}}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])!r}; all settings are --flags")
    if FLAGS.pin_E is not None and not FLAGS.pin_E > 0:
        _fail(f"--pin_E must be a positive loss in nats, got {FLAGS.pin_E}")
    if FLAGS.context_free_loss is not None and not FLAGS.context_free_loss > 0:
        _fail(f"--context_free_loss must be a positive loss in nats, got {FLAGS.context_free_loss}")
    if FLAGS.tasks:
        try:
            print(json.dumps(_task_chain()))
        except (ValueError, FileNotFoundError) as error:
            _fail(str(error))
        return
    if FLAGS.huber_delta <= 0:
        _fail(f"--huber_delta must be positive, got {FLAGS.huber_delta}")
    if FLAGS.seed < 0:
        _fail(f"--seed must be >= 0 (numpy's random generators take no negative seed), got {FLAGS.seed}")
    if FLAGS.n_bootstrap < 0:
        _fail(f"--n_bootstrap must be >= 0 (0: no intervals), got {FLAGS.n_bootstrap}")
    try:
        if bool(FLAGS.workdir) == bool(FLAGS.results):
            raise ValueError("pass exactly one of --workdir=DIR or --results=FILE.csv")
        study = None
        if FLAGS.workdir:
            from neoscale.runner import study as study_lib

            workdir = epath.Path(FLAGS.workdir)
            if (workdir / study_lib.PLAN_FILE).is_file():
                study = study_lib.load_plan(workdir)
        study_settings = _study_settings(study[0], study_lib.load_measured(workdir)) if study else None
        settings = _settings(study_settings)
        out_dir = _out_dir(settings, study_settings)
        # A refit writes into a study's workdir: one writer at a time (neoscale.workdir_lock).
        into_study = study is not None and not workdir_lock.is_object_store(workdir)
        with workdir_lock.hold(workdir if into_study else ".", enabled=into_study):
            own = study and settings == study_settings and _same_dir(out_dir, workdir)
            if FLAGS.forecast_sizes and not own:
                raise ValueError("--forecast_sizes writes the study's forecast ledger: pass a study's "
                                 "--workdir (with plan.json) and the study's own fit settings")
            if own:
                if FLAGS.forecast_sizes:
                    from neoscale.runner import forecasts

                    forecasts.record_targets(workdir, *study, FLAGS.forecast_sizes)
                summary = _refit_study(workdir, *study)
            elif settings["compare"] is not None:
                summary = _compare(settings, out_dir)
            else:
                summary = _fit(settings, out_dir)
    except (ValueError, FileNotFoundError, workdir_lock.WorkdirLocked) as error:
        _fail(str(error))
    print(json.dumps(summary))


def entrypoint() -> None:
    app.run(main)


if __name__ == "__main__":
    entrypoint()
