"""The forecast ledger: WORKDIR/forecasts.jsonl, every forecast a study's own fit made, appended and
never rewritten, so that pre-registration is a property of the study directory.

One JSON line per forecast: the law and form, the target (a named size planned but not trained,
or a compute), its N, D, C, the forecast loss with its 95% prediction interval, whether it was the
form the report told its reader to use, the git commit of the code, the fit's inputs (its runs
and a hash of their points) and the UTC time. A refit on unchanged points makes the same forecasts:
a forecast whose (law, form, target, inputs hash) is already in the ledger is not appended again.

Only the study's own fit (``runner.study.finish_study``: ``neoscale.run``, or ``neoscale.fit
--workdir`` with the study's settings) reads and appends the ledger; a refit with other settings
(into WORKDIR/refits/...) neither writes nor scores it: its forecasts answer another question
than the one the study registered.

Scoring (``score``): when the study holds a finished main run that a saved forecast covered (the
named size, or a run within ``COMPUTE_MATCH`` of a forecast compute, on the forecast's tokens per
parameter) and that run was not among the forecast's inputs, the forecast gets its signed error
and whether the measured loss lies inside its interval (fit.json ``forecasts_scored``).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from collections.abc import Sequence

import numpy as np
import pandas as pd
from etils import epath

from neoscale.files import jsonable, write_atomic
from neoscale.scaling import results as scaling_results

LEDGER_FILE = "forecasts.jsonl"
COMPUTE_MATCH = 0.05  # a trained run within 5% of a forecast compute scores it
RATIO_MATCH = 0.1  # ... if its tokens per parameter are within 10% of the forecast's
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def git_commit(repo: str = REPO) -> str:
    """HEAD of the code's git checkout ('+dirty' with uncommitted changes to tracked files), or
    'unknown' outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "diff", "--quiet", "HEAD", "--"],
                               capture_output=True, timeout=10).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "") if head else "unknown"


def _target_id(target: dict) -> str:
    return f"size:{target['run']}" if target["kind"] == "size" else f"C:{target['C']:.4e}"


def records(fit: dict, commit: str, now: str | None = None) -> list[dict]:
    """The forecasts of a fit_study result (fit.json): every form of the ladder entry at its
    factors and named targets, and L(C)'s two forms at its factors."""
    now = now or datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    out = []
    ladder = fit["laws"].get("ladder_law") or {}
    if ladder.get("status") == "fitted":
        inputs = ladder["inputs"]
        for form, entry in ladder["forms"].items():
            if entry.get("status") != "fitted":
                continue
            rows = [({"kind": "compute", "C": p["compute"], "factor": p["factor"]}, p)
                    for p in entry["predictions"]]
            rows += [({"kind": "size", "run": t["run"], "size": t["size"], "N": t["N"], "D": t["D"],
                       "C": t["C"]}, t["forecast"]) for t in entry.get("targets", [])]
            for target, p in rows:
                out.append({"law": "ladder_law", "form": form, "formula": entry["form"],
                            "target": target, "tokens_per_param": ladder["tokens_per_param"],
                            "loss": p["loss"], "interval": p["prediction_interval"],
                            "read": form == ladder.get("form_to_read"),
                            "regime_reached": (ladder.get("regime") or {}).get("reached")})
        for r in out:
            r["inputs"] = inputs
    lvc = fit["laws"].get("loss_vs_compute") or {}
    if lvc.get("status") == "fitted" and "inputs" in lvc:
        to_read = fit.get("law_to_read") or {}
        for p in lvc["predictions"]:
            for form, values in (("with_E", p), ("pure_power_law", p["pure_power_law"])):
                out.append({"law": "loss_vs_compute", "form": form, "formula": None,
                            "target": {"kind": "compute", "C": p["compute"], "factor": p["factor"]},
                            "tokens_per_param": None, "loss": values["loss"],
                            "interval": values["prediction_interval"],
                            "read": to_read.get("key") == "loss_vs_compute" and to_read.get("form") == form,
                            "regime_reached": None, "inputs": lvc["inputs"]})
    for r in out:
        r.update(commit=commit, time_utc=now)
    return jsonable(out)


def read(workdir: str | epath.Path) -> list[dict]:
    """The ledger's forecasts (an unreadable line, e.g. cut off by a crash, is skipped)."""
    path = epath.Path(workdir) / LEDGER_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _key(record: dict) -> tuple:
    return (record["law"], record["form"], _target_id(record["target"]), record["inputs"]["hash"])


def append(workdir: str | epath.Path, new: Sequence[dict]) -> int:
    """Appends the forecasts not already in the ledger (by law, form, target, inputs hash); the
    lines there are never rewritten (an object store, which cannot append, gets the same lines and
    the new ones written whole). Returns how many were appended."""
    path = epath.Path(workdir) / LEDGER_FILE
    seen = {_key(r) for r in read(workdir)}
    fresh = []
    for r in new:
        if _key(r) not in seen:
            seen.add(_key(r))
            fresh.append(r)
    if not fresh:
        return 0
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in fresh)
    if str(path).startswith(("gs://", "s3://")):
        old = path.read_text() if path.exists() else ""
        write_atomic(path, old + ("" if not old or old.endswith("\n") else "\n") + text)
    else:
        with open(os.fspath(path), "a", encoding="utf-8") as f:
            f.write(text)
    return len(fresh)


def _main_runs(frame: pd.DataFrame) -> pd.DataFrame:
    points, _ = scaling_results.final_points(frame)
    return points[~scaling_results.is_branch(points)]


def score(ledger: Sequence[dict], frame: pd.DataFrame) -> list[dict]:
    """Each saved forecast that a finished main run, not among its inputs, now covers: signed
    error (forecast − measured) / measured and whether the measured loss is inside its 95%
    prediction interval; oldest first."""
    main = _main_runs(frame)
    if main.empty:
        return []
    flops, loss = main["flops"].to_numpy(np.float64), main["eval_loss"].to_numpy(np.float64)
    ratio = (main["tokens"] / main["params_active"]).to_numpy(np.float64)
    names = main["run"].astype(str).to_numpy()
    sizes = main["size"].astype(str).to_numpy() if "size" in main else names
    out = []
    for r in ledger:
        target = r["target"]
        near = np.abs(flops / target["C"] - 1) <= COMPUTE_MATCH
        if r.get("tokens_per_param"):
            near &= np.abs(ratio / r["tokens_per_param"] - 1) <= RATIO_MATCH
        if target["kind"] == "size":  # the named size (any replicate seed of it) at its tokens
            near &= (sizes == target["size"]) | (names == target["run"])
        near &= ~np.isin(names, r["inputs"]["runs"])
        if not near.any():
            continue
        # replicates of a size: their mean; a compute target: the best run there (the frontier)
        actual = float(loss[near].mean() if target["kind"] == "size" else loss[near].min())
        low, high = r["interval"] or (None, None)
        out.append({**{k: r[k] for k in ("law", "form", "target", "loss", "interval", "read",
                                          "commit", "time_utc")},
                    "scored_on": sorted(names[near].tolist()), "actual": actual,
                    "signed_error": (r["loss"] - actual) / actual,
                    "inside": None if low is None else bool(low <= actual <= high)})
    return sorted(out, key=lambda s: s["time_utc"])


def load_targets(workdir: str | epath.Path) -> list[dict]:
    """plan.json's ``forecast_targets``: the named sizes a study forecasts before training them."""
    path = epath.Path(workdir) / "plan.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text()).get("forecast_targets") or [])


def targets_of(runs) -> list[dict]:
    """Forecast targets {run, size, N, D, C} of planned runs (``PlannedRun``)."""
    return [{"run": run.name, "size": run.size, "N": float(run.params_active),
             "D": float(run.tokens), "C": float(run.flops)} for run in runs]


def merge_targets(old: Sequence[dict], new: Sequence[dict]) -> list[dict]:
    """``old`` with ``new`` added (by run name: a new plan of the same run replaces it)."""
    merged = {t["run"]: t for t in old}
    merged.update({t["run"]: t for t in new})
    return list(merged.values())


def record_targets(workdir: str | epath.Path, study, plan, sizes: Sequence[str]) -> None:
    """``neoscale.fit --forecast_sizes``: plans ``sizes`` at the study's tokens per parameter (its
    planned runs' one ratio; study: the study config, plan: its PlannedRuns, both from plan.json)
    and adds them to plan.json's ``forecast_targets``, which the study's fit forecasts."""
    from neoscale import presets
    from neoscale.files import to_json
    from neoscale.runner import plan as plan_lib

    ratio = np.array([run.tokens / run.params_active for run in plan], np.float64)
    if ratio.max() > 1.1 * ratio.min():
        raise ValueError(f"--forecast_sizes plans at the study's tokens per parameter, but its runs "
                         f"train on {ratio.min():.3g} to {ratio.max():.3g}: name the sizes with "
                         "neoscale.run --forecast_sizes, which plans them at the study's budget")
    runs = plan_lib.make_plan(
        presets.parse_sizes(",".join(sizes)),
        plan_lib.parse_budget(tokens_per_param=float(f"{np.median(ratio):.3g}")),
        vocab_size=plan[0].model.vocab_size, seq_len=int(study.data.seq_len), train=study.train,
        model_overrides=dict(study.model))
    path = epath.Path(workdir) / "plan.json"
    data = json.loads(path.read_text())
    data["forecast_targets"] = merge_targets(data.get("forecast_targets") or [], targets_of(runs))
    write_atomic(path, to_json(data, indent=1))
