"""Hyper-parameter rule, schedules, weight-decay mask, and the loop end to end (synthetic data)."""

import json
import math
import subprocess
import sys

import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from neoscale.presets import model_config
from neoscale.training import loop as loop_lib
from neoscale.training.config import RunConfig
from neoscale.training.hparams import gpt3_hparams, hparams_for, warmup_steps
from neoscale.training.metrics import read_metrics
from neoscale.training.optimizer import make_schedule, weight_decay_mask

TINY = dict(size="w32d2h2", data="synthetic", vocab_size=64, model_overrides={"max_positions": 16},
            batch_size=8, seq_len=16, learning_rate=1e-2, heldout_tokens=256, tensorboard=False)


def test_hparams_reproduce_the_gpt3_table_and_interpolate():
    assert gpt3_hparams(85_028_352).peak_learning_rate == pytest.approx(6e-4)
    assert gpt3_hparams(1_208_455_168).batch_tokens == 2**20
    mid = gpt3_hparams(int(math.sqrt(85_028_352 * 302_237_696))).peak_learning_rate
    assert mid == pytest.approx(math.sqrt(6e-4 * 3e-4))  # log-log midpoint
    assert gpt3_hparams(100_000).peak_learning_rate > 6e-4  # smaller models: larger steps
    assert warmup_steps(gpt3_hparams(100_000), 4096, 1000) == 100  # capped at 10% of the run


def test_schedules():
    wsd = make_schedule("wsd", 1.0, 100, 10, cooldown_steps=20, cooldown_shape="1-sqrt")
    assert [float(wsd(s)) for s in (0, 5, 10, 79, 80)] == pytest.approx([0, .5, 1, 1, 1])
    assert float(wsd(85)) == pytest.approx(1 - math.sqrt(0.25))
    cosine = make_schedule("cosine", 1.0, 100, 10)
    assert float(cosine(100)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("step", 1.0, 10, 1)


def test_weight_decay_mask_skips_norms_biases_embeddings():
    specs = {"wte": P("vocab", "embed"), "wpe": P("positions", "embed"),
             "ln/scale": P("layers", "norm"), "fc_bias": P("layers", "mlp"),
             "b_in": P("layers", "expert", "mlp"), "fc": P("layers", "embed", "mlp"),
             "lm_head": P("embed", "vocab"), "w_in": P("layers", "expert", "embed", "mlp")}
    mask = weight_decay_mask(specs)
    assert [k for k, v in mask.items() if v] == ["fc", "lm_head", "w_in"]
    assert weight_decay_mask(specs, decay_embeddings=True)["wte"]


def test_train_writes_metrics_resumes_and_skips_finished(tmp_path):
    config = RunConfig(workdir=str(tmp_path / "run"), steps=6, log_every=2, eval_every=3,
                       checkpoint_every=3, **TINY)
    points = []
    result = loop_lib.train(config, on_eval=points.append)
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [2, 3, 4, 6]
    for key in ("loss", "tokens", "flops", "learning_rate", "grad_norm", "tokens_per_sec"):
        assert key in records[-1]
    assert records[-1]["tokens"] == 6 * 8 * 16
    assert "eval_loss" in records[1] and "eval_loss" in records[-1]
    assert [p.step for p in points] == [3, 6] == [p.step for p in result.eval_points]
    assert result.eval_loss == records[-1]["eval_loss"] and math.isfinite(result.eval_loss)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resolved"][
        "batch_size"] == 8
    assert loop_lib.train(config).skipped
    # Same seed and configuration: the same losses (a fresh run directory).
    again = loop_lib.train(config.replace(workdir=str(tmp_path / "again")))
    assert [p.eval_loss for p in again.eval_points] == [p.eval_loss for p in points]


def test_nan_learning_rate_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                           monkeypatch):
    real = loop_lib.make_schedule

    def poisoned(*args, **kwargs):
        schedule = real(*args, **kwargs)
        return lambda step: schedule(step) * jnp.where(step == 4, jnp.nan, 1.0)  # step 5

    monkeypatch.setattr(loop_lib, "make_schedule", poisoned)
    config = RunConfig(workdir=str(tmp_path / "run"), steps=8, log_every=4, eval_every=100,
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
