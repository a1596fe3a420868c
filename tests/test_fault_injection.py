"""Fault injection (issue 34): a second writer, corrupt or cut-off files, damaged checkpoints and
bad inputs each end in one line and a non-zero exit (or a warning), and damage nothing."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from fake_gcs import install
from run_configs import flat_run
from subprocess_env import cpu_env

from neoscale import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["--size=w32d2h2", "--data=synthetic", "--vocab_size=64", "--batch_size=8",
         "--seq_len=16", "--heldout_tokens=256", '--model_overrides={"max_positions": 16}']


def _holding_process(directory):
    """A process that takes DIR's lock and sleeps (killed by the test)."""
    code = ("import sys, time; from neoscale import workdir_lock as w\n"
            "with w.hold(sys.argv[1], command='holder'):\n"
            "    print('held', flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# --- one writer per workdir -------------------------------------------------------------------

def _refused(directory) -> workdir_lock.WorkdirLocked:
    """The error that taking DIR's lock raises (fails the test if it is taken)."""
    with pytest.raises(workdir_lock.WorkdirLocked) as refused, workdir_lock.hold(directory):
        pass
    return refused.value


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with workdir_lock.hold(tmp_path, command="neoscale.run"):
        refused = _refused(tmp_path)
    message = str(refused)
    assert "\n" not in message and refused.exit_code == 2
    assert f"neoscale.run (host {socket.gethostname()}, pid {os.getpid()}, since " in message
    with workdir_lock.hold(tmp_path):  # released on exit
        assert workdir_lock.read_holder(tmp_path)["pid"] == os.getpid()


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    proc = _holding_process(tmp_path)
    try:
        assert f"holder (host {socket.gethostname()}, pid {proc.pid}," in str(_refused(tmp_path))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with workdir_lock.hold(tmp_path, command="next"):  # the kernel released the dead one's flock
        assert workdir_lock.read_holder(tmp_path)["command"] == "next"


def test_disabled_takes_no_lock(tmp_path):
    with workdir_lock.hold(tmp_path), workdir_lock.hold(tmp_path, enabled=False):  # process 1..
        assert workdir_lock.read_holder(tmp_path)["pid"] == os.getpid()


@pytest.fixture
def gcs(monkeypatch):
    return install(monkeypatch)


def test_object_store_lock_is_exclusive_and_released(gcs):
    with workdir_lock.hold("gs://bucket/study", command="neoscale.run"):
        assert gcs.exists("bucket/study/.neoscale.lock")
        assert re.search(r"neoscale.run \(host .*heard from", str(_refused("gs://bucket/study")))
    assert not gcs.exists("bucket/study/.neoscale.lock")


def _plant(gcs, holder):
    gcs.pipe_file("bucket/study/.neoscale.lock", json.dumps(holder).encode())


@pytest.mark.parametrize("case", ["lease expired", "process gone on this host"])
def test_a_stale_object_store_lock_is_taken_over(gcs, case):
    stale = {"host": "other-vm", "pid": 1, "command": "old", "since": "x",
             "heartbeat": time.time() - 301, "lease_seconds": 300.0, "token": "old"}
    if case == "process gone on this host":
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        stale.update(host=socket.gethostname(), pid=dead.pid, heartbeat=time.time())
    _plant(gcs, stale)
    with workdir_lock.hold("gs://bucket/study", command="new"):
        assert workdir_lock.read_holder("gs://bucket/study")["command"] == "new"


def test_a_live_object_store_lease_is_respected(gcs):
    _plant(gcs, {"host": "other-vm", "pid": 1, "command": "neoscale.run", "since": "x",
                 "heartbeat": time.time() - 10, "lease_seconds": 300.0, "token": "t"})
    assert "other-vm" in str(_refused("gs://bucket/study"))
    assert workdir_lock.read_holder("gs://bucket/study")["token"] == "t"  # left alone


def test_the_holder_renews_its_lease(gcs):
    with workdir_lock.hold("gs://bucket/study", lease_seconds=0.5):
        first = workdir_lock.read_holder("gs://bucket/study")["heartbeat"]
        time.sleep(0.5)
        assert workdir_lock.read_holder("gs://bucket/study")["heartbeat"] > first


def _cli(module, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, env=cpu_env(device_count=None), timeout=timeout)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
def test_train_into_a_run_directory_in_use_exits_2_and_writes_nothing(tmp_path):
    proc = _holding_process(tmp_path)
    try:
        result = _cli("neoscale.train", *TRAIN, "--steps=2", f"--workdir={tmp_path}")
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode == 2, result.stderr
    assert f"pid {proc.pid}" in _one_line(result.stderr)
    assert sorted(os.listdir(tmp_path)) == [".neoscale.lock"]


@pytest.mark.slow
def test_run_into_a_study_in_use_exits_2_but_a_dry_run_works(tmp_path):
    proc = _holding_process(tmp_path)
    tiny = ["--sizes=w32d2h2", "--steps=2", "--config.data.tokenizer=train:512",
            "--config.data.seq_len=64", f"--workdir={tmp_path}"]
    try:
        refused = _cli("neoscale.run", *tiny)
        dry = _cli("neoscale.run", *tiny, "--dry_run")
    finally:
        proc.kill()
        proc.wait()
    assert refused.returncode == 2, refused.stderr
    assert f"is in use by holder (host {socket.gethostname()}, pid {proc.pid}" in _one_line(
        refused.stderr)
    assert not os.path.exists(tmp_path / "plan.json")
    assert dry.returncode == 0, dry.stderr


# --- corrupt or cut-off files ------------------------------------------------------------------

def _config(run_dir, steps=6, **kwargs):

    return flat_run(size="w32d2h2", workdir=str(run_dir), data="synthetic", vocab_size=64,
                     batch_size=8, seq_len=16, learning_rate=0.01, heldout_tokens=256, steps=steps,
                     log_every=1, eval_every=2, checkpoint_every=2, keep_checkpoints=10,
                     async_checkpoints=False, tensorboard=False,
                     model_overrides={"max_positions": 16}, **kwargs)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 6-step run (checkpoints 2, 4, 6) and its result; tests work on copies."""
    from neoscale.training import loop

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = loop.train(_config(run_dir))

    def copy(tmp_path):
        target = tmp_path / "run"
        shutil.copytree(run_dir, target)
        return target

    return result, copy


@pytest.mark.parametrize("name", ["finished.json", "config.json"])
def test_a_cut_off_run_file_names_itself_and_whether_deleting_it_is_safe(finished_run, tmp_path,
                                                                         name):
    from neoscale.files import CorruptFileError
    from neoscale.training import loop

    result, copy = finished_run
    run_dir = copy(tmp_path)
    text = (run_dir / name).read_text()
    (run_dir / name).write_text(text[:len(text) // 2])  # what a kill mid-write would leave
    with pytest.raises(CorruptFileError) as corrupt:
        loop.train(_config(run_dir))
    message = str(corrupt.value)
    assert str(run_dir / name) in message and "deleting it is safe" in message
    assert "\n" not in message
    from neoscale.runner import study  # a study records the run as failed for that reason

    assert study.failure_reason(corrupt.value) == f"corrupt file: {message}"
    (run_dir / name).unlink()  # as the message says: the run resumes, or is rewritten
    again = loop.train(_config(run_dir))
    assert again.step == 6 and again.eval_loss == pytest.approx(result.eval_loss, rel=1e-5)
    if name == "finished.json":  # resumed from the last checkpoint and finished again
        assert not again.skipped and json.loads((run_dir / name).read_text())["step"] == 6
    else:  # the finished result, returned without the settings it no longer has
        assert again.skipped


def test_a_corrupt_plan_or_run_row_file_names_itself(tmp_path):
    from neoscale.files import CorruptFileError
    from neoscale.runner import results, study

    (tmp_path / "plan.json").write_text('{"study": {"na')
    with pytest.raises(CorruptFileError, match=r"plan.json \(the study's plan\) .*deleting it is "
                       "safe: rerunning"):
        study.load_plan(tmp_path)
    run_dir = tmp_path / "runs" / "w32d2h2"
    run_dir.mkdir(parents=True)
    (run_dir / results.RUN_COLUMNS_FILE).write_text("{")
    with pytest.raises(CorruptFileError, match=r"study_run.json \(the run's row in results.csv\)"):
        results.collect(tmp_path / "runs")


def test_a_cut_off_last_metrics_line_is_dropped_with_a_warning(tmp_path, capsys):
    from neoscale.files import CorruptFileError
    from neoscale.training.metrics import read_metrics

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}]
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}]
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and "dropped a cut-off last line" in warnings[0]  # once per file
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "lo\n{"step": 2, "loss": 2.0}\n')
    with pytest.raises(CorruptFileError, match="metrics.jsonl line 1 is not JSON"):
        read_metrics(tmp_path)


def test_a_run_killed_mid_metrics_line_resumes_with_a_clean_file(finished_run, tmp_path):
    from neoscale.training import loop
    from neoscale.training.metrics import read_metrics

    result, copy = finished_run
    run_dir = copy(tmp_path)
    (run_dir / "finished.json").unlink()
    text = (run_dir / "metrics.jsonl").read_text()
    (run_dir / "metrics.jsonl").write_text(text[:-20])  # killed writing step 6's record,
    shutil.rmtree(run_dir / "checkpoints" / "6")  # before its checkpoint
    again = loop.train(_config(run_dir))
    assert again.eval_loss == pytest.approx(result.eval_loss, rel=1e-5)
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert (run_dir / "metrics.jsonl").read_text().endswith("}\n")


# --- damaged checkpoints -----------------------------------------------------------------------

def _damage(checkpoint_dir):
    """Truncates every array file of a checkpoint's state (what a failing disk leaves)."""
    damaged = 0
    for root, _, files in os.walk(checkpoint_dir / "state"):
        for name in files:
            path = os.path.join(root, name)
            if os.path.getsize(path) > 64 and not name.endswith((".json", "_METADATA")):
                with open(path, "r+b") as f:
                    f.truncate(16)
                damaged += 1
    assert damaged


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(finished_run, tmp_path,
                                                                        capsys):
    from neoscale.training import loop

    result, copy = finished_run
    run_dir = copy(tmp_path)
    (run_dir / "finished.json").unlink()
    _damage(run_dir / "checkpoints" / "6")
    _damage(run_dir / "checkpoints" / "4")
    again = loop.train(_config(run_dir))
    err = capsys.readouterr().err
    assert "checkpoint 6 in" in err and "checkpoint 4 in" in err and "resumed from step 2" in err
    assert again.step == 6 and again.eval_loss == pytest.approx(result.eval_loss, rel=1e-5)
    names = sorted(os.listdir(run_dir / "checkpoints"))
    assert {"2", "4", "6", "damaged-4", "damaged-6"} <= set(names)


def test_when_no_checkpoint_restores_nothing_is_moved_and_one_line_says_so(finished_run, tmp_path):
    from neoscale.training import loop

    _, copy = finished_run
    run_dir = copy(tmp_path)
    (run_dir / "finished.json").unlink()
    for step in ("2", "4", "6"):
        _damage(run_dir / "checkpoints" / step)
    with pytest.raises(ValueError, match=r"no checkpoint in .*checkpoints restores \(the newest, "
                       r"6: .*delete .* to train the run from the start") as error:
        loop.train(_config(run_dir))
    assert "\n" not in str(error.value)
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["2", "4", "6"]


# --- bad input: one line, non-zero exit ----------------------------------------------------------

@pytest.mark.parametrize("name", ["h100x0", "v4-0", "v5e-0"])
def test_an_accelerator_of_zero_devices_is_refused(name):
    from neoscale import hardware

    with pytest.raises(ValueError, match=f"bad accelerator '{name}': a (slice|host) has at least"):
        hardware.parse_target(name)


def test_a_budget_below_one_step_and_a_repeated_size_are_refused():
    from neoscale.runner import plan as plan_lib

    kwargs = dict(vocab_size=512, seq_len=64, train={"batch_size": 8})
    with pytest.raises(ValueError, match=r"--flops=1e\+03 buys .* of one training step .*raise the "
                       "budget to at least"):
        plan_lib.make_plan(["w32d2h2"], plan_lib.parse_budget(flops="1e3"), **kwargs)
    with pytest.raises(ValueError, match="size w32d2h2 is listed more than once"):
        plan_lib.make_plan(["w32d2h2", "w48d2h2", "w32d2h2"], plan_lib.parse_budget(), **kwargs)
    assert len(plan_lib.make_plan(["w32d2h2"], plan_lib.parse_budget(flops="1e12"), **kwargs)) == 1


@pytest.mark.parametrize("field,value", [("n_bootstrap", -1), ("seed", -1)])
def test_bad_fit_settings_are_refused(field, value):
    from neoscale.runner import config

    fit = config.base_config().fit
    config.check_fit_settings(fit)  # the defaults pass
    fit[field] = value
    with pytest.raises(ValueError, match=rf"--config.fit.{field}={value}: .*an integer >= 0"):
        config.check_fit_settings(fit)


@pytest.mark.parametrize("flags,error", [
    (["--widths=0,16"], "--widths=0,16: give two or more distinct widths, each a positive"),
    (["--widths=64"], "--widths=64: give two or more"),
    (["--seeds=0"], "--seeds=0: the number of model seeds"),
    (["--depths=2,-4"], "--depths=2,-4: give two or more distinct positive depths"),
])
def test_coord_check_refuses_bad_sweeps_before_running(tmp_path, flags, error):
    from neoscale import coord_check

    values = {"widths": (64, 128), "depths": (2, 4), "seeds": 1, "steps": 5}
    for flag in flags:
        name, value = flag.removeprefix("--").split("=")
        values[name] = tuple(int(v) for v in value.split(",")) if name in ("widths", "depths") else (
            int(value))
    with pytest.raises(ValueError, match=re.escape(error)):
        coord_check.check_inputs(out_dir=str(tmp_path), **values)


def test_coord_check_out_dir_a_file_is_one_line_before_the_sweep(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    started = time.monotonic()
    result = _cli("neoscale.coord_check", f"--out_dir={a_file}", "--widths=32,64", "--steps=1")
    assert result.returncode == 2
    assert _one_line(result.stderr) == (f"neoscale.coord_check: error: --out_dir={a_file} is a file; "
                                        "pass a directory (new or existing)")
    assert time.monotonic() - started < 120  # refused up front, not after the sweep
    assert a_file.read_text() == "x"


@pytest.mark.slow
@pytest.mark.parametrize("flag,error", [
    ("--accelerator=h100x0", "bad accelerator 'h100x0'"),
    ("--accelerator=v4-0", "bad accelerator 'v4-0'"),
    ("--flops=1e3", "--flops=1e+03 buys"),
    ("--sizes=cpu-100k,cpu-100k", "size cpu-100k is listed more than once"),
    ("--config.fit.n_bootstrap=-1", "--config.fit.n_bootstrap=-1"),
])
def test_run_bad_input_is_one_line_and_exit_2(tmp_path, flag, error):
    result = _cli("neoscale.run", "--dry_run", f"--workdir={tmp_path / 'study'}", flag)
    assert result.returncode == 2
    assert error in _one_line(result.stderr)
    assert not (tmp_path / "study").exists()


@pytest.mark.slow
def test_train_with_an_unwritable_home_is_one_line_and_a_cache_flag_fixes_it(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    env = cpu_env(device_count=None)
    env["HOME"] = str(a_file / "home")  # nothing can be created under it (read-only in effect)
    common = [sys.executable, "-m", "neoscale.train", "--size=w32d2h2", "--steps=2",
              "--seq_len=16", "--batch_size=8", "--tokenizer=train:512", "--heldout_tokens=256",
              '--model_overrides={"max_positions": 16}', f"--workdir={tmp_path / 'run'}"]
    refused = subprocess.run(common, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1
    assert _one_line(refused.stderr).startswith(
        "error: cannot write the prepared-data cache --data_cache_dir=~/.cache/neoscale (")
    trained = subprocess.run([*common, f"--data_cache_dir={tmp_path / 'cache'}"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads(trained.stdout.splitlines()[-1])["step"] == 2


# --- a disk filling while a checkpoint is written ---------------------------------------------

# What orbax raises (from tensorstore) when the disk fills mid-checkpoint, as seen on a 2 MB tmpfs.
ENOSPC_FROM_ORBAX = (
    'RESOURCE_EXHAUSTED: Error writing "params.wpe/0.0" in OCDBT database at local file '
    '"/x/checkpoints/4.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/": Failed '
    'writing: "/x/d/a044": Failed to write 217809 bytes to file 18: No space left on device '
    "[os_error_code='28']")


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_checkpoints(
        finished_run, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    from neoscale.runner import study
    from neoscale.training import checkpoint, loop

    result, _ = finished_run
    real_save = ocp.CheckpointManager.save

    def save_until_full(self, step, *args, **kwargs):
        if step >= 4:
            raise ValueError(ENOSPC_FROM_ORBAX)
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_until_full)
    run_dir = tmp_path / "run"
    with pytest.raises(checkpoint.DiskFullError) as full:
        loop.train(_config(run_dir))
    message = str(full.value)
    assert "\n" not in message and "disk full while writing a checkpoint to" in message
    assert "the complete checkpoints are kept (2): free space" in message
    assert study.failure_reason(full.value).startswith("disk full: ")  # not "out of memory"
    assert study.failure_reason(ValueError(ENOSPC_FROM_ORBAX)).startswith("disk full: ")
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)  # space freed: rerun resumes
    again = loop.train(_config(run_dir))
    assert again.eval_loss == pytest.approx(result.eval_loss, rel=1e-5)


def test_orbax_disk_full_tracebacks_are_filtered_but_not_other_errors():
    import logging

    from neoscale.training.checkpoint import _QUIET_DISK_FULL

    def record(message, path="/venv/orbax/checkpoint/_src/futures/future.py"):
        return logging.LogRecord("absl", logging.ERROR, path, 1, message, None, None)

    assert not _QUIET_DISK_FULL.filter(record(ENOSPC_FROM_ORBAX))
    assert _QUIET_DISK_FULL.filter(record("another orbax failure"))
    assert _QUIET_DISK_FULL.filter(record(ENOSPC_FROM_ORBAX, path="/repo/neoscale/train.py"))
