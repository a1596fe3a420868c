"""μP and CompleteP rules (neoscale.model.parametrization) and the optimizer's per-parameter multipliers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from run_configs import flat_run

from neoscale.model import GPTNeo, ModelConfig, parametrization
from neoscale.training.optimizer import make_optimizer, weight_decay_mask
from neoscale.training.state import ModelParams


def tiny(**changes) -> ModelConfig:
    fields = dict(vocab_size=64, max_positions=16, d_model=32, num_layers=2, num_heads=2,
                  window_size=4, base_d_model=32, base_num_layers=2)
    return ModelConfig(**{**fields, **changes})


def test_sp_is_the_released_model():
    config = tiny(d_model=128, num_layers=8)
    assert parametrization.attention_scale(config) == 1.0
    assert parametrization.readout_multiplier(config) == 1.0
    assert parametrization.residual_multiplier(config) == 1.0
    for kind in ("embedding", "hidden", "router", "readout", "query"):
        assert parametrization.init_std(config, kind) == config.init_std
    assert parametrization.adam_multipliers(config, ModelParams(config, 0).logical_specs) is None


def test_kinds_of_every_parameter():
    config = tiny(num_experts=2, tie_embeddings=False)
    specs = ModelParams(config, 0).logical_specs
    kinds = {name: parametrization.param_kind(name, spec) for name, spec in specs.items()}
    assert kinds["wte"] == kinds["wpe"] == "embedding"
    assert kinds["lm_head"] == "readout"
    assert kinds["ln_f/scale"] == kinds["ln_f/bias"] == "vector"
    block = {name.split("/", 3)[-1]: kind for name, kind in kinds.items() if name.startswith("groups/")}
    assert block["ln_1/scale"] == block["attn/out_bias"] == block["mlp/b_in"] == "block_vector"
    for name in ("attn/q_proj", "attn/out_proj", "mlp/w_in", "mlp/w_out"):
        assert block[name] == "hidden", name
    assert block["mlp/router"] == "router"
    assert set(kinds.values()) == set(parametrization.KINDS)


def test_mup_rules_at_four_times_the_base_width():
    config = tiny(parametrization="mup", d_model=128, num_layers=8)  # 4x width; depth ignored
    assert parametrization.width_mult(config) == 4.0 and parametrization.depth_mult(config) == 1.0
    assert parametrization.readout_multiplier(config) == 0.25
    assert parametrization.attention_scale(config) == pytest.approx(16 / 64)  # base_head_dim / head_dim
    assert parametrization.init_std(config, "hidden") == pytest.approx(0.01)
    assert parametrization.init_std(config, "router") == pytest.approx(0.005)
    assert parametrization.init_std(config, "query") == 0.0
    assert parametrization.adam_rule(config, "hidden") == (0.25, 0.25)
    assert parametrization.adam_rule(config, "embedding") == (1.0, 1.0)
    assert parametrization.adam_rule(config, "block_vector") == (1.0, 1.0)
    assert parametrization.residual_multiplier(config) == 1.0
    # a ladder that adds heads of a fixed size needs no attention multiplier
    assert parametrization.attention_scale(config.replace(base_head_dim=64)) == 1.0


def test_mup_base_multipliers_scale_from_the_base():
    """output_multiplier α_out and hidden_init_std σ_base: the base's values, scaled by μP's rules."""
    config = tiny(parametrization="mup", d_model=128, output_multiplier=4.0, hidden_init_std=0.08)
    assert parametrization.readout_multiplier(config) == pytest.approx(4.0 / 4)
    assert parametrization.init_std(config, "hidden") == pytest.approx(0.08 / 2)
    assert parametrization.init_std(config, "embedding") == 0.02  # init_std, unchanged
    base = config.replace(d_model=32)
    assert parametrization.readout_multiplier(base) == 4.0
    assert parametrization.init_std(base, "hidden") == pytest.approx(0.08)
    with pytest.raises(ValueError, match="μP's base hyper-parameters"):
        tiny(output_multiplier=2.0)  # sp stays GPT-Neo as released
    with pytest.raises(ValueError, match="must be positive"):
        tiny(parametrization="mup", hidden_init_std=0.0)


def test_completep_rules_at_four_times_the_base_depth():
    config = tiny(parametrization="completep", d_model=64, num_layers=8)
    assert parametrization.residual_multiplier(config) == 0.25  # (base_depth / depth)^1
    lr, eps = parametrization.adam_rule(config, "hidden")
    assert lr == pytest.approx(0.5) and eps == pytest.approx(1 / (2 * 4))
    assert parametrization.adam_rule(config, "block_vector") == (1.0, 0.25)
    assert parametrization.adam_rule(config, "vector") == (1.0, 1.0)


def test_mup_at_its_base_size_is_sp_but_for_the_zero_query():
    tokens = jnp.arange(2 * 16).reshape(2, 16) % 64
    sp = GPTNeo(tiny(), rngs=nnx.Rngs(0))
    mup = GPTNeo(tiny(parametrization="completep"), rngs=nnx.Rngs(0))
    assert not np.any(np.asarray(mup.groups.blocks[0].attn.q_proj[...]))
    sp.groups.blocks[0].attn.q_proj[...] = jnp.zeros_like(sp.groups.blocks[0].attn.q_proj[...])
    sp.groups.blocks[1].attn.q_proj[...] = jnp.zeros_like(sp.groups.blocks[1].attn.q_proj[...])
    np.testing.assert_allclose(np.asarray(mup(tokens)[0]), np.asarray(sp(tokens)[0]), rtol=1e-6)


def test_residual_and_readout_multipliers_change_the_forward_pass():
    tokens = jnp.arange(2 * 16).reshape(2, 16) % 64
    deep = tiny(parametrization="completep", num_layers=4)
    a = GPTNeo(deep, rngs=nnx.Rngs(0))(tokens)[0]
    b = GPTNeo(deep.replace(parametrization="mup"), rngs=nnx.Rngs(0))(tokens)[0]
    assert not np.allclose(np.asarray(a), np.asarray(b))
    wide = tiny(parametrization="mup", d_model=64)
    model = GPTNeo(wide, rngs=nnx.Rngs(0))
    hidden, _ = model.hidden(tokens)
    np.testing.assert_allclose(np.asarray(model(tokens)[0]),
                               np.asarray(hidden @ model.wte[...].T / 2), rtol=1e-5, atol=1e-6)


def _one_update(multipliers, grads, params, weight_decay):
    opt = make_optimizer(optax.constant_schedule(0.1), {"w": True, "v": True}, weight_decay=weight_decay,
                         multipliers=multipliers)
    updates, _ = opt.update(grads, opt.init(params), params)
    return {k: np.asarray(u) for k, u in updates.items()}


def test_optimizer_multipliers_scale_adam_not_the_decay():
    params = {"w": jnp.ones((3, 3)), "v": jnp.full((3,), 2.0)}
    grads = {"w": jnp.full((3, 3), 0.01), "v": jnp.full((3,), -0.02)}
    plain = _one_update(None, grads, params, 0.0)
    ones = _one_update({"w": (1.0, 1.0), "v": (1.0, 1.0)}, grads, params, 0.0)
    for k in plain:
        np.testing.assert_allclose(ones[k], plain[k], rtol=1e-6)
    scaled = _one_update({"w": (0.25, 1.0), "v": (1.0, 1.0)}, grads, params, 0.0)
    np.testing.assert_allclose(scaled["w"], 0.25 * plain["w"], rtol=1e-6)
    np.testing.assert_allclose(scaled["v"], plain["v"], rtol=1e-6)
    zero = {k: jnp.zeros_like(g) for k, g in grads.items()}  # decay only: -lr * wd * p for any μ
    decay = _one_update({"w": (0.25, 1.0), "v": (4.0, 1.0)}, zero, params, 0.1)
    np.testing.assert_allclose(decay["w"], -0.1 * 0.1 * np.ones((3, 3)), rtol=1e-6)
    np.testing.assert_allclose(decay["v"], -0.1 * 0.1 * 2.0 * np.ones(3), rtol=1e-6)


def test_eps_multiplier_is_adams_eps():
    params = {"w": jnp.ones(3), "v": jnp.ones(3)}
    grads = {"w": jnp.full(3, 1e-3), "v": jnp.full(3, 1e-3)}
    opt = make_optimizer(optax.constant_schedule(1.0), {"w": False, "v": False}, eps=1e-3,
                         multipliers={"w": (1.0, 0.5), "v": (1.0, 1.0)})
    updates, _ = opt.update(grads, opt.init(params), params)
    # first Adam step: m / (sqrt(v) + eps) with m, sqrt(v) = |g| after bias correction
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-3 / (1e-3 + 0.5e-3), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(updates["v"]), -1e-3 / (1e-3 + 1e-3), rtol=1e-5)


def test_train_state_shardings_with_multipliers():
    config = tiny(parametrization="mup", d_model=64)
    model_params = ModelParams(config, 0)
    multipliers = parametrization.adam_multipliers(config, model_params.logical_specs)
    assert multipliers["groups/blocks/0/mlp/fc"] == (0.5, 0.5) and multipliers["wte"] == (1.0, 1.0)
    opt = make_optimizer(optax.constant_schedule(1e-3), weight_decay_mask(model_params.logical_specs),
                         multipliers=multipliers)
    from neoscale.sharding import make_mesh
    from neoscale.training.state import create_train_state

    state = create_train_state(model_params, opt, make_mesh("fsdp:2,tensor:2", devices=jax.devices()[:4]))
    assert set(state.params) == set(multipliers)


def test_bad_parametrization_is_one_line():
    with pytest.raises(ValueError, match="parametrization='mu'; valid: sp, mup, completep"):
        tiny(parametrization="mu")
    with pytest.raises(ValueError, match="base_d_model must be a positive"):
        tiny(base_d_model=0)


@pytest.mark.slow
def test_a_mup_run_trains_and_uses_the_multipliers(tmp_path):
    from neoscale.training import loop

    common = dict(size="w64d2h2", data="synthetic", vocab_size=64, batch_size=8, seq_len=16,
                  learning_rate=1e-2, heldout_tokens=256, tensorboard=False, steps=4, log_every=2,
                  eval_every=4, checkpoint_every=4)
    losses = {}
    for name in ("sp", "mup"):
        overrides = {"max_positions": 16, "parametrization": name, "base_d_model": 32}
        result = loop.train(flat_run(workdir=str(tmp_path / name), model_overrides=overrides, **common))
        losses[name] = result.eval_loss
    assert all(np.isfinite(v) for v in losses.values())
    assert losses["sp"] != losses["mup"]  # the parametrization reached the model and the optimizer


TUNE = ["--sizes=w32d2h2,w64d2h2", "--steps=30", "--config.model.parametrization=mup",
        "--config.model.base_d_model=32", "--config.tune.size=w32d2h2", "--config.tune.log2_rates=-9,-7,-5",
        "--config.data.tokenizer=train:512", "--config.data.seq_len=64", "--config.data.heldout_tokens=4096",
        "--config.train.batch_size=8", "--config.train.evals_per_run=3",
        "--config.train.checkpoints_per_run=3",
        "--config.train.tensorboard=False", "--config.fit.n_bootstrap=20", "--cooldowns="]


def _study(workdir, *extra):
    import subprocess
    import sys

    from subprocess_env import cpu_env

    return subprocess.run([sys.executable, "-m", "neoscale.run", f"--workdir={workdir}", *TUNE, *extra],
                          capture_output=True, text=True, timeout=1200, env=cpu_env(device_count=None))


@pytest.mark.slow
def test_tune_at_the_base_size_then_transfer(tmp_path):
    import json

    dry = _study(tmp_path / "study", "--dry_run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "learning rate: tuned at w32d2h2 (3 runs of 30 steps" in dry.stdout
    assert not (tmp_path / "study" / "tune").exists()  # a dry run trains nothing

    done = _study(tmp_path / "study")
    assert done.returncode == 0, done.stderr[-2000:]
    (sweep_dir,) = (tmp_path / "study" / "tune").iterdir()
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert len(sweep["losses"]) == 3 and sweep["best_learning_rate"] in (2**-9, 2**-7, 2**-5)
    assert sweep["best_learning_rate"] == 2.0 ** min(
        (-9, -7, -5), key=lambda k: sweep["losses"][f"{2.0 ** k:.6g}"])
    for run in ("w32d2h2_S30", "w64d2h2_S30"):  # every size at the transferred rate
        config = json.loads((tmp_path / "study" / "runs" / run / "config.json").read_text())
        assert config["resolved"]["learning_rate"] == sweep["best_learning_rate"], run

    # a second study with the same base reuses the sweep: nothing of it is trained again
    finished = {p: p.stat().st_mtime for p in sweep_dir.glob("*/finished.json")}
    assert len(finished) == 3
    again = _study(tmp_path / "other", f"--config.tune.dir={tmp_path / 'study' / 'tune'}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime for p in sweep_dir.glob("*/finished.json")} == finished
    assert json.loads((sweep_dir / "sweep.json").read_text()) == sweep


def test_tuning_an_sp_study_is_refused_in_one_line(tmp_path):
    result = _study(tmp_path, "--dry_run", "--config.model.parametrization=sp")
    assert result.returncode != 0
    assert "tune.size='w32d2h2' transfers a rate, which only μP does" in result.stderr


@pytest.mark.slow
def test_tune_sweeps_mup_base_multipliers_with_the_rate(tmp_path):
    """tune.output_multipliers: the grid of rates x base output multipliers at the base size; the
    best point sets the rate and model.output_multiplier of every size."""
    import json

    grid = ["--config.tune.log2_rates=-7,-5", "--config.tune.output_multipliers=1,4"]
    dry = _study(tmp_path / "study", "--dry_run", *grid)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "(4 runs of 30 steps, rates 2^k for k in -7,-5 x output_multipliers 1,4)" in dry.stdout
    done = _study(tmp_path / "study", *grid)
    assert done.returncode == 0, done.stderr[-2000:]
    (sweep_dir,) = (tmp_path / "study" / "tune").iterdir()
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sorted(sweep["losses"]) == sorted(f"{2.0 ** k:.6g} output_multiplier={m}"
                                             for k in (-7, -5) for m in (1, 4))
    best_key = min(sweep["losses"], key=sweep["losses"].get)
    best = sweep["best_point"]
    assert best_key == f"{best['learning_rate']:.6g} output_multiplier={best['output_multiplier']:g}"
    assert {p.name for p in sweep_dir.iterdir() if p.is_dir()} == {
        "lr2^-7_out1", "lr2^-7_out4", "lr2^-5_out1", "lr2^-5_out4"}
    for run in ("w32d2h2_S30", "w64d2h2_S30"):
        config = json.loads((tmp_path / "study" / "runs" / run / "config.json").read_text())
        assert config["resolved"]["learning_rate"] == best["learning_rate"], run
        assert config["run"]["model"]["output_multiplier"] == best["output_multiplier"], run


def test_a_bad_tune_grid_is_one_line(tmp_path):
    result = _study(tmp_path, "--dry_run", "--config.tune.hidden_init_stds=0.02,-1")
    assert result.returncode != 0
    assert "tune.hidden_init_stds='0.02,-1': give comma-separated positive numbers" in result.stderr
