"""Issue 34, damage cases 2-5: a refit or rerun never makes a study's record worse.

One tiny finished study (three sizes, no cooldown branches) is built once; each test copies it,
does what the issue reports (the CLI as written where it is cheap), and checks that results.csv,
fit.json, report.md, plots/ and the run directories are unchanged or improved, with one line and
no traceback on stderr when something is refused.
"""

import json
import os
import pathlib
import re
import shutil
import sys

import pandas as pd
import pytest
from test_runner_safety import _error_lines, _run, snapshot

from neoscale import fit as fit_cli
from neoscale.runner import results, study

SIZES = ["w32d2h2", "w48d2h2", "w64d2h2"]
TINY = ["--config.data.tokenizer=train:512", "--config.data.seq_len=64",
        "--config.data.heldout_tokens=4096", "--config.train.batch_size=8",
        "--config.train.evals_per_run=2", "--config.train.checkpoints_per_run=2",
        "--config.train.tensorboard=False", "--config.fit.n_bootstrap=10", "--steps=16",
        "--cooldowns=", "--config.eval.tasks="]  # the demo's tasks: tests/test_eval_study.py


def _study_command(workdir, sizes):
    return [sys.executable, "-m", "neoscale.run", f"--sizes={','.join(sizes)}",
            f"--workdir={workdir}", *TINY]


def _fit(*args):
    return _run([sys.executable, "-m", "neoscale.fit", *args], timeout=300)


def _record(workdir) -> dict[str, str]:
    """What a refit must leave alone: everything but the prepared data cache and refits/."""
    return {name: digest for name, digest in snapshot(workdir).items()
            if not name.startswith(("cache", fit_cli.REFITS_DIR))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("refit") / "study"
    out = _run(_study_command(workdir, SIZES), timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    fit = json.loads((workdir / study.FIT_FILE).read_text())
    assert fit["laws"]["loss_vs_compute"]["status"] == "fitted"
    return workdir


@pytest.fixture
def copy(finished, tmp_path):
    target = tmp_path / "study"
    shutil.copytree(finished, target)
    return target


def _one_error_line(out) -> str:
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    lines = _error_lines(out.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("neoscale.fit: error: ")
    return lines[0]


@pytest.mark.slow
def test_a_refit_with_the_studys_settings_refreshes_fit_and_report_together(copy):
    (copy / "report.md").write_text("stale")
    out = _fit(f"--workdir={copy}")
    assert out.returncode == 0, out.stderr[-3000:]
    fit = json.loads((copy / study.FIT_FILE).read_text())
    assert fit["runs"] == sorted(f"{size}_S16" for size in SIZES)  # what the next refit compares
    assert fit["n_bootstrap"] == 10  # the study's, not the flag's default 200
    report = (copy / "report.md").read_text()
    assert report.startswith("# Scaling study") and "3 of 3 runs finished (0 failed)" in report


@pytest.mark.slow
@pytest.mark.parametrize("flags, folder", [
    (["--seed=1", "--n_bootstrap=5"], "n_bootstrap-5_seed-1"),
    (["--where=size != 'w32d2h2'", "--noplots", "--loss=mse"], None),
])
def test_other_settings_refit_into_their_own_folder(copy, flags, folder):
    before = _record(copy)
    out = _fit(f"--workdir={copy}", *flags)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _record(copy) == before  # fit.json, plots/, report.md, results.csv, runs: untouched
    written = pathlib.Path(json.loads(out.stdout)["fit"])
    # the study's forecast ledger is its own fit's: a refit neither appends to it nor starts one
    assert (copy / "forecasts.jsonl").is_file() and not (written.parent / "forecasts.jsonl").exists()
    assert written.parent.parent == copy / fit_cli.REFITS_DIR
    if folder:
        assert written.parent.name == folder
        assert json.loads(written.read_text())["n_bootstrap"] == 5
    else:  # a query is no folder name: its readable characters and a hash
        assert re.fullmatch(r"where-size_[\w.-]*_loss-mse_plots-False-[0-9a-f]{8}",
                            written.parent.name), written.parent.name
        assert json.loads(written.read_text())["runs"] == ["w48d2h2_S16", "w64d2h2_S16"]
    assert "writing to" in out.stderr and "left as they are" in out.stderr


@pytest.mark.slow
def test_a_negative_seed_is_one_line_and_changes_nothing(copy):
    before = _record(copy)
    line = _one_error_line(_fit(f"--workdir={copy}", "--seed=-1"))
    assert "--seed must be >= 0" in line
    assert _record(copy) == before and not (copy / fit_cli.REFITS_DIR).exists()


def _cut_mid_row(path):
    text = path.read_text()
    path.write_text(text[: len(text) * 2 // 3])


def _non_numeric_loss(path):
    frame = pd.read_csv(path)
    frame["eval_loss"] = frame["eval_loss"].astype(object)
    frame.loc[frame.index[frame["final"]][0], "eval_loss"] = "oops"
    frame.to_csv(path, index=False)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_cut_mid_row, _non_numeric_loss])
def test_a_damaged_results_table_keeps_the_previous_fit_plots_and_report(copy, damage):
    damage(copy / results.RESULTS_FILE)
    before = _record(copy)
    line = _one_error_line(_fit(f"--workdir={copy}"))
    assert "the new fit lost" in line and "keep the previous fit" in line
    assert _record(copy) == before


@pytest.mark.slow
def test_a_law_that_raises_is_failed_and_keeps_the_previous_fit(copy, monkeypatch):
    from neoscale.scaling import study as scaling_study

    def raises(*args):
        raise ValueError("seed must be non-negative")

    monkeypatch.setattr(scaling_study.loss_vs_compute, "entry", raises)
    before = _record(copy)
    failures = _finish(copy)
    assert failures["fit"].startswith("loss_vs_compute fitted before and now fail on the same runs")
    assert "seed must be non-negative" in failures["fit"]
    assert _record(copy) == before


def _finish(workdir):
    config, plan = study.load_plan(workdir)
    failures: dict[str, str] = {}
    study.finish_study(workdir, config, plan, failures, study.load_measured(workdir))
    return failures


@pytest.mark.slow
def test_disk_full_while_plotting_keeps_the_record_or_says_so(copy, monkeypatch):
    from neoscale import plots

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "draw_study", disk_full)
    before = _record(copy)
    failures = _finish(copy)
    assert "No space left on device" in failures["plots"]
    assert _record(copy) == before
    assert not [name for name in os.listdir(copy) if name.startswith(".plots")]
    # A study without a fit yet: fit.json and a report that says why there are no figures.
    (copy / study.FIT_FILE).unlink()
    _finish(copy)
    report = (copy / "report.md").read_text()
    assert "nothing to fit yet" not in report
    assert "No figures: drawing them failed (disk full: [Errno 28] No space left" in report
    assert json.loads((copy / study.FIT_FILE).read_text())["laws"]


def test_group_names_are_distinct_contained_folders():
    names = [fit_cli._group_name(v) for v in ("a b", "a_b", "..", ".", "a/../b", "", 1.0)]
    assert len(set(names)) == len(names)
    assert names[1] == "a_b" and names[-1] == "1.0"
    for name in names:
        assert "/" not in name and not name.startswith(".") and name


@pytest.mark.slow
def test_group_by_values_write_distinct_folders_inside_the_output(copy):
    frame = pd.read_csv(copy / results.RESULTS_FILE)
    frame["variant"] = frame["run"].map(dict(zip(sorted(set(frame["run"])), ["a b", "a_b", ".."],
                                                 strict=True)))
    table = copy / "variants.csv"
    frame.to_csv(table, index=False)
    before = _record(copy)
    out = _fit(f"--results={table}", "--group_by=variant", "--n_bootstrap=0", "--noplots",
               f"--out_dir={copy / 'groups'}")
    assert out.returncode == 0, out.stderr[-3000:]
    groups = json.loads(out.stdout)["groups"]
    assert len(groups) == 3 and groups.keys() == {name for name in os.listdir(copy / "groups")}
    after = _record(copy)  # nothing outside groups/ changed (a '..' group wrote the study's fit.json)
    assert {k: v for k, v in after.items() if not k.startswith("groups")} == before
    assert all((copy / "groups" / name / "fit.json").is_file() for name in groups)


@pytest.mark.slow
def test_case_insensitive_collisions_are_refused(copy):
    frame = pd.read_csv(copy / results.RESULTS_FILE)
    frame["variant"] = ["MoE" if i % 2 else "moe" for i in range(len(frame))]
    table = copy / "variants.csv"
    frame.to_csv(table, index=False)
    line = _one_error_line(_fit(f"--results={table}", "--group_by=variant", "--n_bootstrap=0",
                                "--noplots", f"--out_dir={copy / 'groups'}"))
    assert "differ only in case" in line and not (copy / "groups").exists()


def test_failed_runs_and_the_plan_survive_a_rerun_with_fewer_sizes(tmp_path):
    """Every run fails (a stand-in trainer), then a rerun plans two of the three sizes: the third
    keeps its failed:<reason> row and its place in plan.json, and the report counts it."""
    from neoscale.runner import plan as plan_lib
    from neoscale.runner.config import base_config

    config = base_config()
    config.train.batch_size = 8
    sizes = ["cpu-100k", "cpu-400k", "cpu-1.8M"]

    def make(names):
        return plan_lib.make_plan(names, plan_lib.parse_budget(steps=5), vocab_size=512, seq_len=64,
                                  train=config.train)

    def fails(run_config, on_eval=None):
        raise MemoryError(f"{os.path.basename(run_config.workdir)} did not fit")

    workdir = tmp_path / "study"
    study.run_study(make(sizes), config, workdir, cache_dir=str(tmp_path / "cache"), train_fn=fails)
    third = make(sizes)[2].name
    study.run_study(make(sizes[:2]), config, workdir, cache_dir=str(tmp_path / "cache"),
                    train_fn=fails)
    frame = results.read_results(workdir)
    assert dict(zip(frame["run"], frame["status"], strict=True))[third] == (
        f"failed:out of memory: {third} did not fit")
    _, plan = study.load_plan(workdir)
    assert [run.name for run in plan] == [run.name for run in make(sizes)]
    report = (workdir / "report.md").read_text()
    assert "0 of 3 runs finished (3 failed)" in report
    assert f"- `{third}`: out of memory: {third} did not fit" in report


def test_a_refit_meets_the_studys_lock_in_one_line(copy):
    """One writer per workdir: a refit while another process holds the study's lock stops with one
    line naming the holder and exit 2, and leaves the record as it was."""
    from neoscale import workdir_lock

    with workdir_lock.hold(copy, command="neoscale.run"):
        before = _record(copy)
        out = _fit(f"--workdir={copy}")
        after = _record(copy)
    assert out.returncode == 2, out.stderr[-2000:]
    (line,) = _error_lines(out.stderr)
    assert "neoscale.run" in line and str(os.getpid()) in line, line
    assert after == before
