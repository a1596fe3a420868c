"""tpu_setup.sh: --dry-run prints the gcloud commands; --help; bad options; shellcheck clean."""

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tpu_setup.sh")


def run(*args):
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


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
    assert "jax[tpu]" in install and "pip install" in install
    assert "python3 -m neoscale.run --config=experiments/gpt_neo.py --workdir=gs://bucket/neo" in start
    assert "--distributed" in start and "--sizes=125M,350M" in start
    assert "--tokens_per_param=10" in start and "--worker=all" in start


def test_dry_run_queued_resource_and_skips():
    out = run("--name=neo-b", "--workdir=gs://b/p", "--queued", "--project=proj", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == ("gcloud --project proj compute tpus queued-resources create neo-b --node-id "
                        "neo-b --zone us-central2-b --accelerator-type v4-8 --runtime-version "
                        "tpu-ubuntu2204-base")
    assert any("queued-resources describe neo-b" in line for line in lines)
    out = run("--name=neo-b", "--workdir=gs://b/p", "--skip-create", "--skip-install", "--dry-run")
    commands = [line for line in out.stdout.splitlines() if not line.startswith("#")]
    assert len(commands) == 1 and "neoscale.run" in commands[0]


def test_help_documents_the_options():
    out = run("--help")
    assert out.returncode == 0
    for option in ("--name", "--workdir", "--zone", "--accelerator-type", "--version", "--spot",
                   "--queued", "--sizes", "--dry-run"):
        assert option in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--workdir=gs://b/p"], "--name=NAME is required"),
    (["--name=x"], "--workdir=gs://BUCKET/PATH is required"),
    (["--name=x", "--workdir=/local/dir"], "must be on Cloud Storage"),
    (["--name=x", "--workdir=gs://b/p", "--bogus"], "unknown option '--bogus'"),
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
