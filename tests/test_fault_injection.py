"""Fault injection (issue 34): a second writer, corrupt or cut-off files, damaged checkpoints and
bad inputs each end in one line and a non-zero exit (or a warning), and damage nothing."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from fake_gcs import install
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
