"""Two processes (gloo CPU collectives, two fake devices each) train like one 4-device process."""

import socket
import subprocess
import sys

import jax
import pytest
from run_configs import flat_run
from subprocess_env import cpu_env

from neoscale.training import loop as loop_lib
from neoscale.training.metrics import read_metrics

SETTINGS = dict(size="w32d2h2", data="synthetic", vocab_size=64, batch_size=8, seq_len=16,
                learning_rate=0.01, heldout_tokens=256, log_every=1, eval_every=4,
                checkpoint_every=4, steps=4, model_overrides={"max_positions": 16})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_with_four_devices(tmp_path):
    reference = loop_lib.train(flat_run(workdir=str(tmp_path / "one"), tensorboard=False,
                                         **SETTINGS), devices=jax.devices()[:4])
    config = flat_run(workdir=str(tmp_path / "two"), **SETTINGS)
    env = cpu_env(device_count=2)
    port = _free_port()
    flags = [f"--{k}={v}" for k, v in config.to_flat("w32d2h2").items()
             if k in ("size", "data", "vocab_size", "batch_size", "seq_len", "learning_rate",
                      "heldout_tokens", "log_every", "eval_every", "checkpoint_every", "steps",
                      "workdir")]
    flags.append('--model_overrides={"max_positions": 16}')
    procs = [subprocess.Popen(
        [sys.executable, "-m", "neoscale.train", *flags, "--distributed",
         f"--coordinator=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    two = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "two")}
    one = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "one")}
    assert sorted(two) == [1, 2, 3, 4]
    assert two == pytest.approx(one, rel=1e-5)
    assert loop_lib.load_result(tmp_path / "two").eval_loss == pytest.approx(
        reference.eval_loss, rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["4"]
