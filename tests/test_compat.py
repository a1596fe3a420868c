"""A study written by an earlier neoscale (commit ff368ff) reruns with today's code: every run is
skipped as finished, nothing fails, and the refit gives the same laws (tests/data/study_ff368ff)."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from subprocess_env import cpu_env

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "study_ff368ff"
FLAGS = ["--sizes=w32d4h1,w48d4h2,w64d4h2,w96d4h3", "--steps=40", "--cooldowns=0.5",
         "--config.train.evals_per_run=4", "--config.train.batch_size=8",
         "--config.data.heldout_tokens=4096",
         "--config.fit.n_bootstrap=100",  # the fixture's (the demo's default then; 2000 since)
         "--config.replicates=", "--config.eval.tasks="]  # the fixture's study had neither


def _numbers(tree, prefix=""):
    """Every number in a JSON tree, by its path ("laws.ladder_law.constants.A")."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _numbers(value, f"{prefix}{key}.")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _numbers(value, f"{prefix}{i}.")
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        yield prefix.rstrip("."), float(tree)


@pytest.mark.slow
def test_a_study_written_by_ff368ff_reruns_without_training_and_refits_the_same(tmp_path):
    workdir = tmp_path / "study_ff368ff"
    shutil.copytree(FIXTURE, workdir)
    before_results = pd.read_csv(workdir / "results.csv")
    before_fit = json.loads((workdir / "fit.json").read_text())

    result = subprocess.run([sys.executable, "-m", "neoscale.run", *FLAGS, f"--workdir={workdir}"],
                            capture_output=True, text=True, cwd=tmp_path, env=cpu_env(), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained 0, skipped 8 finished" in result.stderr

    after_results = pd.read_csv(workdir / "results.csv")
    assert after_results["status"].tolist() == ["done"] * len(after_results)
    pd.testing.assert_series_equal(before_results["eval_loss"], after_results["eval_loss"])
    after_fit = json.loads((workdir / "fit.json").read_text())
    assert after_fit["context_free_loss"] == before_fit["context_free_loss"]  # H from the old plan.json
    for name, law in before_fit["laws"].items():
        assert after_fit["laws"][name]["status"] == law["status"], name
        if law["status"] != "fitted":
            continue
        new = dict(_numbers(after_fit["laws"][name]))
        for key, value in _numbers(law):
            if key in new:  # the same constants, intervals and forecasts
                assert math.isclose(new[key], value, rel_tol=1e-6, abs_tol=1e-9), f"{name}.{key}"
