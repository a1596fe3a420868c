"""tpu_setup.sh: --dry-run prints the gcloud commands; the commands it runs on a worker start,
refuse, log and stop a job (through a fake gcloud that runs them here); --help; bad options;
shellcheck clean."""

import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tpu_setup.sh")
VENV_PYTHON = "$HOME/neoscale-venv/bin/python"


def run(*args, env=None):
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env=env)


def commands_of(out) -> list[str]:
    return [line for line in out.stdout.splitlines() if not line.startswith("#")]


def test_dry_run_tpu_vm_prints_every_step_in_order():
    out = run("--name=neo-a", "--workdir=gs://bucket/neo", "--accelerator-type=v5litepod-16",
              "--zone=us-west4-a", "--version=v2-alpha-tpuv5-lite", "--spot",
              "--sizes=125M,350M", "--dry-run", "--", "--tokens_per_param=10")
    assert out.returncode == 0, out.stderr
    commands = [line for line in out.stdout.splitlines() if not line.startswith("#")]
    assert commands[0] == ("gcloud compute tpus tpu-vm create neo-a --zone us-west4-a "
                           "--accelerator-type v5litepod-16 --version v2-alpha-tpuv5-lite --spot")
    assert commands[1].startswith("git -C ") and " archive " in commands[1]
    assert commands[2].startswith("gcloud compute tpus tpu-vm scp ")
    assert "--worker=all" in commands[2]
    install, start = commands[3], commands[4]
    assert install.startswith("gcloud compute tpus tpu-vm ssh neo-a --zone us-west4-a --worker=all")
    # A Python 3.11 virtualenv made by uv (TPU images have 3.10), jax[tpu] and neoscale in it.
    assert "uv venv -q --python 3.11 $HOME/neoscale-venv;" in install
    assert ("uv pip install -q --python $HOME/neoscale-venv/bin/python '\\''jax[tpu]'\\'' "
            "-e ~/neoscale'\\''[gcs,hf]'\\''") in install
    assert (f"{VENV_PYTHON} -m neoscale.run --config=experiments/gpt_neo.py "
            "--workdir=gs://bucket/neo --distributed --sizes=125M,350M --tokens_per_param=10") in start
    assert "--worker=all" in start and "setsid nohup bash -xc" in start


def test_dry_run_queued_resource_and_skips():
    out = run("--name=neo-b", "--workdir=gs://b/p", "--queued", "--project=proj", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == ("gcloud --project proj compute tpus queued-resources create neo-b --node-id "
                        "neo-b --zone us-central2-b --accelerator-type v4-8 --runtime-version "
                        "tpu-ubuntu2204-base")
    assert any("queued-resources describe neo-b" in line for line in lines)
    out = run("--name=neo-b", "--workdir=gs://b/p", "--skip-create", "--skip-install", "--dry-run")
    commands = commands_of(out)
    assert len(commands) == 1 and "neoscale.run" in commands[0]
    out = run("run", "--name=neo-b", "--workdir=gs://b/p", "--dry-run")  # the same, by name
    assert commands_of(out) == commands


@pytest.mark.parametrize("queued, delete", [
    (False, "gcloud compute tpus tpu-vm delete neo-c --zone us-central2-b --quiet"),
    (True, "gcloud compute tpus queued-resources delete neo-c --zone us-central2-b --force --quiet"),
])
def test_recreate_deletes_then_creates_installs_and_reruns(queued, delete):
    flags = ["--name=neo-c", "--workdir=gs://b/neo", "--spot", "--dry-run"] + ["--queued"] * queued
    commands = commands_of(run("recreate", *flags))
    assert commands[0] == delete
    create = "queued-resources create neo-c" if queued else "tpu-vm create neo-c"
    assert create in commands[1] and commands[1].endswith("--spot")
    assert any("uv venv" in c for c in commands) and "neoscale.run" in commands[-1]
    assert commands_of(run("delete", *flags)) == [delete]
    status = commands_of(run("status", *flags))
    assert len(status) == 1 and ("queued-resources describe" if queued else "tpu-vm describe") in status[0]


def test_prepare_then_study_on_prepared_shards():
    out = run("run", "--name=neo-d", "--workdir=gs://b/neo", "--data-dir=gs://b/data/fw", "--dry-run",
              "--prepare=--data=hf:HuggingFaceFW/fineweb-edu:sample-100BT --tokenizer=gpt2 "
              "--train_tokens=26.3e9")  # the runbook's flags, on one line
    (start,) = commands_of(out)
    assert (f"{VENV_PYTHON} -m neoscale.prepare --data=hf:HuggingFaceFW/fineweb-edu:sample-100BT "
            f"--tokenizer=gpt2 --train_tokens=26.3e9 --out=gs://b/data/fw --distributed && "
            f"{VENV_PYTHON} -m neoscale.run "
            "--config=experiments/gpt_neo.py --workdir=gs://b/neo --distributed "
            "--config.data.data=prepared:gs://b/data/fw") in start


FAKE_GCLOUD = """#!/bin/bash
# Logs its arguments; `tpu-vm ssh ... --command CMD` runs CMD here (one worker).
echo "gcloud $*" >> "$HOME/gcloud.log"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [[ "${args[i]}" == --command ]] && command="${args[i + 1]}"; done
[[ " $* " == *" ssh "* ]] && exec bash -c "$command"
exit 0
"""

# The worker's virtualenv python: prepare returns at once, the study runs until SIGTERM.
FAKE_PYTHON = """#!/bin/bash
trap 'echo "study got SIGTERM"; exit 75' TERM
echo "python $*"
[[ "$2" == neoscale.prepare ]] && exit 0
sleep 60 & wait
"""


def _executable(path, text):
    path.write_text(text)
    path.chmod(0o755)


def _wait_for(condition, what, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds} s for {what}")
        time.sleep(0.1)


def _study_starts(log) -> int:
    """How many times the (fake) study has started: its own output lines, not bash -x's traces."""
    return sum(line.startswith("python -m neoscale.run") for line in log.read_text().splitlines())


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_job_on_a_worker_starts_refuses_a_second_logs_stops_and_reruns(tmp_path):
    """The commands tpu_setup.sh sends to the workers, run here by a fake gcloud."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    (home / "neoscale").mkdir(parents=True)
    (home / "neoscale-venv" / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    _executable(bin_dir / "gcloud", FAKE_GCLOUD)
    _executable(home / "neoscale-venv" / "bin" / "python", FAKE_PYTHON)
    env = dict(os.environ, HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    flags = ["--name=neo", "--workdir=gs://b/neo", "--data-dir=gs://b/data",
             "--prepare=--data=builtin --tokenizer=gpt2"]
    log, pid_file = home / "neoscale-job.log", home / "neoscale-job.pid"

    out = run("run", *flags, env=env)
    assert out.returncode == 0, out.stderr
    pgid = int(pid_file.read_text())
    _wait_for(lambda: _study_starts(log) == 1, "the study to start")
    assert _alive(pgid)
    text = log.read_text()
    assert ("python -m neoscale.prepare --data=builtin --tokenizer=gpt2 --out=gs://b/data "
            "--distributed\n") in text
    assert ("python -m neoscale.run --config=experiments/gpt_neo.py --workdir=gs://b/neo "
            "--distributed --config.data.data=prepared:gs://b/data\n") in text

    again = run("run", *flags, env=env)  # a second job beside the running one
    assert again.returncode != 0 and "a job is already running" in again.stderr
    assert int(pid_file.read_text()) == pgid

    logs = run("logs", "--name=neo", env=env)
    assert logs.returncode == 0 and "python -m neoscale.run" in logs.stdout

    stop = run("stop", "--name=neo", env=env)
    assert stop.returncode == 0 and "stopping" in stop.stdout
    _wait_for(lambda: not _alive(pgid), "the job to stop")
    assert "study got SIGTERM" in log.read_text()

    rerun = run("run", *flags, env=env)  # after a stop (or a preemption): the same command
    assert rerun.returncode == 0, rerun.stderr
    new_pgid = int(pid_file.read_text())
    assert new_pgid != pgid
    _wait_for(lambda: _study_starts(log) == 2, "the rerun")
    os.killpg(new_pgid, signal.SIGTERM)
    _wait_for(lambda: not _alive(new_pgid), "the rerun to stop")
    assert "ssh neo --zone us-central2-b --worker=0 --command tail" in (home / "gcloud.log").read_text()


FAKE_UV = """#!/bin/bash
# Logs each call's arguments, one per line, then a blank line; "uv venv" makes the venv's python.
printf '%s\\n' "$@" '' >> "$HOME/uv.log"
if [[ "$1" == venv ]]; then
  mkdir -p "${@: -1}/bin" && printf '#!/bin/bash\\necho "python $*"\\n' > "${@: -1}/bin/python"
  chmod +x "${@: -1}/bin/python"
fi
"""


def test_install_on_a_worker_installs_the_runbooks_extras(tmp_path):
    """The install command, run by a fake gcloud and a fake uv, asks for every extra the runbook
    needs (gs:// paths, the hf: source of its preparation step), and each extra brings the
    package that code path imports."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    bin_dir.mkdir()
    _executable(bin_dir / "gcloud", FAKE_GCLOUD)
    _executable(bin_dir / "uv", FAKE_UV)
    subprocess.run(["tar", "czf", str(home / "neoscale-src.tar.gz"), "-C", REPO, "setup.py"], check=True)
    env = dict(os.environ, HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = run("install", "--name=neo", env=env)
    assert out.returncode == 0, out.stderr
    calls = [c.splitlines() for c in (home / "uv.log").read_text().split("\n\n") if c.strip()]
    (install,) = [c for c in calls if c[:2] == ["pip", "install"]]
    editable = install[install.index("-e") + 1]
    assert editable.startswith(str(home / "neoscale") + "[")
    extras = set(editable[editable.index("[") + 1 : -1].split(","))
    requires = importlib.metadata.requires("neoscale")  # the installed package's extras
    packages = {re.split(r"[ <>=;\\[]", r)[0] for r in requires for extra in extras
                if f'extra == "{extra}"' in r}
    assert extras <= set(importlib.metadata.metadata("neoscale").get_all("Provides-Extra"))
    assert {"gcsfs", "datasets"} <= packages, packages  # gs:// (epath), --data=hf:NAME


def test_help_documents_the_options():
    out = run("--help")
    assert out.returncode == 0
    for option in ("--name", "--workdir", "--zone", "--accelerator-type", "--version", "--spot",
                   "--queued", "--sizes", "--data-dir", "--prepare", "--python", "--dry-run"):
        assert option in out.stdout
    for command in ("up", "create", "install", "run", "stop", "logs", "status", "recreate", "delete"):
        assert f"\n  {command} " in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--workdir=gs://b/p"], "--name=NAME is required"),
    (["--name=x"], "--workdir=gs://BUCKET/PATH is required"),
    (["--name=x", "--workdir=/local/dir"], "must be on Cloud Storage"),
    (["--name=x", "--workdir=gs://b/p", "--bogus"], "unknown option '--bogus'"),
    (["restart", "--name=x"], "unknown command 'restart'"),
    (["--name=x", "--workdir=gs://b/p", "--python=3.10"], "need Python 3.11 or newer"),
    (["--name=x", "--workdir=gs://b/p", "--prepare=--data=builtin"], "--prepare needs --data-dir"),
    (["--name=x", "--workdir=gs://b/p", "--data-dir=/local"], "--data-dir must be on Cloud Storage"),
])
def test_bad_options(args, message):
    out = run(*args, "--dry-run")
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert out.stdout == ""


def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    out = subprocess.run(["shellcheck", SCRIPT], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
