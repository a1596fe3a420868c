"""Checkpoints: restore onto another mesh; SIGTERM / SIGKILL of a real run resume exactly."""

import functools
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from run_configs import flat_run
from subprocess_env import cpu_env

from neoscale.presets import model_config
from neoscale.sharding import make_mesh
from neoscale.training import loop as loop_lib
from neoscale.training import stopping
from neoscale.training.checkpoint import Checkpointer
from neoscale.training.metrics import read_metrics
from neoscale.training.optimizer import make_optimizer, make_schedule, weight_decay_mask
from neoscale.training.state import ModelParams, abstract_state, create_train_state
from neoscale.training.synthetic import SyntheticData

CLI = ["--size=w32d2h2", "--data=synthetic", "--vocab_size=64", "--batch_size=8",
       "--seq_len=16", "--learning_rate=0.01", "--heldout_tokens=256", "--log_every=1",
       "--eval_every=1000", '--model_overrides={"max_positions": 16}']
STEPS = 400


def test_restore_onto_another_mesh(tmp_path):
    params = ModelParams(model_config("w32d2h2", vocab_size=64, max_positions=16), 0)
    optimizer = make_optimizer(make_schedule("cosine", 1e-2, 10, 1),
                               weight_decay_mask(params.logical_specs))
    state = create_train_state(params, optimizer, make_mesh("fsdp:8"))
    iterator = SyntheticData(64, 16).train_iterator(8)
    next(iterator)
    checkpointer = Checkpointer(tmp_path / "ckpt", save_every=1, keep=1)
    checkpointer.save(1, state, iterator, {"note": "x"})
    checkpointer.close()
    other = make_mesh("data:2,fsdp:2,tensor:2")
    fresh_iterator = SyntheticData(64, 16).train_iterator(8)
    restored, run = Checkpointer(tmp_path / "ckpt", save_every=1, keep=1).restore(
        1, abstract_state(params, optimizer, other), fresh_iterator)
    assert run == {"note": "x"}
    assert restored.params["wte"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    assert restored.params["wte"].sharding.mesh.shape == other.shape
    for name in params.names:
        np.testing.assert_array_equal(np.asarray(restored.params[name]),
                                      np.asarray(state.params[name]))
    np.testing.assert_array_equal(next(fresh_iterator)["inputs"], next(iterator)["inputs"])


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir)}


def _start(run_dir):
    env = cpu_env(device_count=1)
    return subprocess.Popen([sys.executable, "-m", "neoscale.train", *CLI, f"--steps={STEPS}",
                             "--checkpoint_every=7", f"--workdir={run_dir}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(run_dir, step: int, proc) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if max(_losses(run_dir), default=0) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach step {step}: {proc.communicate()[1][-2000:]}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[int, float]:
    """The same run as the CLI's, in this process on one device."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    config = flat_run(size="w32d2h2", workdir=str(run_dir), data="synthetic", vocab_size=64,
                       batch_size=8, seq_len=16, learning_rate=0.01, heldout_tokens=256,
                       log_every=1, eval_every=1000, checkpoint_every=1000, steps=STEPS,
                       model_overrides={"max_positions": 16}, tensorboard=False)
    loop_lib.train(config, devices=jax.devices()[:1])
    return _losses(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_resumes_exactly(tmp_path, uninterrupted, sig):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    _wait_for_step(run_dir, 30, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == stopping.PREEMPTED_EXIT_CODE, stderr[-2000:]
        assert "preempted at step" in stderr
    elif sig == signal.SIGINT:  # Ctrl-C: a checkpoint at the current step, not a traceback
        assert proc.returncode == stopping.INTERRUPTED_EXIT_CODE, stderr[-2000:]
        assert "interrupted at step" in stderr and "Traceback" not in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    stopped_at = max(_losses(run_dir))
    assert stopped_at < STEPS
    resumed = _start(run_dir)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-2000:]
    losses = _losses(run_dir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert losses == uninterrupted


def test_checkpoint_cadence_by_wall_clock(tmp_path, monkeypatch):
    """checkpoint_minutes saves a checkpoint once that long has passed since the last save (read
    at logging steps), whatever checkpoint_every says; a fake clock runs 25 s per step."""
    now = [0.0]
    monkeypatch.setattr(loop_lib, "Checkpointer", functools.partial(Checkpointer, clock=lambda: now[0]))

    def one_step_passes(point):
        now[0] += 25.0

    config = flat_run(workdir=str(tmp_path / "run"), size="w32d2h2", data="synthetic", vocab_size=64,
                       batch_size=8, seq_len=16, learning_rate=0.01, heldout_tokens=256, steps=9,
                       log_every=1, eval_every=1, checkpoint_every=1000, checkpoint_minutes=1.0,
                       keep_checkpoints=10, tensorboard=False, model_overrides={"max_positions": 16})
    loop_lib.train(config, on_eval=one_step_passes)
    # Step k decides at 25 (k - 1) s: 75 s at step 4 (save, started at 100 s after its
    # evaluation), 175 s at step 8 (75 s after that save), and the end.
    assert Checkpointer(tmp_path / "run" / "checkpoints", save_every=1, keep=1,
                        read_only=True).all_steps() == [4, 8, 9]


def test_the_clock_is_read_only_when_asked():
    now = [0.0]
    checkpointer = Checkpointer.__new__(Checkpointer)  # the cadence alone, no orbax manager
    checkpointer.save_every, checkpointer.save_minutes = 100, 30.0
    checkpointer._clock, checkpointer._last_save = (lambda: now[0]), 0.0
    now[0] = 29 * 60.0
    assert not checkpointer.due(7)
    now[0] = 30 * 60.0
    assert checkpointer.due(7) and not checkpointer.due(7, check_clock=False)
    assert checkpointer.due(200, check_clock=False)
    checkpointer.save_minutes = None
    assert not checkpointer.due(7)


def test_a_relative_directory_saves_and_restores(tmp_path, monkeypatch):
    # `python -m neoscale.run` writes to the relative ./neoscale_runs/<study>: orbax refuses a
    # relative checkpoint path, and every run of the demo failed at its first save.
    monkeypatch.chdir(tmp_path)
    params = ModelParams(model_config("w32d2h2", vocab_size=64, max_positions=16), 0)
    optimizer = make_optimizer(make_schedule("cosine", 1e-2, 10, 1),
                               weight_decay_mask(params.logical_specs))
    state = create_train_state(params, optimizer, make_mesh("fsdp:8"))
    iterator = SyntheticData(64, 16).train_iterator(8)
    checkpointer = Checkpointer("runs/a/checkpoints", save_every=1, keep=1)
    checkpointer.save(1, state, iterator, {"note": "relative"})
    checkpointer.close()
    assert (tmp_path / "runs" / "a" / "checkpoints" / "1").is_dir()
    reader = Checkpointer("runs/a/checkpoints", save_every=1, keep=1, read_only=True)
    assert reader.latest_step() == 1 and reader.restore_run(1) == {"note": "relative"}
