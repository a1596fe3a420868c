"""report.md: the study in one page: the plan, final losses, the fitted laws, figures, failures."""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
from etils import epath

from neoscale import accounting
from neoscale.accounting import format_count
from neoscale.runner.plan import PlannedRun, format_table, repetition_warnings

REPORT_FILE = "report.md"
OUTPUT_STEPS = ("fit", "plots", "report")  # keys of a study's failures that are not runs


def _epochs(value) -> str:
    return "?" if value is None or value != value else f"{value:.3g}"


def _final_table(frame) -> str:
    """Final held-out loss of every finished run and branch."""
    final = frame[frame["final"]]
    if final.empty:
        return "_No run has finished yet._"
    lines = ["| run | params | tokens | epochs | FLOPs | train loss | held-out loss | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    for _, row in final.sort_values(["flops"]).iterrows():
        lines.append(f"| {row['run']} | {format_count(row['params_total'])} | "
                     f"{format_count(row['tokens'])} | {_epochs(row.get('epochs'))} | {row['flops']:.3g} | "
                     f"{row['train_loss']:.4f} | {row['eval_loss']:.4f} | {row['wall_seconds']:.0f} s |")
    return "\n".join(lines)


def spent_flops(frame) -> float:
    """Training FLOPs of the finished runs and branches, a branch counting only its steps after
    its fork (its flops column is cumulative from its parent's first step)."""
    final = frame[frame["final"]]
    if final.empty:
        return 0.0
    fork = final["fork_step"].fillna(0) if "fork_step" in final else 0.0
    return float((final["flops"] * (1 - fork / final["step"])).sum())


def data_mixture(workdir: epath.Path, plan: Sequence[PlannedRun]) -> str:
    """'Held-out set: 52% wikipedia, 48% shakespeare (training: ...)' from the first run that has
    a config.json (the prepared corpus's description), or '' before any run started."""
    import json

    for run in plan:
        path = workdir / "runs" / run.name / "config.json"
        if path.exists():
            data = json.loads(path.read_text()).get("data", {})
            break
    else:
        return ""

    def shares(mixture: dict | None) -> str:
        return ", ".join(f"{share:.0%} {name}" for name, share in
                         sorted((mixture or {}).items(), key=lambda kv: -kv[1])) or "?"

    return (f"Held-out set: {data.get('heldout_tokens', '?'):,} tokens, "
            f"{shares(data.get('heldout_mixture'))} (training: {shares(data.get('train_mixture'))}).")


def _fit_section(fit: dict) -> str:
    if "error" in fit:
        return f"## Scaling-law fits\n\n_No fit: {fit['error']}_"
    from neoscale import report

    return report.fits_section(fit)


def render(study: ml_collections.ConfigDict, plan: Sequence[PlannedRun], frame, fit: dict,
           figures: Sequence[str], failures: dict[str, str], workdir: epath.Path) -> str:
    """The markdown report; figure paths are made relative to ``workdir``. Runs are counted from
    results.csv (``frame``: a rerun's plan may name fewer), failed ones with their reasons."""
    done = int(frame[frame["final"]]["run"].nunique()) if len(frame) else 0
    run_failures = failed_runs(frame)
    for name, reason in failures.items():  # a run that failed before writing any row
        if name not in OUTPUT_STEPS:
            run_failures.setdefault(name, reason)
    names = {name for run in plan for name in (run.name, *(b.name for b in run.branches))}
    names |= set(run_failures) | (set(frame["run"].astype(str)) if len(frame) else set())
    total = len(names)
    flops = spent_flops(frame) if len(frame) else 0.0
    parts = [
        f"# Scaling study `{study.name}`",
        "",
        f"{done} of {total} runs finished ({len(run_failures)} failed); {flops:.3g} training FLOPs in "
        f"finished runs. Data: `{study.data.data}`, tokenizer `{study.data.tokenizer}`, "
        f"sequence length {study.data.seq_len}. Losses are nats per token on a fixed held-out set. "
        f"Parameters include embeddings; FLOPs are neoscale.accounting's `neoscale` convention "
        f"({accounting.CONVENTIONS['neoscale']}), the one compute axis of every fit and figure. "
        + data_mixture(workdir, plan),
        *[f"**Warning: {line}.**" for line in repetition_warnings(plan)],
        "",
        "## Figures",
        "",
    ]
    pngs = [f for f in figures if f.endswith(".png")]
    for figure in pngs:
        relative = str(figure).replace(str(workdir).rstrip("/") + "/", "")
        name = epath.Path(figure).stem.replace("_", " ")
        parts += [f"![{name}]({relative})", ""]
    if not pngs and "plots" in failures:
        parts += [f"_No figures: drawing them failed ({failures['plots']})._", ""]
    elif not pngs:
        parts += ["_No figures (nothing to fit yet)._", ""]
    parts += [_fit_section(fit), "", "## Final losses", "", _final_table(frame), ""]
    if len(frame):
        from neoscale.report import tasks

        parts += tasks.lines(frame)
    parts += ["## Plan", "", format_table(plan, markdown=True), ""]
    steps = {name: reason for name, reason in failures.items() if name in OUTPUT_STEPS}
    if run_failures or steps:
        parts += ["## Failures", ""]
        parts += [f"- `{name}`: {reason}" for name, reason in {**run_failures, **steps}.items()]
        parts.append("")
    return "\n".join(parts)


def failed_runs(frame) -> dict[str, str]:
    """run -> reason of every run and branch results.csv records as ``failed:<reason>``."""
    if not len(frame):
        return {}
    failed = frame[frame["status"].astype(str).str.startswith("failed:")]
    return {str(row["run"]): str(row["status"]).removeprefix("failed:")
            for _, row in failed.drop_duplicates("run").iterrows()}

