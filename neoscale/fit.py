"""Refit and redraw a study's scaling laws from saved results, without training.

  python -m neoscale.fit --workdir=DIR
      reads DIR/results.csv (+ DIR/runs/*/metrics.jsonl), writes DIR/fit.json and DIR/plots/;
      for a study's own workdir (DIR/plan.json) also DIR/report.md, exactly as the study's end
      does (its fit settings, unless --n_bootstrap / --seed are given), so nothing goes stale.
  python -m neoscale.fit --results=FILE.csv --params_column="Model Size" \
      --flops_column="Training FLOP" --loss_column=loss --out_dir=OUT
      fits any table of finished runs (one row per run), e.g. published data.

Exit status: 0 done, 2 bad input (one line on stderr: ``neoscale.fit: error: ...``).
"""

from __future__ import annotations

import io
import json
import sys

from absl import app, flags
from etils import epath

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
flags.DEFINE_integer("seed", 0, "bootstrap seed")
flags.DEFINE_bool("plots", True, "draw the figures")


PROG = "neoscale.fit"


def _fail(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def _load():
    """(results table, curves or None, output directory)."""
    import pandas as pd

    from neoscale.scaling import results as results_lib

    if bool(FLAGS.workdir) == bool(FLAGS.results):
        raise ValueError("pass exactly one of --workdir=DIR or --results=FILE.csv")
    if FLAGS.workdir:
        workdir = epath.Path(FLAGS.workdir)
        table = results_lib.load_results(workdir / "results.csv")
        return table, results_lib.load_curves(workdir) or None, epath.Path(FLAGS.out_dir or workdir)
    path = epath.Path(FLAGS.results)
    if not path.is_file():
        raise FileNotFoundError(f"--results={path} does not exist")
    try:
        raw = pd.read_csv(io.StringIO(path.read_text()))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable CSV table ({e.__class__.__name__})") from None
    if {"run", "final", "params_active"} <= set(raw.columns):  # a study's own results table
        table = results_lib.validate(raw)
    else:
        if FLAGS.tokens_column is None and FLAGS.flops_column is None:
            raise ValueError("pass --tokens_column or --flops_column (the other follows from C = 6·N·D)")
        table = results_lib.from_table(
            raw,
            params_column=FLAGS.params_column,
            loss_column=FLAGS.loss_column,
            tokens_column=FLAGS.tokens_column,
            flops_column=FLAGS.flops_column,
            experts_column=FLAGS.experts_column,
            run_column=FLAGS.run_column,
            budget_column=FLAGS.budget_column,
        )
    return table, None, epath.Path(FLAGS.out_dir or path.parent)


def _refit_study(workdir: epath.Path) -> dict | None:
    """A study's own workdir (its plan.json): fit.json, plots/ and report.md rewritten by the
    study's own code; None for any other workdir."""
    from neoscale.runner import study as study_lib

    if not (workdir / study_lib.PLAN_FILE).is_file():
        return None
    study, plan = study_lib.load_plan(workdir)
    if FLAGS["n_bootstrap"].present:
        study.fit.n_bootstrap = FLAGS.n_bootstrap
    if FLAGS["seed"].present:
        study.fit.seed = FLAGS.seed
    failures: dict[str, str] = {}
    outputs = study_lib.finish_study(workdir, study, plan, failures)
    if failures:
        raise ValueError("; ".join(f"{what} failed: {why}" for what, why in failures.items()))
    fit = json.loads((workdir / study_lib.FIT_FILE).read_text())
    return {"fit": str(workdir / study_lib.FIT_FILE),
            "report": str(workdir / study_lib.report_lib.REPORT_FILE),
            "plots": [p for p in outputs if p.endswith((".png", ".svg"))],
            "laws": {k: v["status"] for k, v in fit["laws"].items()}}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])!r}; all settings are --flags")
    if FLAGS.workdir and not FLAGS.results and FLAGS.plots and FLAGS.out_dir in (None, FLAGS.workdir):
        try:
            summary = _refit_study(epath.Path(FLAGS.workdir))
        except (ValueError, FileNotFoundError) as error:
            _fail(str(error))
        if summary is not None:
            print(json.dumps(summary))
            return
    try:
        from neoscale import plots, scaling

        table, curves, out_dir = _load()
        fit = scaling.fit_study(table, curves=curves, n_bootstrap=FLAGS.n_bootstrap, seed=FLAGS.seed)
        for entry in fit["data"]["dropped"]:
            print(f"{PROG}: dropped {entry['run']}: {entry['reason']}", file=sys.stderr)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "fit.json").write_text(json.dumps(fit, indent=1, sort_keys=True))
        figures = plots.draw_study(table, fit, out_dir / "plots", curves=curves) if (FLAGS.plots) else []
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    print(
        json.dumps(
            {
                "fit": str(out_dir / "fit.json"),
                "plots": [str(p) for p in figures],
                "laws": {k: v["status"] for k, v in fit["laws"].items()},
            }
        )
    )


def entrypoint() -> None:
    app.run(main)


if __name__ == "__main__":
    entrypoint()
