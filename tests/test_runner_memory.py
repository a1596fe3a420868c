"""Memory-aware plans: accelerator targets, the estimate, and the micro-batch / remat choice."""

import math

import pytest

from neoscale import accounting, hardware, presets
from neoscale.hardware import GiB
from neoscale.runner import memory
from neoscale.runner import plan as plan_lib
from neoscale.runner.config import base_config

HEADLINE = ["125M", "350M", "1.3B"]


def test_targets_count_chips_and_hosts():
    v4 = hardware.parse_target("v4-32")  # TensorCores in the name: 16 chips, 4 per host
    assert (v4.devices, v4.hosts, v4.kind.memory) == (16, 4, 32 * GiB)
    v5e = hardware.parse_target("v5e-64")
    assert (v5e.devices, v5e.hosts, v5e.kind.memory) == (64, 16, 16 * GiB)
    assert hardware.parse_target("v5litepod-64") == hardware.Target("v5litepod-64", v5e.kind, 64, 16)
    assert hardware.parse_target("v5p-128").devices == 64
    h100 = hardware.parse_target("h100")
    assert (h100.devices, h100.hosts) == (1, 1) and hardware.parse_target("h100x8").devices == 8
    for bad in ("v4-31", "v7-8", "tpu"):
        with pytest.raises(ValueError, match="accelerator"):
            hardware.parse_target(bad)
    assert hardware.kind_of_device("NVIDIA H100 80GB HBM3").name.startswith("NVIDIA H100")
    assert hardware.kind_of_device("TPU v5 lite") is hardware.DEVICE_KINDS["v5e"]
    assert hardware.kind_of_device("cpu") is None


def test_estimate_by_hand_for_a_small_model():
    """State, saved activations and loss for w64d2h4 (vocab 512, seq 32, 2 sequences, f32)."""
    model = presets.model_config("w64d2h4", vocab_size=512, max_positions=64, window_size=16,
                                 loss_impl="plain", attention_impl="dense")
    est = memory.estimate(model, seq_len=32, micro_batch_per_device=2, state_shards=1,
                          micro_batches=1, flash_attention=False, remat="none")
    counts = accounting.param_counts(model)
    group_params = (counts["total"] - counts["embedding"]) / model.num_groups  # one group: 2 layers
    assert est.state == int(16 * counts["total"] + 2 * 4 * group_params)
    tokens = 64
    global_layer = 16 * 64 * 4 + 8 * 4 * 32  # 16 d-vectors + f32 scores and probs over 32 keys
    local_layer = 16 * 64 * 4 + 8 * 4 * 32  # window 16: two windows = 32 keys
    saved = global_layer + local_layer + 64 * 4  # + the scan carry of the one group
    assert est.activations == int(memory.XLA_OVERHEAD * tokens * saved)
    assert est.loss == tokens * 512 * 12
    full = memory.estimate(model, seq_len=32, micro_batch_per_device=2, state_shards=1,
                           micro_batches=1, flash_attention=False, remat="full")
    assert full.activations == int(memory.XLA_OVERHEAD * tokens * 64 * 4)


def test_blocked_attention_keeps_a_log_sum_exp_and_holds_one_layers_scores():
    """The blocked path recomputes its scores in the backward pass: the saved activations count a
    float32 log-sum-exp per head, the working set one layer group's scores (as for dense)."""
    model = presets.model_config("w64d2h4", vocab_size=512, max_positions=64, window_size=16,
                                 loss_impl="plain", attention_impl="blocked")
    args = {"seq_len": 32, "micro_batch_per_device": 2, "state_shards": 1, "micro_batches": 1,
            "flash_attention": False, "remat": "none"}
    blocked = memory.estimate(model, **args)
    dense = memory.estimate(model.replace(attention_impl="dense"), **args)
    tokens, per_layer = 64, 16 * 64 * 4
    assert blocked.activations == int(memory.XLA_OVERHEAD * tokens * (2 * (per_layer + 4 * 4) + 64 * 4))
    # blocked causal keys: (32 + GLOBAL_BLOCK) / 2 capped at 32; local: two windows = 32
    assert blocked.working_set == dense.working_set == int(
        memory.XLA_OVERHEAD * tokens * 2 * (per_layer + 8 * 4 * 32))
    assert blocked.activations < dense.activations


def test_estimate_counts_micro_batches_remat_and_fused_loss():
    model = presets.model_config("1.3B", dtype="bfloat16")
    common = {"seq_len": 2048, "state_shards": 16, "flash_attention": True}
    one = memory.estimate(model, micro_batch_per_device=32, micro_batches=1, **common)
    four = memory.estimate(model, micro_batch_per_device=8, micro_batches=4, **common)
    assert four.activations == pytest.approx(one.activations / 4, rel=1e-6)
    assert four.state > one.state  # the float32 gradient accumulator
    plain = memory.estimate(model.replace(loss_impl="plain"), micro_batch_per_device=32,
                            micro_batches=1, **common)
    assert plain.loss == 32 * 2048 * 50257 * 10
    assert one.loss == model.loss_chunk_tokens * 50257 * 10 < plain.loss / 32
    dots = memory.estimate(model, micro_batch_per_device=32, micro_batches=1, remat="dots", **common)
    full = memory.estimate(model, micro_batch_per_device=32, micro_batches=1, remat="full", **common)
    assert full.activations < dots.activations < one.activations


def test_batch_multiple_is_the_lcm_not_the_product():
    """v5e-64: 64 fsdp shards on 16 hosts; 1.3B's 512-sequence batch is a multiple of lcm = 64."""
    target = hardware.parse_target("v5e-64")
    (run,) = plan_lib.make_plan(["1.3B"], plan_lib.parse_budget(), vocab_size=50257, seq_len=2048,
                                num_devices=64, process_count=16, target=target,
                                model_overrides={"dtype": "bfloat16"})
    assert run.batch_size == 512
    assert run.batch_size % math.lcm(64 * run.micro_batches, 16) == 0


@pytest.mark.parametrize("accelerator", ["v4-32", "v5e-64", "h100"])
def test_headline_sizes_fit_each_target(accelerator):
    target = hardware.parse_target(accelerator)
    runs = plan_lib.make_plan(HEADLINE, plan_lib.parse_budget(), vocab_size=50257, seq_len=2048,
                              num_devices=target.devices, process_count=target.hosts, target=target,
                              model_overrides={"dtype": "bfloat16"})
    for run in runs:
        assert run.memory_bytes_per_device <= target.usable_memory
        per_device = run.batch_size // target.devices
        assert per_device % run.micro_batches == 0
        assert run.model.remat in memory.REMAT_COST
    # One H100 holds all of 1.3B's state (21 GB) and must accumulate its 512-sequence batch.
    if accelerator == "h100":
        assert runs[-1].micro_batches > 1


def test_a_fixed_remat_is_kept_and_an_impossible_plan_is_one_line():
    target = hardware.parse_target("v5e-64")
    (run,) = plan_lib.make_plan(["125M"], plan_lib.parse_budget(), vocab_size=50257, seq_len=2048,
                                num_devices=64, process_count=16, target=target,
                                model_overrides={"dtype": "bfloat16", "remat": "full"})
    assert run.model.remat == "full"
    single = hardware.Target("v5e-1", hardware.DEVICE_KINDS["v5e"], 1, 1)
    with pytest.raises(ValueError, match=r"size '2.7B' does not fit on v5e-1 .*GiB usable") as error:
        plan_lib.make_plan(["2.7B"], plan_lib.parse_budget(), vocab_size=50257, seq_len=2048,
                           target=single, model_overrides={"dtype": "bfloat16"})
    assert "\n" not in str(error.value)


def test_data_repetition_is_shown_refused_and_allowed():
    train = base_config().train
    train.batch_size = 8
    kwargs = {"vocab_size": 512, "seq_len": 64, "train": train}
    runs = plan_lib.make_plan(["cpu-100k"], plan_lib.parse_budget(tokens=64 * 8 * 100),
                              corpus_tokens=64 * 8 * 40, **kwargs)
    assert runs[0].epochs == pytest.approx(2.5)
    assert "2.50" in plan_lib.format_table(runs) and "warning" not in plan_lib.format_table(runs)
    with pytest.raises(ValueError, match=r"beyond 4 epochs .*cpu-100k_D204800 reads 10.0 epochs"):
        plan_lib.make_plan(["cpu-100k"], plan_lib.parse_budget(tokens=64 * 8 * 400),
                           corpus_tokens=64 * 8 * 40, **kwargs)
    allowed = plan_lib.make_plan(["cpu-100k"], plan_lib.parse_budget(tokens=64 * 8 * 400),
                                 corpus_tokens=64 * 8 * 40, allow_repetition=True, **kwargs)
    assert "warning: cpu-100k_D204800 reads 10.0 epochs" in plan_lib.format_table(allowed)


def test_run_names_carry_the_budget():
    train = base_config().train
    train.batch_size = 8
    kwargs = {"vocab_size": 512, "seq_len": 64, "train": train}
    names = {budget: [r.name for r in plan_lib.make_plan(["cpu-100k"], budget, **kwargs)]
             for budget in (plan_lib.parse_budget(), plan_lib.parse_budget(tokens_per_param=1.5),
                            plan_lib.parse_budget(steps=500), plan_lib.parse_budget(flops="3e13"))}
    assert list(names.values()) == [["cpu-100k_tpp20"], ["cpu-100k_tpp1.5"], ["cpu-100k_S500"],
                                    ["cpu-100k_C3e13"]]
