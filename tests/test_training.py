"""Hyper-parameter rule, schedules, weight-decay mask, and the loop end to end (synthetic data):
evaluation, resume mid-run, reuse refused on changed settings, gradient accumulation."""

import json
import math
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from etils import epath
from jax.sharding import PartitionSpec as P
from run_configs import flat_run
from subprocess_env import cpu_env

from neoscale.presets import model_config
from neoscale.sharding import make_mesh, sharding_context
from neoscale.training import loop as loop_lib
from neoscale.training.checkpoint import Checkpointer
from neoscale.training.hparams import gpt3_hparams, hparams_for, learning_rate_for, warmup_steps
from neoscale.training.metrics import read_metrics
from neoscale.training.optimizer import make_optimizer, make_schedule, weight_decay_mask
from neoscale.training.state import ModelParams
from neoscale.training.step import global_batch, grads_and_metrics, make_evaluate, stack_batches
from neoscale.training.synthetic import SyntheticData

TINY = dict(size="w32d2h2", data="synthetic", vocab_size=64, model_overrides={"max_positions": 16},
            batch_size=8, seq_len=16, learning_rate=1e-2, heldout_tokens=256, tensorboard=False)


def test_hparams_reproduce_the_gpt3_table_and_interpolate():
    assert gpt3_hparams(85_028_352).peak_learning_rate == pytest.approx(6e-4)
    assert gpt3_hparams(1_208_455_168).batch_tokens == 2**20
    mid = gpt3_hparams(int(math.sqrt(85_028_352 * 302_237_696))).peak_learning_rate
    assert mid == pytest.approx(math.sqrt(6e-4 * 3e-4))  # log-log midpoint
    assert gpt3_hparams(100_000).peak_learning_rate > 6e-4  # smaller models: larger steps
    assert warmup_steps(gpt3_hparams(100_000), 4096, 1000) == 100  # capped at 10% of the run


def test_learning_rate_scales_with_the_square_root_of_a_smaller_batch():
    hp = gpt3_hparams(85_028_352)  # 125M: 6e-4 at 2^19 tokens
    assert learning_rate_for(hp, 2**19) == pytest.approx(6e-4)
    assert learning_rate_for(hp, 2**17) == pytest.approx(3e-4)  # a quarter of the batch: half
    assert learning_rate_for(hp, 2**21) == pytest.approx(6e-4)  # never above the table's
    config = flat_run(workdir="unused", **{**TINY, "learning_rate": None})  # 8 x 16 tokens
    gpt_neo_125m = model_config("125M")  # the table's anchor: 6e-4 at 2^19 tokens
    resolved = loop_lib.resolve(config, gpt_neo_125m, batch_multiple=8)
    assert resolved.learning_rate == pytest.approx(6e-4 * math.sqrt(128 / 2**19))
    assert resolved.eval_batch_size == 8  # the training micro-batch
    assert loop_lib.resolve(config.replace(micro_batches=2), gpt_neo_125m, 2).eval_batch_size == 4


def test_one_resolver_serves_the_planner_and_a_single_run():
    """neoscale.train with a learning-rate law trains at the rate the study's plan gives the size."""
    from neoscale.runner.plan import Budget, make_plan

    law = (5.91, -0.606)
    model = model_config("w64d4h2", vocab_size=512)
    planned = make_plan(["w64d4h2"], Budget("steps", (20.0,)), vocab_size=512, seq_len=16,
                        train=ml_collections.ConfigDict({"batch_size": 8, "learning_rate_law": law}))[0]
    config = flat_run(workdir="unused", size="w64d4h2", steps=20, batch_size=8, seq_len=16,
                       learning_rate_law=law)
    resolved = loop_lib.resolve(config, model, batch_multiple=8)
    assert resolved.learning_rate == pytest.approx(planned.learning_rate)
    assert resolved.learning_rate == pytest.approx(5.91 * planned.params_active ** -0.606)
    assert resolved.warmup_steps == planned.warmup_steps
    with pytest.raises(ValueError, match="positive multiple of 8"):
        loop_lib.resolve(config.replace(batch_size=12), model, batch_multiple=8)


# (count of updates done before, learning rate): optax evaluates the schedule at the count, so
# count k is update k + 1 (the step the loop logs).
@pytest.mark.parametrize("args, expected", [
    # warmup 4 of 10 steps: 1/4 at the first update, the peak at the 4th, the floor at the 10th.
    (("cosine", 1.0, 10, 4), {0: 0.25, 2: 0.75, 3: 1.0, 4: 0.55 + 0.45 * math.cos(math.pi / 6),
                              8: 0.1 + 0.45 * (1 + math.cos(5 * math.pi / 6)), 9: 0.1, 12: 0.1}),
    (("cosine", 2.0, 5, 0), {0: 0.2 + 0.9 * (1 + math.cos(math.pi / 5)), 4: 0.2}),
    # wsd: warmup 2, stable to update 6, linear cooldown over updates 7..10, 0 at the 10th.
    (("wsd", 1.0, 10, 2, 4), {0: 0.5, 1: 1.0, 5: 1.0, 6: 0.75, 7: 0.5, 8: 0.25, 9: 0.0}),
    (("wsd", 1.0, 10, 0, 4, "1-sqrt"), {0: 1.0, 5: 1.0, 6: 0.5, 7: 1 - math.sqrt(0.5), 9: 0.0}),
    (("constant", 3.0, 10, 3, 4), {0: 1.0, 1: 2.0, 2: 3.0, 9: 3.0}),
])
def test_schedule_values_at_first_last_and_boundary_updates(args, expected):
    schedule = make_schedule(*args)
    assert {k: float(schedule(k)) for k in expected} == pytest.approx(expected, abs=1e-6)


def test_wsd_branch_follows_the_constant_trunk_up_to_its_fork():
    trunk = make_schedule("constant", 1.0, 100, 10)
    branch = make_schedule("wsd", 1.0, 60, 10, cooldown_steps=20)  # forked at step 40
    assert [float(branch(k)) for k in range(40)] == [float(trunk(k)) for k in range(40)]
    assert float(branch(40)) < 1.0 and float(branch(59)) == 0.0


def test_schedule_errors():
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("step", 1.0, 10, 1)
    with pytest.raises(ValueError, match="does not fit"):
        make_schedule("wsd", 1.0, 10, 5, cooldown_steps=6)


def test_first_update_moves_the_parameters():
    params = {"w": jnp.ones((2, 2))}
    optimizer = make_optimizer(make_schedule("cosine", 1e-2, 100, 10), {"w": True})
    updates, _ = optimizer.update({"w": jnp.ones((2, 2))}, optimizer.init(params), params)
    # Adam's first step is lr * sign(g) (plus decoupled weight decay lr * wd * w).
    np.testing.assert_allclose(updates["w"], -1e-3 * (1 + 0.1), rtol=1e-5)


def test_weight_decay_mask_skips_norms_biases_embeddings():
    specs = {"wte": P("vocab", "embed"), "wpe": P("positions", "embed"),
             "ln/scale": P("layers", "norm"), "fc_bias": P("layers", "mlp"),
             "b_in": P("layers", "expert", "mlp"), "fc": P("layers", "embed", "mlp"),
             "lm_head": P("embed", "vocab"), "w_in": P("layers", "expert", "embed", "mlp")}
    mask = weight_decay_mask(specs)
    assert [k for k, v in mask.items() if v] == ["fc", "lm_head", "w_in"]
    assert weight_decay_mask(specs, decay_embeddings=True)["wte"]


RUN = dict(steps=6, log_every=2, eval_every=3, checkpoint_every=3, **TINY)
VOLATILE = ("wall_seconds", "tokens_per_sec", "mfu")  # timings


class Crash(RuntimeError):
    pass


def _crash_at(step: int):
    def on_eval(point):
        if point.step == step:
            raise Crash(f"crash at step {step}")
    return on_eval


def _rows(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_metrics(run_dir)]


def _final_params(run_dir) -> dict[str, np.ndarray]:
    """The parameters of a run's newest checkpoint, as numpy arrays."""
    checkpoints = Checkpointer(run_dir / "checkpoints", save_every=1, keep=1, read_only=True)
    step = checkpoints.latest_step()
    restored = checkpoints.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))
    checkpoints.close()
    return {name: np.asarray(value) for name, value in restored["state"]["params"].items()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(config, result, eval points) of a finished 6-step run."""
    config = flat_run(workdir=str(tmp_path_factory.mktemp("finished") / "run"), **RUN)
    points = []
    result = loop_lib.train(config, on_eval=points.append)
    return config, result, points


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The same run crashed at step 6 (before its final checkpoint): checkpoint 3, rows to 4."""
    run_dir = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(Crash):
        loop_lib.train(flat_run(workdir=str(run_dir), **RUN), on_eval=_crash_at(6))
    return run_dir


def test_train_writes_metrics_and_skips_finished(finished):
    config, result, points = finished
    run_dir = epath.Path(config.workdir)
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [2, 3, 4, 6]
    for key in ("loss", "tokens", "flops", "learning_rate", "grad_norm", "tokens_per_sec"):
        assert key in records[-1]
    assert records[-1]["tokens"] == 6 * 8 * 16
    assert records[-1]["learning_rate"] == pytest.approx(0.1 * 1e-2)  # cosine floor, last step
    assert "eval_loss" in records[1] and "eval_loss" in records[-1]
    assert [p.step for p in points] == [3, 6] == [p.step for p in result.eval_points]
    assert result.eval_loss == records[-1]["eval_loss"] and math.isfinite(result.eval_loss)
    resolved = json.loads((run_dir / "config.json").read_text())["resolved"]
    assert resolved["batch_size"] == 8 and resolved["eval_batch_size"] == 8
    # Cadence and layout may change; the finished result is returned without training.
    again = loop_lib.train(config.replace(log_every=1, eval_every=2, checkpoint_every=1,
                                          keep_checkpoints=1, mesh="data:2,fsdp:4",
                                          eval_batch_size=16, tensorboard=True))
    assert again.skipped and again.eval_loss == result.eval_loss
    assert [r["step"] for r in read_metrics(run_dir)] == [2, 3, 4, 6]


def test_evaluation_is_the_mean_over_the_heldout_tokens_whatever_the_micro_batch(finished):
    config, result, _ = finished
    data = SyntheticData(64, 16, heldout_tokens=256)  # 16 sequences
    model_params = ModelParams(model_config("w32d2h2", vocab_size=64, max_positions=16), 0)
    params = _final_params(epath.Path(config.workdir))
    mesh = make_mesh("data:2,fsdp:4")
    evaluate = make_evaluate(model_params, mesh, model_params.shardings(mesh))
    by_hand = []
    for batch in data.eval_batches(16):
        logits, _ = model_params.merge(params)(jnp.asarray(batch["inputs"]))
        by_hand.append(optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), jnp.asarray(batch["targets"])))
    expected = float(jnp.concatenate(by_hand).mean())
    for eval_batch_size in (8, 16, 24):  # 24: a second batch of padding rows, masked
        heldout = stack_batches(data.eval_batches(eval_batch_size), mesh)
        assert heldout["inputs"].shape == (-(-16 // eval_batch_size), eval_batch_size, 16)
        assert float(evaluate(params, heldout)) == pytest.approx(expected, rel=1e-5)
    assert result.eval_loss == pytest.approx(expected, rel=1e-5)


def test_interrupted_run_resumes_to_the_uninterrupted_result_bit_for_bit(finished, interrupted,
                                                                       tmp_path):
    config, result, _ = finished
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted, run_dir)
    assert [r["step"] for r in read_metrics(run_dir)] == [2, 3, 4]  # 4 is past checkpoint 3
    resumed = loop_lib.train(config.replace(workdir=str(run_dir), checkpoint_every=2,
                                            async_checkpoints=False))
    assert not resumed.skipped
    assert _rows(run_dir) == _rows(config.workdir)  # row 4 recomputed, not duplicated
    assert [(p.step, p.train_loss, p.eval_loss) for p in resumed.eval_points] == [
        (p.step, p.train_loss, p.eval_loss) for p in result.eval_points]
    ours, theirs = _final_params(run_dir), _final_params(epath.Path(config.workdir))
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


CHANGES = [
    ("steps", {"steps": 7}), ("learning_rate", {"learning_rate": 2e-2}),
    ("schedule", {"schedule": "wsd"}), ("warmup_steps", {"warmup_steps": 2}),
    ("cooldown_fraction", {"cooldown_fraction": 0.5}), ("cooldown_steps", {"cooldown_steps": 2}),
    ("weight_decay", {"weight_decay": 0.0}), ("data.heldout_tokens", {"heldout_tokens": 512}),
    ("data.max_documents", {"max_documents": 10}), ("data.tfds_split", {"tfds_split": "validation"}),
    ("resolved.batch_size", {"batch_size": 16}), ("seed", {"seed": 1}),
    ("data.seed", {"data_seed": 1}), ("model.max_positions", {"model_overrides": {
        "max_positions": 32}}),
]


@pytest.mark.parametrize("field, change", CHANGES, ids=[c[0] for c in CHANGES])
@pytest.mark.parametrize("which", ["finished", "interrupted"])
def test_changed_settings_are_refused_on_reuse(finished, interrupted, which, field, change):
    run_dir = epath.Path(finished[0].workdir) if which == "finished" else interrupted
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(ValueError) as info:
        loop_lib.train(flat_run(workdir=str(run_dir), **{**RUN, **change}))
    message = str(info.value)
    assert "\n" not in message and "use a new --workdir, or the same settings" in message
    assert re.search(rf"[(, ]{re.escape(field)} \S+ -> \S+", message), message
    assert ("reuse its result" if which == "finished" else "resume it") in message
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_refusal_names_old_and_new_values(finished):
    with pytest.raises(ValueError, match=r"\(learning_rate 0.01 -> 0.02, resolved.learning_rate "
                                         r"0.01 -> 0.02, steps 6 -> 8\)"):
        loop_lib.train(finished[0].replace(steps=8, learning_rate=2e-2))


def test_restart_without_a_checkpoint_starts_over_and_drops_stale_metrics(tmp_path):
    config = flat_run(workdir=str(tmp_path / "run"), **{
        **RUN, "steps": 3, "log_every": 1, "eval_every": 2, "checkpoint_every": 100})
    with pytest.raises(Crash):
        loop_lib.train(config, on_eval=_crash_at(2))
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1]
    assert not list((tmp_path / "run" / "checkpoints").iterdir())
    # Nothing to reuse, so other settings are fine: the run starts over.
    result = loop_lib.train(config.replace(learning_rate=2e-2))
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3] and result.step == 3
    assert records[0]["learning_rate"] == pytest.approx(2e-2)  # one warmup step: the peak


def test_gradient_accumulation_matches_one_batch():
    model_params = ModelParams(model_config("w32d2h2", vocab_size=64, max_positions=16), 0)
    mesh = make_mesh("data:2,fsdp:4")
    params = jax.device_put(model_params.init(), model_params.shardings(mesh))
    batch = global_batch(next(SyntheticData(64, 16).train_iterator(16)), mesh)
    results = {}
    for micro_batches in (1, 2):
        with sharding_context(mesh):
            results[micro_batches] = jax.jit(
                lambda p, b, m=micro_batches: grads_and_metrics(p, model_params, b, m))(
                    params, batch)
    grads, metrics = results[1]
    assert max(float(jnp.abs(g).max()) for g in grads.values()) > 1e-3  # not trivially zero
    accumulated_grads, accumulated_metrics = results[2]
    assert float(accumulated_metrics["loss"]) == pytest.approx(float(metrics["loss"]), abs=1e-6)
    for name in grads:
        np.testing.assert_allclose(accumulated_grads[name], grads[name], atol=1e-6, rtol=1e-5,
                                   err_msg=name)


def test_nan_learning_rate_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                           monkeypatch):
    real = loop_lib.make_schedule

    def poisoned(*args, **kwargs):
        schedule = real(*args, **kwargs)
        return lambda step: schedule(step) * jnp.where(step == 4, jnp.nan, 1.0)  # step 5

    monkeypatch.setattr(loop_lib, "make_schedule", poisoned)
    config = flat_run(workdir=str(tmp_path / "run"), steps=8, log_every=4, eval_every=100,
                       checkpoint_every=2, **TINY)
    with pytest.raises(loop_lib.NonFiniteLossError, match="non-finite .* at step 5") as info:
        loop_lib.train(config)
    assert "\n" not in str(info.value)
    steps = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert steps and max(steps) == 4
    assert not (tmp_path / "run" / "finished.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args, fragment", [
    (["--size=bogus"], "unknown model size 'bogus'"),
    (["--size=w32d2h2", "--mesh=data:3"], "bad mesh 'data:3'"),
    (["--size=w32d2h2", "--workdir={file}/sub"], "cannot write to workdir"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, fragment):
    (tmp_path / "file").write_text("not a directory")
    args = [a.replace("{file}", str(tmp_path / "file")) for a in args]
    if not any(a.startswith("--workdir") for a in args):
        args.append(f"--workdir={tmp_path / 'run'}")
    proc = subprocess.run([sys.executable, "-m", "neoscale.train", "--data=synthetic", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0]
    assert "Traceback" not in proc.stderr


def test_moe_hparams_follow_active_parameters():
    dense = hparams_for(model_config("w256d4h4", vocab_size=1000))
    top1 = hparams_for(model_config("w256d4h4e8k1", vocab_size=1000))  # + router weights only
    top2 = hparams_for(model_config("w256d4h4e8k2", vocab_size=1000))
    assert top1.peak_learning_rate == pytest.approx(dense.peak_learning_rate, rel=0.01)
    assert top2.peak_learning_rate < top1.peak_learning_rate


@pytest.mark.slow
@pytest.mark.parametrize("mesh, eval_every", [("fsdp:8", 3), ("data:2,fsdp:2,tensor:2", 1000)])
def test_cli_evaluates_on_8_devices(tmp_path, mesh, eval_every):
    """The CLI as a user runs it on 8 (fake) devices, evaluating mid-run and at the end: one
    evaluation program over the whole held-out set (many collective programs in flight
    deadlocked XLA's CPU rendezvous)."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "neoscale.train", "--size=w64d2h4", f"--workdir={run_dir}",
         "--steps=6", "--batch_size=8", "--seq_len=32", f"--mesh={mesh}",
         f"--eval_every={eval_every}", "--data=synthetic"],
        env=cpu_env(device_count=8), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    evals = [r for r in read_metrics(run_dir) if "eval_loss" in r]
    assert [r["step"] for r in evals] == ([3, 6] if eval_every == 3 else [6])
    assert result["eval_loss"] == evals[-1]["eval_loss"] and 0 < result["eval_loss"] < 10
