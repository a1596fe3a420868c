"""A run checkpointed by two processes (gloo CPU collectives) resumes on one: the data position is
one number for every process, so the resumed steps read the same global batches."""

import shutil
import subprocess
import sys

import jax
import pytest
from run_configs import flat_run
from subprocess_env import cpu_env
from test_multihost import SETTINGS, _free_port

from neoscale.training import loop as loop_lib
from neoscale.training.metrics import read_metrics


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_on_one_process(tmp_path):
    settings = {**SETTINGS, "checkpoint_every": 2}
    run_dir = tmp_path / "run"
    config = flat_run(workdir=str(run_dir), tensorboard=False, **settings)
    port = _free_port()
    flags = [f"--{k}={v}" for k, v in config.to_flat("w32d2h2").items() if k in settings or k == "workdir"
             if k != "model_overrides"]
    flags.append('--model_overrides={"max_positions": 16}')
    procs = [subprocess.Popen(
        [sys.executable, "-m", "neoscale.train", *flags, "--distributed",
         f"--coordinator=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        env=cpu_env(device_count=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    two = {r["step"]: r["loss"] for r in read_metrics(run_dir)}
    assert sorted(two) == [1, 2, 3, 4]
    # Back to the state after step 2, as if preempted there; then one process (4 devices) resumes.
    shutil.rmtree(run_dir / "checkpoints" / "4")
    (run_dir / loop_lib.FINISHED_FILE).unlink()
    result = loop_lib.train(config, devices=jax.devices()[:4])
    assert not result.skipped and result.step == 4
    one = {r["step"]: r["loss"] for r in read_metrics(run_dir)}
    assert one == pytest.approx(two, rel=1e-5)  # steps 3 and 4 read the batches they read before
