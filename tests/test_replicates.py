"""Replicate seeds and token arms in the planner and the runner (neoscale.runner.plan)."""

import pandas as pd
import pytest
from etils import epath

from neoscale.runner import plan as plan_lib
from neoscale.runner import results, study
from neoscale.runner.config import base_config


def _train():
    train = base_config().train
    train.batch_size = 8
    train.seed = 5
    return train


def test_replicates_are_their_own_runs_with_their_own_model_seeds():
    sizes = ["w32d2h2", "w32d2h2e8k1"]
    replicates = plan_lib.parse_replicates("w32d2h2e8k1:3", sizes, seeds=2)
    assert replicates == {"w32d2h2": 2, "w32d2h2e8k1": 3}
    runs = plan_lib.make_plan(sizes, plan_lib.parse_budget(tokens_per_param="3,30"), vocab_size=512,
                              seq_len=64, train=_train(), replicates=replicates)
    assert [r.name for r in runs] == [
        "w32d2h2_tpp3", "w32d2h2-seed1_tpp3", "w32d2h2e8k1_tpp3", "w32d2h2e8k1-seed1_tpp3",
        "w32d2h2e8k1-seed2_tpp3", "w32d2h2_tpp30", "w32d2h2-seed1_tpp30", "w32d2h2e8k1_tpp30",
        "w32d2h2e8k1-seed1_tpp30", "w32d2h2e8k1-seed2_tpp30"]
    assert [r.seed for r in runs[:5]] == [5, 6, 5, 6, 7]  # train.seed + replicate
    assert runs[0].tokens == runs[1].tokens and runs[5].tokens == pytest.approx(10 * runs[0].tokens,
                                                                                rel=0.01)
    config = base_config()
    config.train.seed = 5
    configs = [study.run_config(r, config, epath.Path("/tmp/w"), "/tmp/c") for r in runs[:2]]
    assert [c.seed for c in configs] == [5, 6]
    assert configs[0].data.seed == configs[1].data.seed  # the held-out set and data order shared
    assert [results.run_columns(r)["seed"] for r in runs[:2]] == [5, 6]


@pytest.mark.parametrize("spec, seeds, message", [
    ("w32d2h2:0", 1, "bad replicates entry"), ("w32:2", 1, "not among the sizes"),
    ("w32d2h2", 1, "bad replicates entry"), ("", 0, "--seeds=0")])
def test_bad_replicates(spec, seeds, message):
    with pytest.raises(ValueError, match=message):
        plan_lib.parse_replicates(spec, ["w32d2h2"], seeds)


def test_a_plan_from_before_seeds_keeps_its_settings():
    """plan.json written before replicates: no seed field, the study's train.seed is used."""
    run = plan_lib.make_plan(["w32d2h2"], plan_lib.parse_budget(steps=10), vocab_size=512,
                             seq_len=64, train=_train())[0]
    old = run.to_dict()
    del old["seed"], old["replicate"]
    restored = plan_lib.PlannedRun.from_dict(old)
    assert restored.seed is None and restored.replicate == 0
    config = base_config()
    config.train.seed = 5
    assert study.run_config(restored, config, epath.Path("/tmp/w"), "/tmp/c").seed == 5
    assert results.run_columns(restored)["seed"] is None


def test_results_with_and_without_the_seed_column(tmp_path):
    run = plan_lib.make_plan(["w32d2h2"], plan_lib.parse_budget(steps=10), vocab_size=512,
                             seq_len=64, train=_train())[0]
    rows = results.RunRows(results.run_columns(run), "done")
    rows.add({"step": 10, "tokens": 5120, "flops": 1e9, "eval_loss": 4.0})
    results.write_results(tmp_path, rows.rows())
    assert results.read_results(tmp_path)["seed"].tolist() == [5]
    old = pd.read_csv(tmp_path / "results.csv").drop(columns=["seed"])
    old.to_csv(tmp_path / "results.csv", index=False)
    frame = results.read_results(tmp_path)
    assert "seed" not in frame and frame["eval_loss"].tolist() == [4.0]
