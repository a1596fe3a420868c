"""The study runner's plan, dry run, results table and bad-input handling (no training)."""

import csv
import importlib.util
import io
import os
import subprocess
import sys

import pytest
from subprocess_env import cpu_env

from neoscale import accounting, hardware, presets
from neoscale.runner import plan as plan_lib
from neoscale.runner import results
from neoscale.runner.config import base_config

GPT_NEO = list(presets.GPT_NEO_PRESETS)


def _env_one_device() -> dict:
    return cpu_env(device_count=None)  # one CPU device, as a user's machine


def test_plan_gpt_neo_matches_accounting():
    budget = plan_lib.parse_budget()
    runs = plan_lib.make_plan(GPT_NEO, budget, vocab_size=50257, seq_len=2048)
    assert [r.name for r in runs] == [f"{size}_tpp20" for size in GPT_NEO]
    for run in runs:
        config = presets.model_config(run.size)
        counts = accounting.param_counts(config)
        assert run.params_total == counts["total"]
        assert run.params_non_embedding == counts["non_embedding"]
        assert run.params_active == counts["total"]
        assert run.flops_per_token == accounting.train_flops_per_token(config, 2048)
        assert run.tokens == run.steps * run.batch_size * 2048
        assert run.tokens == pytest.approx(20 * counts["total"], rel=0.01)  # rounding to steps
        assert run.flops == pytest.approx(run.tokens * run.flops_per_token)
    # REFERENCE.md §1 totals, and the GPT-3 table: 0.5M-token batches up to 760M, then 1M.
    assert runs[0].params_total == 125_198_592 and runs[-1].params_total == 2_651_307_520
    assert [r.batch_size for r in runs] == [256, 256, 256, 512, 512]
    assert [r.learning_rate for r in runs] == pytest.approx([6e-4, 3e-4, 2.5e-4, 2e-4, 1.6e-4])
    assert plan_lib.total_flops(runs) == pytest.approx(sum(r.flops for r in runs))


def test_learning_rate_law_sets_each_sizes_rate_unless_a_rate_is_given():
    from neoscale.runner.config import base_config

    train = base_config().train
    train.batch_size = 8
    train.learning_rate_law = (5.91, -0.606)
    sizes = ["cpu-100k", "cpu-400k"]
    budget = plan_lib.parse_budget(tokens_per_param=1.0)
    runs = plan_lib.make_plan(sizes, budget, vocab_size=512, seq_len=64, train=train)
    assert [r.learning_rate for r in runs] == pytest.approx(
        [5.91 * r.params_active ** -0.606 for r in runs], rel=1e-12)
    assert runs[0].learning_rate > runs[1].learning_rate
    train.learning_rate = 1e-3  # an explicit rate wins
    runs = plan_lib.make_plan(sizes, budget, vocab_size=512, seq_len=64, train=train)
    assert [r.learning_rate for r in runs] == [1e-3, 1e-3]


def test_budget_modes():
    sizes = ["cpu-100k", "cpu-800k"]
    kwargs = {"vocab_size": 2048, "seq_len": 128, "train": base_config().train}
    kwargs["train"].batch_size = 16
    tokens = plan_lib.make_plan(sizes, plan_lib.parse_budget(tokens=1e6), **kwargs)
    assert {r.tokens for r in tokens} == {round(1e6 / 2048) * 2048}
    steps = plan_lib.make_plan(sizes, plan_lib.parse_budget(steps=7), **kwargs)
    assert [r.steps for r in steps] == [7, 7]
    iso = plan_lib.make_plan(sizes, plan_lib.parse_budget(flops="1e12,1e13"), **kwargs)
    assert len(iso) == 4 and len({r.name for r in iso}) == 4
    for run in iso:
        assert run.budget_flops in (1e12, 1e13)
        assert run.flops == pytest.approx(run.budget_flops, rel=0.02)
    # At equal compute the smaller model sees more tokens.
    assert iso[0].tokens > iso[1].tokens


def test_cooldown_branches_fork_in_the_stable_phase_at_checkpoints():
    train = base_config().train
    train.batch_size = 8
    (run,) = plan_lib.make_plan(["cpu-100k"], plan_lib.parse_budget(steps=1000), vocab_size=512,
                                seq_len=64, train=train, cooldowns=(0.25, 0.5, 1.0))
    assert run.schedule == "wsd" and run.checkpoint_every == 100
    assert [b.name for b in run.branches] == ["cpu-100k_S1000_cd0.25", "cpu-100k_S1000_cd0.5"]
    for branch in run.branches:
        assert branch.fork_step % run.checkpoint_every == 0
        assert branch.fork_step <= 800  # before the main run's own cooldown (20%)
        assert branch.steps == pytest.approx(branch.fraction * 1000, abs=run.checkpoint_every)
    assert run.total_flops == pytest.approx(
        run.flops + sum(b.cooldown_steps for b in run.branches) * run.step_flops)
    table = plan_lib.format_table([run])
    assert "incl. 2 cooldown branches" in table


def test_a_compiled_plan_over_the_usable_memory_is_warned_about():
    import dataclasses

    train = base_config().train
    train.batch_size = 8
    (run,) = plan_lib.make_plan(["cpu-100k"], plan_lib.parse_budget(steps=100), vocab_size=512,
                                seq_len=64, train=train)
    gib = 2**30
    tight = dataclasses.replace(run, compiled={"fits": True, "train_bytes": 29.6 * gib,
                                               "eval_bytes": 9 * gib})
    roomy = dataclasses.replace(run, compiled={"fits": True, "train_bytes": 20 * gib, "eval_bytes": None})
    (line,) = plan_lib.headroom_warnings([tight, roomy, run], usable_bytes=28.8 * gib)
    assert line.startswith(f"{run.name}: the compiler accepts 29.6 GiB per device, above the 28.8 GiB")
    assert f"micro_batches={2 * run.micro_batches}" in line


def test_runs_checkpoint_by_wall_clock_as_the_study_says(tmp_path):
    from neoscale.runner import study as study_lib

    study = base_config()
    study.train.batch_size = 8
    (run,) = plan_lib.make_plan(["cpu-100k"], plan_lib.parse_budget(steps=100), vocab_size=512,
                                seq_len=64, train=study.train)
    assert study_lib.run_config(run, study, tmp_path, str(tmp_path)).checkpoint_minutes == 30.0
    study.train.checkpoint_minutes = 5.0
    assert study_lib.run_config(run, study, tmp_path, str(tmp_path)).checkpoint_minutes == 5.0


@pytest.mark.parametrize("kwargs, message", [
    ({"tokens": 1e6, "steps": 10}, "conflicting budgets"),
    ({"flops": "1e12,abc"}, "not a number"),
    ({"tokens": -5}, "positive"),
    ({"steps": 2.5}, "whole number"),
])
def test_bad_budgets(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_lib.parse_budget(**kwargs)


def test_default_budget_is_chinchilla():
    assert plan_lib.parse_budget() == plan_lib.Budget("tokens_per_param", (20.0,))


def test_seq_len_beyond_positions_is_a_plan_error():
    with pytest.raises(ValueError, match="cpu-100k.*max_positions"):
        plan_lib.make_plan(["cpu-100k"], plan_lib.parse_budget(steps=1), vocab_size=512,
                           seq_len=1024)


def test_a_mesh_that_does_not_divide_a_size_is_a_plan_error():
    """Refused when planning (the dry run), not minutes into the study when that size starts."""
    with pytest.raises(ValueError, match=r"cpu-220k.*'heads'.* of size 3 is not divisible by mesh "
                                         r"axes tensor of size 2"):
        plan_lib.make_plan(["w32d2h2", "cpu-220k"], plan_lib.parse_budget(steps=1), vocab_size=512,
                           seq_len=64, num_devices=8, mesh="fsdp:4,tensor:2")
    (run,) = plan_lib.make_plan(["w32d2h2"], plan_lib.parse_budget(steps=1), vocab_size=512,
                                seq_len=64, num_devices=8, mesh="fsdp:4,tensor:2")
    assert run.size == "w32d2h2"


def test_results_csv_columns_and_rows(tmp_path):
    train = base_config().train
    train.batch_size = 8
    (run,) = plan_lib.make_plan(["w32d2h2"], plan_lib.parse_budget(steps=10), vocab_size=256,
                                seq_len=32, train=train)
    rows = results.RunRows(results.run_columns(run))
    for step, loss in ((5, 4.0), (10, 3.5)):
        rows.add({"step": step, "tokens": step * 256, "flops": step * 1e6, "train_loss": loss,
                  "eval_loss": loss + 0.1, "wall_seconds": float(step)})
    rows.add({"step": 10, "tokens": 2560, "flops": 1e7, "train_loss": 3.4, "eval_loss": 3.45,
              "wall_seconds": 11.0})  # a resumed run redoes step 10: replaced, not duplicated
    rows.status = "done"
    results.write_results(tmp_path, rows.rows())
    text = (tmp_path / results.RESULTS_FILE).read_text()
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert tuple(parsed[0]) == results.COLUMNS
    assert [r["step"] for r in parsed] == ["5", "10"]
    assert [r["final"] for r in parsed] == ["false", "true"]
    assert parsed[1]["eval_loss"] == "3.45" and parsed[1]["cooldown"] == ""
    assert parsed[0]["params_total"] == str(accounting.param_counts(run.model)["total"])
    frame = results.read_results(tmp_path)
    assert frame["final"].tolist() == [False, True]
    assert not list(tmp_path.glob(".*.tmp"))


def test_headline_dry_run_is_the_gpt_neo_study():
    """`--sizes=125M,350M,1.3B` without --config plans GPT-Neo's own study, exact counts and all."""
    sizes = ["125M", "350M", "1.3B"]
    out = subprocess.run(
        [sys.executable, "-m", "neoscale.run", "--sizes=" + ",".join(sizes), "--dry_run",
         "--accelerator=v4-32"],
        capture_output=True, text=True, env=_env_one_device(), timeout=120,
        cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("study gpt_neo:") and "vocab 50257" in lines[0]
    assert "seq_len 2048" in lines[0] and "gpt2" in lines[0]
    assert "16 x TPU v4" in lines[1]
    body = [line.split() for line in lines if line.split() and line.split()[0].endswith("_tpp20")]
    assert [cells[0] for cells in body] == [f"{size}_tpp20" for size in sizes]
    assert [cells[4] for cells in body] == ["125,198,592", "355,798,016", "1,315,575,808"]
    target = hardware.parse_target("v4-32")
    expected = plan_lib.make_plan(sizes, plan_lib.parse_budget(), vocab_size=50257, seq_len=2048,
                                  model_overrides={"dtype": "bfloat16"}, num_devices=16,
                                  process_count=4, target=target, cooldowns=(0.25, 0.5, 1.0))
    for cells, run in zip(body, expected, strict=True):
        assert f"{run.tokens:,}" in cells  # 20 tokens per parameter
        assert run.tokens == pytest.approx(20 * run.params_total, rel=0.01)
        assert str(run.steps) in cells and str(run.batch_size) in cells
        assert str(run.micro_batches) in cells and run.model.remat in cells
    total = next(line for line in lines if line.startswith("total training FLOPs"))
    # GPT-Neo's study forks cooldown branches at 25% and 50% of every run (two per run)
    assert f"{plan_lib.total_flops(expected):.4g}" in total and "incl. 6 cooldown branches" in total


BAD_INPUTS = {
    "bad size": (["--sizes=125X"], "unknown model size '125X'"),
    "empty sizes": (["--sizes="], "empty size list"),
    "empty sizes (commas)": (["--sizes=,,"], "empty size list"),
    "conflicting budgets": (["--tokens=1e6", "--flops=1e15"], "conflicting budgets"),
    "unknown config": (["--config=experiments/nope.py"], "unknown config file"),
    "workdir is a file": (["--workdir={tmp}/afile"], "is a file"),
    "unknown config field": (["--config.train.nope=1"], "unknown config field"),
    "bad cooldowns": (["--cooldowns=0,2"], "bad cooldown fraction"),
    "a day on a CPU": (["--sizes=125M"], "on this CPU-only host"),
    "data repeated": (["--sizes=cpu-100k", "--tokens=1e8"], "beyond 4 epochs"),
    "unknown accelerator": (["--accelerator=v9-8"], "unknown accelerator 'v9-8'"),
    "accelerator not here": (["--accelerator=v4-32"], "drop --accelerator"),
}
if importlib.util.find_spec("jax_plugins") is None:  # the test venv: no CUDA plugin to compile with
    BAD_INPUTS["no GPU compiler"] = (["--sizes=cpu-100k", "--dry_run", "--accelerator=h100x8", "--compile"],
                                     'install the compiler: pip install "neoscale[cuda]"')


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Starts every bad-input command at once (each is a fresh interpreter), then collects them."""
    procs = {}
    for name, (args, _) in BAD_INPUTS.items():
        tmp = tmp_path_factory.mktemp("bad")
        (tmp / "afile").write_text("not a directory")
        args = [a.format(tmp=tmp) for a in args]
        if not any(a.startswith("--workdir") for a in args):
            args.append(f"--workdir={tmp}/study")
        procs[name] = (tmp, subprocess.Popen(
            [sys.executable, "-m", "neoscale.run", *args], cwd=os.path.dirname(os.path.dirname(__file__)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env_one_device()))
    return {name: (tmp, proc.returncode, *proc.communicate(timeout=300), proc.wait())
            for name, (tmp, proc) in procs.items()}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_one_line_no_traceback_nothing_written(bad_input_runs, name):
    tmp, _, stdout, stderr, returncode = bad_input_runs[name]
    assert returncode == 2
    error_lines = [line for line in stderr.splitlines() if "libtpu" not in line and line.strip()]
    assert len(error_lines) == 1, stderr
    assert error_lines[0].startswith("neoscale.run: error: ")
    assert BAD_INPUTS[name][1] in error_lines[0]
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp.iterdir()) == ["afile"]  # no workdir created


def test_bad_size_names_valid_forms(bad_input_runs):
    stderr = bad_input_runs["bad size"][3]
    assert "125M" in stderr and "w{d_model}d{layers}h{heads}" in stderr
