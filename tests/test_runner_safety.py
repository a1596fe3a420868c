"""A finished study survives every failure of a later invocation, and survives being moved.

Each test copies one finished study (three tiny sizes, each with a cooldown branch), does to the
copy what a user might (a refused rerun, bad flags, a fit or figures that crash, an interrupt, a
move to another directory), and compares the study's files before and after.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from subprocess_env import cpu_env

from neoscale.runner import results, study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = "w32d2h2,w48d2h2,w64d2h2"
TINY = ["--config.data.tokenizer=train:512", "--config.data.seq_len=64",
        "--config.data.heldout_tokens=4096", "--config.train.batch_size=8",
        "--config.train.evals_per_run=3", "--config.train.checkpoints_per_run=3",
        "--config.train.tensorboard=False", "--config.fit.n_bootstrap=20", "--steps=24",
        "--cooldowns=0.5,1.0", "--config.eval.tasks="]  # the demo's tasks: tests/test_eval_study.py
# What a researcher reads and shares: must be byte-identical after a refused or failed invocation.
RECORD = ("results.csv", "fit.json", "report.md", "plan.json")


def _command(workdir, sizes=SIZES, *extra):
    return [sys.executable, "-m", "neoscale.run", f"--sizes={sizes}", f"--workdir={workdir}",
            *TINY, *extra]


def _run(command, timeout=600):
    return subprocess.run(command, cwd=REPO, env=cpu_env(device_count=None), capture_output=True,
                          text=True, timeout=timeout)


def snapshot(workdir) -> dict[str, str]:
    """md5 of every file under the study directory (the prepared data cache included), but the
    lock files: they name the last process that wrote (neoscale/workdir_lock.py), not the study."""
    digests = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            if name == ".neoscale.lock":
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, workdir)] = hashlib.md5(f.read()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("safety") / "study"
    out = _run(_command(workdir), timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained 6, skipped 0 finished" in out.stderr
    return workdir


@pytest.fixture
def copy(finished, tmp_path):
    target = tmp_path / "study"
    shutil.copytree(finished, target)
    return target


# glog lines that optional accelerator plugins (jax[cuda12], libtpu) print when loaded on a CPU host.
PLUGIN_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog)")


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not PLUGIN_LOG.match(line)]


@pytest.mark.slow
def test_refused_rerun_exits_2_in_one_line_and_changes_nothing(copy):
    before = snapshot(copy)
    out = _run(_command(copy, SIZES, "--config.train.weight_decay=0.37"))
    assert out.returncode == 2, out.stderr[-3000:]
    lines = _error_lines(out.stderr)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(f"neoscale.run: error: workdir '{copy}' holds runs with other settings")
    for size in SIZES.split(","):
        assert f"{size}_S24" in line and f"{size}_S24_cd0.5" in line
    assert "weight_decay 0.1 -> 0.37" in line
    assert "use a new --workdir, or the same settings" in line
    assert snapshot(copy) == before


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--config.train.no_such_field=1", "--sizes=w32d2h2,bogus",
                                  "--steps=-3"])
def test_bad_flags_change_nothing(copy, flag):
    before = snapshot(copy)
    command = _command(copy)
    command.append(flag)
    out = _run(command)
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(_error_lines(out.stderr)) == 1, out.stderr
    assert snapshot(copy) == before


def _finish(workdir):
    config, plan = study.load_plan(workdir)
    failures: dict[str, str] = {}
    study.finish_study(workdir, config, plan, failures)
    return failures


@pytest.mark.slow
def test_a_crashing_fit_keeps_the_previous_fit_figures_and_report(copy, monkeypatch):
    from neoscale import scaling

    before = snapshot(copy)

    def broken_fit(*args, **kwargs):
        raise RuntimeError("the fitter broke")

    monkeypatch.setattr(scaling, "fit_study", broken_fit)
    failures = _finish(copy)
    assert failures["fit"] == "RuntimeError: the fitter broke"
    assert snapshot(copy) == before


@pytest.mark.slow
def test_crashing_figures_leave_the_previous_fit_figures_and_report(copy, monkeypatch):
    from neoscale import plots

    figures_before = snapshot(copy)
    figures = {name: digest for name, digest in figures_before.items()
               if name.startswith(study.PLOTS_DIR)}
    assert any(name.endswith(".png") for name in figures)
    real_draw = plots.draw_study

    def draw_then_crash(frame, fit, out_dir, **kwargs):
        real_draw(frame, fit, out_dir, **kwargs)  # every figure written, then a crash
        raise RuntimeError("the renderer broke")

    monkeypatch.setattr(plots, "draw_study", draw_then_crash)
    (copy / study.PLOTS_DIR / "loss_vs_compute.png").write_bytes(b"an earlier figure")
    failures = _finish(copy)
    assert failures["plots"] == "RuntimeError: the renderer broke"
    after = snapshot(copy)
    assert (copy / study.PLOTS_DIR / "loss_vs_compute.png").read_bytes() == b"an earlier figure"
    assert {k: v for k, v in after.items() if k.startswith(study.PLOTS_DIR)
            and not k.endswith("loss_vs_compute.png")} == {
        k: v for k, v in figures.items() if not k.endswith("loss_vs_compute.png")}
    assert not [name for name in os.listdir(copy) if name.startswith(".plots")]  # no scratch left
    for name in ("fit.json", "report.md"):  # replaced with the figures or not at all: they agree
        assert after[name] == figures_before[name], name


@pytest.mark.slow
def test_a_crashing_report_keeps_the_fit_and_the_previous_report(copy, monkeypatch):
    from neoscale.runner import report

    old_report = (copy / "report.md").read_text()

    def broken_render(*args, **kwargs):
        raise TypeError("the report broke")

    monkeypatch.setattr(report, "render", broken_render)
    failures = _finish(copy)
    assert failures["report"] == "TypeError: the report broke"
    assert (copy / "report.md").read_text() == old_report
    assert "laws" in json.loads((copy / study.FIT_FILE).read_text())


@pytest.mark.slow
def test_an_interrupt_while_a_new_size_trains_keeps_every_finished_row(copy):
    """Adding a size that trains first in the plan, then Ctrl-C: the finished runs' rows stay."""
    before_rows = results.read_results(copy)
    before = snapshot(copy)
    proc = subprocess.Popen(_command(copy, "w16d2h2," + SIZES), cwd=REPO,
                            env=cpu_env(device_count=None), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    checkpoints = copy / "runs" / "w16d2h2_S24" / "checkpoints"
    deadline = time.monotonic() + 300
    try:  # interrupt once the new run has evaluated and saved (results.csv rewritten)
        while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    # Ctrl-C asks the loop to stop with a checkpoint: 130 and one line, not a KeyboardInterrupt
    # raised inside JAX (seen to segfault the teardown, to hang it in CI, or to be swallowed).
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    last = _error_lines(stderr)[-1]
    assert last.startswith("neoscale.run: interrupted ") and last.endswith(
        "rerun the same command to resume"), stderr[-3000:]
    frame = results.read_results(copy)
    old = frame[frame["run"] != "w16d2h2_S24"].reset_index(drop=True)
    assert set(old["status"]) == {"done"}
    assert old[["run", "step", "eval_loss", "final"]].equals(
        before_rows[["run", "step", "eval_loss", "final"]])
    after = snapshot(copy)
    for name in ("fit.json", "report.md"):
        assert after[name] == before[name]


@pytest.mark.slow
def test_a_moved_study_resumes_skips_and_refits_the_same(finished, tmp_path):
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(finished, tmp_path / "original")
    shutil.move(tmp_path / "original", moved)
    before = snapshot(moved)
    out = _run(_command(moved))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained 0, skipped 6 finished" in out.stderr
    after = snapshot(moved)
    for name in ("fit.json", "results.csv"):
        assert after[name] == before[name], name
    # One more size: only it (and its cooldown branch) trains; the rest is reused.
    out = _run(_command(moved, SIZES + ",w80d2h2"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained 2, skipped 6 finished" in out.stderr
    frame = results.read_results(moved)
    assert set(frame["status"]) == {"done"}
    assert "w80d2h2_S24_cd0.5" in set(frame["run"])


@pytest.mark.slow
def test_a_study_whose_runs_all_failed_says_so_instead_of_a_fitter_error(copy):
    frame = results.read_results(copy)
    frame["final"] = False
    frame["status"] = "failed:disk full"
    results.write_results(copy, frame.to_dict("records"))
    failures = _finish(copy)
    assert failures["fit"] == "no finished run to fit (every run failed: their reasons are above)"
