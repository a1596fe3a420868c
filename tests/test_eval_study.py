"""Downstream tasks in a study: scored in the loop on 8 devices, into results.csv and the report;
scored again after training by neoscale.eval --workdir."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from run_configs import flat_run
from subprocess_env import cpu_env

from neoscale.report import tasks as report_tasks
from neoscale.runner import results

STUDY = ["--sizes=w32d2h2,w48d2h2", "--steps=30", "--config.data.tokenizer=train:512",
         "--config.data.seq_len=64", "--config.data.heldout_tokens=4096",
         "--config.train.batch_size=8", "--config.train.evals_per_run=2",
         "--config.train.checkpoints_per_run=2", "--config.train.tensorboard=False",
         "--config.fit.n_bootstrap=10", "--cooldowns=", "--config.eval.tasks=arc_easy,piqa",
         "--config.eval.max_examples=8"]
COLUMNS = [f"task_{name}_{metric}" for name in ("arc_easy", "piqa") for metric in ("bpb", "acc", "chance")]


@pytest.mark.slow
def test_study_on_8_devices_scores_tasks_in_the_loop_and_after(tmp_path):
    workdir = tmp_path / "study"
    env = cpu_env(device_count=8)
    done = subprocess.run([sys.executable, "-m", "neoscale.run", f"--workdir={workdir}", *STUDY],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = results.read_results(workdir)
    assert set(COLUMNS) <= set(frame.columns)
    assert len(frame) == 4 and frame[COLUMNS].notna().all().all()  # every evaluation row
    assert (frame["task_arc_easy_chance"] == 0.25).all() and (frame["task_piqa_chance"] == 0.5).all()
    assert frame["task_piqa_bpb"].between(0.5, 20).all()
    for run, rows in frame.groupby("run"):  # scored afresh at every evaluation (30 steps and 8
        assert rows[COLUMNS[0]].nunique() == 2, run  # examples are too few for a trend)
    report = (workdir / "report.md").read_text()
    assert "## Downstream tasks" in report and "sit at chance on accuracy" in report
    done = subprocess.run([sys.executable, "-m", "neoscale.eval", f"--workdir={workdir}",
                           "--tasks=winogrande", "--max_examples=4", "--runs=w32*"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    after = results.read_results(workdir)
    final = after[after["final"]]
    scored = final["task_winogrande_bpb"].notna()
    assert scored.tolist() == final["run"].str.startswith("w32").tolist()  # --runs=w32* only
    assert after["task_winogrande_bpb"].notna().sum() == 1
    np.testing.assert_allclose(final["task_piqa_bpb"], frame[frame["final"]]["task_piqa_bpb"])
    assert "winogrande bpb / acc" in (workdir / "report.md").read_text()
    done = subprocess.run([sys.executable, "-m", "neoscale.eval", f"--workdir={workdir}",
                           "--tasks=piqa", "--runs=w999*"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "--runs=w999* matched no finished run" in done.stderr
    assert "Traceback" not in done.stderr


def test_task_columns_follow_the_fixed_columns():
    rows = [{"run": "a", "step": 1, "task_piqa_bpb": 2.0, "task_arc_easy_acc": 0.25},
            {"run": "b", "step": 1}]
    header = results.to_csv(rows).splitlines()[0].split(",")
    assert tuple(header[:len(results.COLUMNS)]) == results.COLUMNS
    assert header[len(results.COLUMNS):] == ["task_arc_easy_acc", "task_piqa_bpb"]
    point = {"step": 3, "tokens": 4, "flops": 5.0, "eval_loss": 1.0, "tasks": {"task_piqa_bpb": 2.0}}
    assert results.point_columns(point)["task_piqa_bpb"] == 2.0
    record = {"step": 3, "tokens": 4, "flops": 5.0, "eval_loss": 1.0, "task_piqa_acc": 0.5}
    assert results.point_columns(record)["task_piqa_acc"] == 0.5


def test_report_section_shows_bpb_and_accuracy_beside_chance():
    frame = pd.DataFrame({"run": ["s", "l"], "final": [True, True], "flops": [2e9, 1e9],
                          "params_total": [1000, 2000], "cooldown": [np.nan, np.nan],
                          "task_piqa_bpb": [3.5, 3.0], "task_piqa_acc": [0.5, 0.52],
                          "task_piqa_chance": [0.5, 0.5]})
    text = "\n".join(report_tasks.lines(frame))
    assert "| l | 2k | 1e+09 | 3.000 / 0.520 |" in text and "Chance accuracy: piqa 0.500" in text
    assert "falls with compute across the 2 main runs on 0 of 1 tasks" in text  # 3.0 then 3.5
    assert report_tasks.lines(frame.drop(columns=["task_piqa_bpb", "task_piqa_acc"])) == []


@pytest.mark.parametrize("fields, message", [
    ({"eval_tasks": "piqa,nope"}, "unknown task"),
    ({"eval_tasks": "piqa", "data": "synthetic"}, "eval_tasks needs real data"),
    ({"eval_task_examples": 0}, "eval_task_examples must be >= 1"),
])
def test_bad_task_settings_are_one_line_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        flat_run(size="w32d2h2", workdir="/tmp/x", **fields)


def test_the_demo_scores_five_tasks_in_the_loop():
    import importlib.util
    import pathlib

    from neoscale.evaluation.tasks import parse_tasks

    path = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "cpu_demo.py"
    spec = importlib.util.spec_from_file_location("cpu_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    assert len(parse_tasks(c.eval.tasks)) >= 5 and 1 <= c.eval.max_examples <= 1000


@pytest.mark.parametrize("override, message", [
    ("--config.eval.tasks=piqa,nope", "unknown task(s) nope in --config.eval.tasks="),
    ("--config.eval.max_examples=0", "--config.eval.max_examples=0: examples per task"),
])
def test_bad_study_task_settings_exit_2_in_one_line_before_anything_runs(tmp_path, override, message):
    done = subprocess.run([sys.executable, "-m", "neoscale.run", "--sizes=w32d2h2", "--dry_run",
                           f"--workdir={tmp_path / 'study'}", override],
                          env=cpu_env(device_count=None), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "study").exists()


def _task_table(bpb_of_compute, computes=(1e10, 2e10, 4e10, 8e10, 1.6e11)):
    return pd.DataFrame([{"run": f"r{i}", "parent": f"r{i}", "final": True, "cooldown": np.nan,
                          "flops": c, "params_total": 1000 * (i + 1), "task_piqa_bpb": bpb_of_compute(c),
                          "task_piqa_acc": 0.5, "task_piqa_chance": 0.5}
                         for i, c in enumerate(computes)])


def test_largest_run_is_predicted_from_the_smaller_ones():
    from neoscale.scaling.task_chain import predict_largest

    exact = predict_largest(_task_table(lambda c: 5 * c ** -0.05), "task_piqa_bpb")
    assert exact["run"] == "r4" and exact["fitted_runs"] == 4
    assert exact["predicted"] == pytest.approx(5 * 1.6e11 ** -0.05, rel=1e-6)
    assert abs(exact["relative_error"]) < 1e-6 and exact["within_tolerance"]
    # A floor the pure law cannot see: 1 + 1e4·C^-0.4 from 4 sizes misses the 5th by 5%.
    floored = predict_largest(_task_table(lambda c: 1 + 1e4 * c ** -0.4), "task_piqa_bpb")
    assert floored["relative_error"] < -0.02 and not floored["within_tolerance"]
    assert floored["interval"][0] <= floored["predicted"] <= floored["interval"][1]
    assert predict_largest(_task_table(lambda c: 5 * c ** -0.05, (1e10, 2e10, 4e10)), "task_piqa_bpb") is None
    text = "\n".join(report_tasks.lines(_task_table(lambda c: 5 * c ** -0.05)))
    assert "The largest main run (r4) predicted from the 4 smaller main runs" in text
    assert "- piqa: predicted 1.376 [1.376, 1.376], measured 1.376 (+0.00%: within 2%)" in text
