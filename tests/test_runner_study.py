"""End-to-end studies of tiny sizes on the built-in corpus: outputs, resume, skip, failure isolation."""

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
import pytest
from subprocess_env import cpu_env

from neoscale.runner import forecasts, results, study
from neoscale.runner import plan as plan_lib
from neoscale.runner.config import base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ["w32d2h2", "w48d2h2", "w64d2h2"]
# Tiny everything: 512-piece vocabulary, 64-token sequences, a 4k-token held-out set.
TINY = ["--config.data.tokenizer=train:512", "--config.data.seq_len=64",
        "--config.data.heldout_tokens=4096", "--config.train.batch_size=8",
        "--config.train.evals_per_run=3", "--config.train.checkpoints_per_run=3",
        "--config.train.tensorboard=False", "--config.fit.n_bootstrap=20",
        "--cooldowns=",  # the demo forks cooldown branches; these tests check plain runs
        "--config.eval.tasks="]  # and scores tasks (tests/test_eval_study.py)


def _cli(workdir, *extra):
    env = cpu_env(device_count=None)  # one device, like a user's laptop
    return [sys.executable, "-m", "neoscale.run", f"--sizes={','.join(SIZES)}", "--steps=60",
            f"--workdir={workdir}", *extra, *TINY], env  # --config before its --config.X overrides


def _default_study():
    """experiments/cpu_demo.py's config: the CLI's default, whose model overrides the runs get."""
    spec = importlib.util.spec_from_file_location("cpu_demo", os.path.join(REPO, "experiments",
                                                                            "cpu_demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def tiny_plan(steps):
    return plan_lib.make_plan(SIZES, plan_lib.parse_budget(steps=steps), vocab_size=512, seq_len=64,
                              train=_tiny_train(), model_overrides=dict(_default_study().model))


def _tiny_train():
    train = base_config().train
    train.batch_size = 8
    train.evals_per_run = 3
    return train


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study") / "study"
    command, env = _cli(workdir)
    command[command.index("--steps=60")] = "--steps=30"
    command.insert(command.index("--steps=30"), "--forecast_sizes=w96d2h2")  # planned, not trained
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return workdir, command, env, out


@pytest.mark.slow
def test_end_to_end_outputs_are_present_and_consistent(finished_study):
    workdir, _, _, out = finished_study
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained 3, skipped 0 finished" in out.stderr
    plan = tiny_plan(30)
    frame = results.read_results(workdir)
    assert tuple(frame.columns) == results.COLUMNS
    final = frame[frame["final"]].set_index("run")
    assert sorted(final.index) == sorted(run.name for run in plan)  # size and budget: w32d2h2_S30
    assert set(frame["status"]) == {"done"}
    for run in plan:
        rows = frame[frame["run"] == run.name]
        assert rows["step"].tolist() == [10, 20, 30]
        assert final.loc[run.name, "params_total"] == run.params_total
        assert final.loc[run.name, "tokens"] == run.tokens
        assert final.loc[run.name, "flops"] == pytest.approx(run.flops)
        metrics = [json.loads(line) for line in
                   (workdir / "runs" / run.name / "metrics.jsonl").read_text().splitlines()]
        last_eval = [m for m in metrics if "eval_loss" in m][-1]
        assert final.loc[run.name, "eval_loss"] == pytest.approx(last_eval["eval_loss"])
    # Training lowered the held-out loss below the uniform-prediction loss log(512) = 6.24.
    assert (final["eval_loss"] < 6.2).all()
    fit = json.loads((workdir / study.FIT_FILE).read_text())
    assert "error" not in fit, fit
    # The runner measured the ladder law's H on the prepared data and recorded it in plan.json
    # under "measured" (the study config stays as parsed); these runs (30 steps each) are no
    # one-allocation ladder, and the fit says so.
    plan_json = json.loads((workdir / study.PLAN_FILE).read_text())
    recorded = plan_json["measured"]["context_free_loss"]
    assert 4.0 < recorded < math.log(512) and fit["context_free_loss"] == recorded
    assert plan_json["study"]["fit"]["context_free_loss"] is None
    ladder = fit["laws"]["ladder_law"]
    assert ladder["status"] == "skipped" and ladder["reason"].endswith("not one allocation: the "
                                                                      "ladder's law predicts the next "
                                                                      "size of a ladder trained on one ratio")
    # --forecast_sizes: planned at the study's budget, recorded, never trained; the fit's
    # forecasts are in the ledger with the code's commit and the fit's inputs
    (target,) = plan_json["forecast_targets"]
    (expected,) = plan_lib.make_plan(["w96d2h2"], plan_lib.parse_budget(steps=30), vocab_size=512,
                                     seq_len=64, train=_tiny_train(),
                                     model_overrides=dict(_default_study().model))
    assert (target["run"], target["N"], target["D"]) == (expected.name, expected.params_active,
                                                         expected.tokens)
    assert not (workdir / "runs" / expected.name).exists()
    ledger = forecasts.read(workdir)
    assert ledger and all(r["inputs"]["runs"] and r["commit"] for r in ledger)
    assert fit["forecasts_scored"] == []
    pngs = sorted((workdir / study.PLOTS_DIR).glob("*.png"))
    assert pngs and sorted((workdir / study.PLOTS_DIR).glob("*.svg"))
    report = (workdir / "report.md").read_text()
    for png in pngs:
        assert f"(plots/{png.name})" in report
    for name in SIZES:
        assert name in report
    mixture = next(line for line in report.splitlines() if "Held-out set:" in line)
    assert "wikipedia" in mixture and "shakespeare" in mixture  # both sources held out
    printed = out.stdout.split()
    assert all(str(png) in printed for png in pngs)


@pytest.mark.slow
def test_second_invocation_trains_nothing_and_reproduces_the_fit(finished_study):
    workdir, command, env, first = finished_study
    assert first.returncode == 0, first.stderr[-3000:]
    fit_before = (workdir / study.FIT_FILE).read_text()
    results_before = (workdir / results.RESULTS_FILE).read_text()
    ledger_before = forecasts.read(workdir)
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained 0, skipped 3 finished" in out.stderr
    assert not any(line.startswith("step ") for line in out.stderr.splitlines())
    assert (workdir / study.FIT_FILE).read_text() == fit_before
    assert (workdir / results.RESULTS_FILE).read_text() == results_before
    assert forecasts.read(workdir) == ledger_before  # the same forecasts: not appended twice


@pytest.mark.slow
def test_refit_rewrites_the_report_as_the_study_does(finished_study, tmp_path):
    """python -m neoscale.fit --workdir on a study's workdir: fit.json, plots and report.md, from
    the study's plan.json; with the study's own settings the report comes out identical."""
    workdir, _, env, first = finished_study
    assert first.returncode == 0, first.stderr[-3000:]
    copy = tmp_path / "study"
    shutil.copytree(workdir, copy)
    (copy / "report.md").unlink()
    (copy / study.FIT_FILE).unlink()
    refit = [sys.executable, "-m", "neoscale.fit", f"--workdir={copy}"]
    out = subprocess.run(refit, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["report"] == str(copy / "report.md")
    assert (copy / "report.md").read_text() == (workdir / "report.md").read_text()
    assert (copy / study.FIT_FILE).read_text() == (workdir / study.FIT_FILE).read_text()
    out = subprocess.run([*refit, "--n_bootstrap=7"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # Other settings than the study's: their own folder; the study's record stays the study's.
    assert json.loads((copy / "refits" / "n_bootstrap-7" / study.FIT_FILE).read_text())[
        "n_bootstrap"] == 7
    assert (copy / study.FIT_FILE).read_text() == (workdir / study.FIT_FILE).read_text()
    assert (copy / "report.md").read_text() == (workdir / "report.md").read_text()


@pytest.mark.slow
def test_resume_after_the_runner_is_killed(tmp_path):
    workdir = tmp_path / "study"
    command, env = _cli(workdir)
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    names = [f"{size}_S60" for size in SIZES]  # runs are named by size and budget
    second = workdir / "runs" / names[1] / "checkpoints"
    deadline = time.monotonic() + 400
    try:  # kill once the first run finished and the second one saved a checkpoint
        while not (second.is_dir() and any(p.name.isdigit() for p in second.iterdir())):
            assert proc.poll() is None, "the runner ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (workdir / "runs" / names[0] / "finished.json").exists()
    assert not (workdir / "runs" / names[1] / "finished.json").exists()
    checkpoint = max(int(p.name) for p in second.iterdir() if p.name.isdigit())

    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained 2, skipped 1 finished" in out.stderr
    frame = results.read_results(workdir)
    assert sorted(frame[frame["final"]]["run"]) == sorted(names)
    # The second run resumed from its checkpoint: its first logged step comes after it.
    lines = out.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(f"now {names[1]}"))
    first_step = next(int(line.split()[1].split("/")[0]) for line in lines[start:]
                      if line.startswith("step "))
    assert first_step > checkpoint
    assert (workdir / "fit.json").exists() and (workdir / "report.md").exists()


@pytest.mark.slow
def test_failure_isolation(tmp_path):
    config_file = tmp_path / "failing.py"
    config_file.write_text(
        "from neoscale.runner.config import base_config\n\n"
        "def get_config():\n"
        "    c = base_config()\n"
        "    c.name = 'failing'\n"
        "    c.size_overrides = {'w48d2h2': {'learning_rate': 1e30}}  # diverges at once\n"
        "    return c\n")
    workdir = tmp_path / "study"
    command, env = _cli(workdir, f"--config={config_file}")
    command[command.index("--steps=60")] = "--steps=20"
    # The failing size first: the one after it must still run.
    command[command.index(f"--sizes={','.join(SIZES)}")] = "--sizes=w48d2h2,w32d2h2"
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("neoscale.run: failed (1): w48d2h2_S20: non-finite loss")
    frame = results.read_results(workdir)
    status = dict(zip(frame["run"], frame["status"], strict=True))
    assert status["w32d2h2_S20"] == "done"
    assert status["w48d2h2_S20"].startswith("failed:non-finite loss")
    assert frame[frame["final"]]["run"].tolist() == ["w32d2h2_S20"]
    report = (workdir / "report.md").read_text()
    assert "## Failures" in report and "w48d2h2" in report


def test_measured_values_are_read_from_plan_json_old_and_new(tmp_path):
    """H travels as a measured value under plan.json's "measured"; a plan.json written before
    (H inside the study config's fit section) still gives it."""
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / study.PLAN_FILE).write_text(json.dumps(
        {"study": {"fit": {"context_free_loss": None}}, "runs": [], "measured": {"context_free_loss": 6.2}}))
    assert study.load_measured(tmp_path / "new") == {"context_free_loss": 6.2}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / study.PLAN_FILE).write_text(json.dumps(
        {"study": {"fit": {"context_free_loss": 6.206}}, "runs": []}))
    assert study.load_measured(tmp_path / "old") == {"context_free_loss": 6.206}
    configured = ml_collections.ConfigDict({"fit": {"context_free_loss": 5.0}})
    assert study._context_free_loss(configured, {"context_free_loss": 6.2}) == 5.0
    configured.fit.context_free_loss = None
    assert study._context_free_loss(configured, {"context_free_loss": 6.2}) == 6.2
