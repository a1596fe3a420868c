"""Loading and validating a study's results table (DIR/results.csv) and training curves.

The study runner writes one row per evaluation point of every run (columns RESULTS_COLUMNS);
`final` marks each run's (or cooldown branch's) last evaluation. Per-step curves live in
DIR/runs/<run>/metrics.jsonl. Any other table (published data) can be mapped onto the same
columns with `from_table`.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from etils import epath

RESULTS_COLUMNS = (
    "run",
    "size",
    "d_model",
    "num_layers",
    "num_heads",
    "num_experts",
    "top_k",
    "params_total",
    "params_non_embedding",
    "params_active",
    "step",
    "tokens",
    "flops",
    "train_loss",
    "eval_loss",
    "wall_seconds",
    "status",
    "budget_flops",
    "cooldown",
    "final",
    "parent",
    "fork_step",
    "epochs",
    "seed",
)
# What a fit needs; the rest is descriptive.
REQUIRED_COLUMNS = ("run", "params_active", "tokens", "flops", "eval_loss", "final")
_TRUE = {"true", "1", "yes", "t"}


def _as_bool(values: pd.Series) -> pd.Series:
    if values.dtype == bool:
        return values
    return values.astype(str).str.strip().str.lower().isin(_TRUE)


def validate(results: pd.DataFrame) -> pd.DataFrame:
    """A copy with typed columns; ValueError naming any missing required column."""
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks column(s) {missing}: it needs {list(REQUIRED_COLUMNS)}")
    out = results.copy()
    out["run"] = out["run"].astype(str)
    out["final"] = _as_bool(out["final"])
    if "status" not in out:
        out["status"] = "done"
    out["status"] = out["status"].fillna("done").astype(str)
    if "num_experts" not in out:
        out["num_experts"] = 1
    if "size" not in out:
        out["size"] = out["params_active"].map(lambda v: f"{v:.3g}")
    for column in ("budget_flops", "cooldown", "fork_step"):
        if column not in out:
            out[column] = np.nan
    # A cooldown branch's parent run (older tables: none, each run its own).
    out["parent"] = out["parent"].fillna(out["run"]).astype(str) if "parent" in out else out["run"]
    numeric = ["params_active", "tokens", "flops", "eval_loss", "num_experts", "budget_flops", "cooldown",
               "fork_step"]
    numeric += [c for c in ("params_total", "train_loss", "step", "epochs", "seed") if c in out]
    for c in numeric:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(np.float64)  # no int64 products
    out["num_experts"] = out["num_experts"].fillna(1).clip(lower=1)
    out["size"] = out["size"].astype(str)
    return out


def is_branch(results: pd.DataFrame) -> pd.Series:
    """(rows,) bool: rows of WSD cooldown branches (a cooldown fraction, or a parent other than
    the run itself)."""
    return results["cooldown"].notna() | (results["parent"] != results["run"])


def load_results(path) -> pd.DataFrame:
    """Reads and validates a results CSV; FileNotFoundError/ValueError with a clear message."""
    path = epath.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results table at {path}: pass a study's results.csv")
    try:
        table = pd.read_csv(io.StringIO(path.read_text()))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable CSV table ({e.__class__.__name__})") from None
    return validate(table)


def load_curves(workdir) -> dict[str, pd.DataFrame]:
    """run -> per-step metrics from workdir/runs/<run>/metrics.jsonl (missing runs are skipped).

    ``workdir`` may be local or gs://."""
    curves = {}
    for path in sorted(epath.Path(workdir).glob("runs/*/metrics.jsonl")):
        text = path.read_text()
        if not text.strip():
            continue
        try:
            curves[path.parent.name] = pd.read_json(io.StringIO(text), lines=True)
        except ValueError as e:
            raise ValueError(f"{path} is not JSON lines ({e}): fix or remove it") from None
    return curves


def from_table(
    table: pd.DataFrame,
    *,
    params_column: str,
    loss_column: str,
    tokens_column: str | None = None,
    flops_column: str | None = None,
    experts_column: str | None = None,
    run_column: str | None = None,
    budget_column: str | None = None,
) -> pd.DataFrame:
    """Maps any table of finished runs (one row per run) onto the results columns.

    Tokens or FLOPs may be left out (not both): the other follows from C = 6·N·D.
    """
    named = {
        "params": params_column,
        "loss": loss_column,
        "tokens": tokens_column,
        "flops": flops_column,
        "experts": experts_column,
        "run": run_column,
        "budget": budget_column,
    }
    for what, column in named.items():
        if column is not None and column not in table.columns:
            raise ValueError(
                f"--{what}_column={column!r} is not a column of the table; columns are {list(table.columns)}"
            )
    if tokens_column is None and flops_column is None:
        raise ValueError("pass a tokens column or a FLOPs column (or both)")
    def number(column):  # float64: integer columns would wrap 6·N·D past 9.2e18 in int64
        return pd.to_numeric(table[column], errors="coerce").astype(np.float64)

    n = number(params_column)
    tokens = number(tokens_column) if tokens_column else None
    flops = number(flops_column) if flops_column else None
    out = pd.DataFrame(
        {
            "run": table[run_column].astype(str) if run_column else [f"row{i}" for i in range(len(n))],
            "params_active": n,
            "params_total": n,
            "tokens": tokens if tokens is not None else flops / (6 * n),
            "flops": flops if flops is not None else 6 * n * tokens,
            "eval_loss": number(loss_column),
            "num_experts": number(experts_column) if experts_column else 1,
            "budget_flops": number(budget_column) if budget_column else np.nan,
            "status": "done",
            "final": True,
        }
    )
    out["size"] = out["params_active"].map(lambda v: f"{v:.3g}")
    return validate(out)


def final_points(results: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """The finished runs' final rows that can be fitted, and the rows dropped, with reasons."""
    results = validate(results)
    final = results[results["final"]]
    dropped = []
    for _, row in final[~final["status"].eq("done")].iterrows():
        dropped.append({"run": row["run"], "reason": f"status {row['status']}"})
    final = final[final["status"].eq("done")]
    values = final[["params_active", "tokens", "flops", "eval_loss"]]
    bad = values.isna().any(axis=1) | ~(values > 0).all(axis=1) | ~np.isfinite(values).all(axis=1)
    for _, row in final[bad].iterrows():
        dropped.append(
            {
                "run": row["run"],
                "reason": "missing, non-positive or non-finite params_active/tokens/flops/eval_loss",
            }
        )
    return final[~bad].reset_index(drop=True), dropped
