"""Memory-aware plans: accelerator targets, the estimate, and the micro-batch / remat choice."""

import math

import jax
import jax.numpy as jnp
import pytest

from neoscale import accounting, hardware, presets
from neoscale.hardware import GiB
from neoscale.runner import memory
from neoscale.runner import plan as plan_lib
from neoscale.runner.config import base_config

HEADLINE = ["125M", "350M", "1.3B"]
REMATS = ("none", "dots", "dots_no_batch", "full")


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


def test_slices_have_cloud_tpu_topology_names_and_gpus_an_xla_description():
    names = {name: hardware.parse_target(name).topology
             for name in ("v4-8", "v4-32", "v4-64", "v5e-16", "v5e-64", "v5e-256", "v5p-128",
                          "v6e-64", "h100x8", "h200")}
    assert names == {"v4-8": "v4:2x2x1", "v4-32": "v4:2x2x4", "v4-64": "v4:2x4x4",
                     "v5e-16": "v5e:4x4", "v5e-64": "v5e:8x8", "v5e-256": "v5e:16x16",
                     "v5p-128": "v5:4x4x4", "v6e-64": "v6e:8x8", "h100x8": "1x1x8", "h200": "1x1x1"}
    assert hardware.parse_target("v4-32").kind.chip_config == "megacore"
    h100 = hardware.gpu_target_config("h100")
    assert "collective_memory_granularity" not in h100 and "device_memory_size: 84942979072" in h100
    h200 = hardware.gpu_target_config("h200")
    assert "device_memory_size: 141000000000" in h200 and "memory_bandwidth: 4800000000000" in h200
    assert 'name: "NVIDIA H200"' in h200 and "core_count: 132" in h200
    a100 = hardware.gpu_target_config("a100")
    assert "major: 8" in a100 and "feature_extension" not in a100 and "core_count: 108" in a100
    with pytest.raises(ValueError, match="not a TPU slice or GPU host"):
        _ = hardware.Target("local", hardware.DeviceKind("cpu", GiB, 0.0, platform="cpu"), 1, 1).topology


def test_the_estimate_counts_what_the_models_jaxpr_saves():
    """Activations: every layer keeps the bytes per token that JAX saves for one layer group under
    the remat policy (saved residuals on abstract shapes); the working set is one group at none."""
    model = presets.model_config("w64d2h4", vocab_size=512, max_positions=64, window_size=16,
                                 loss_impl="plain", attention_impl="blocked")
    args = {"seq_len": 32, "micro_batch_per_device": 2, "state_shards": 1, "micro_batches": 1}
    est = memory.estimate(model, remat="none", **args)
    counts = accounting.param_counts(model)
    group_params = (counts["total"] - counts["embedding"]) / model.num_groups  # one group: 2 layers
    # f32 state, two f32 compute copies of one group's weights and its f32 gradient before reduction
    assert est.state == int(16 * counts["total"] + (2 * 4 + 4) * group_params)
    tokens = 64
    saved = {policy: memory.saved_per_token_layer(model, 32, policy, "cpu") for policy in REMATS}
    assert saved["full"] == 64 * 4 / 2  # the group's input (float32 [T, d]), per layer of 2
    assert saved["full"] < min(saved["dots"], saved["dots_no_batch"]) <= saved["none"]
    assert est.activations == int(memory.XLA_OVERHEAD * tokens * 2 * saved["none"])
    scores = 8 * 4 * (32 + 32)  # float32 scores and probabilities: 32 keys per query in each layer
    assert est.working_set == int(memory.XLA_OVERHEAD * tokens * (2 * saved["none"] + scores))
    assert est.loss == tokens * 512 * 12
    full = memory.estimate(model, remat="full", **args)
    assert full.activations == int(memory.XLA_OVERHEAD * tokens * 64 * 4)


def test_on_a_tpu_arrays_take_whole_tiles():
    """Heads-major [B, H, S, 64] bf16 (splash's q, k, v, output) takes 128 lanes: twice its size."""
    heads_major = jax.ShapeDtypeStruct((1, 16, 2048, 64), jnp.bfloat16)
    tpu_bytes, gpu_bytes = (accounting.bytes_in_memory(heads_major, p) for p in ("tpu", "gpu"))
    assert tpu_bytes == 2 * gpu_bytes
    lse = jax.ShapeDtypeStruct((1, 16, 2048), jnp.float32)
    assert accounting.bytes_in_memory(lse, "tpu") == 16 * 2048 * 4
    model = presets.model_config("350M", dtype="bfloat16")
    tpu, gpu = (memory.saved_per_token_layer(model, 2048, "none", p) for p in ("tpu", "gpu"))
    assert tpu > 1.3 * gpu


def test_a_flash_kernel_holds_no_scores_and_saves_less():
    model = presets.model_config("w256d4h4", vocab_size=512, max_positions=512, dtype="bfloat16")
    args = {"seq_len": 512, "micro_batch_per_device": 2, "state_shards": 1, "micro_batches": 1}
    cpu = memory.estimate(model, platform="cpu", **args)  # blocked attention
    tpu = memory.estimate(model, platform="tpu", **args)  # splash
    gpu = memory.estimate(model, platform="gpu", **args)  # cuDNN, or splash's count without cuDNN
    assert tpu.working_set < cpu.working_set and gpu.working_set < cpu.working_set


def test_estimate_counts_micro_batches_remat_and_fused_loss():
    model = presets.model_config("1.3B", dtype="bfloat16")
    common = {"seq_len": 2048, "state_shards": 16, "platform": "tpu"}
    one = memory.estimate(model, micro_batch_per_device=32, micro_batches=1, **common)
    four = memory.estimate(model, micro_batch_per_device=8, micro_batches=4, **common)
    assert four.activations == pytest.approx(one.activations / 4, rel=1e-6)
    assert four.state > one.state  # the float32 gradient accumulator
    plain = memory.estimate(model.replace(loss_impl="plain"), micro_batch_per_device=32,
                            micro_batches=1, **common)
    vocab = model.vocab_size
    assert plain.loss == 32 * 2048 * vocab * 10
    assert one.loss == model.loss_chunk_tokens * vocab * 10 < plain.loss / 32
    dots = memory.estimate(model, micro_batch_per_device=32, micro_batches=1, remat="dots", **common)
    full = memory.estimate(model, micro_batch_per_device=32, micro_batches=1, remat="full", **common)
    assert full.activations < dots.activations < one.activations


# The compiler's bytes per device (neoscale.aot, benchmarks/RESULTS.md "Does the plan fit?"):
# (target, size, remat, micro-batches, sequences per device per micro-batch) -> GiB.
COMPILED = {
    ("h100x8", "125M", "none", 1, 32): 14.92,
    ("h100x8", "350M", "none", 2, 16): 18.16,
    ("h100x8", "1.3B", "none", 8, 8): 20.84,
    ("h100x8", "1.3B", "full", 8, 8): 6.81,
    ("v5e-64", "125M", "none", 1, 4): 2.97,
}


@pytest.mark.parametrize("key", list(COMPILED))
def test_the_estimate_is_within_20_percent_of_the_compiler(key):
    target_name, size, remat, micro_batches, per_device = key
    target = hardware.parse_target(target_name)
    model = presets.model_config(size, dtype="bfloat16")
    est = memory.estimate(model, 2048, per_device, target.devices, micro_batches,
                          platform=target.kind.platform, remat=remat)
    assert est.peak / GiB == pytest.approx(COMPILED[key], rel=0.2)


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


def test_the_compiler_checked_plan_takes_the_cheapest_candidate_it_accepts(monkeypatch):
    """Candidates go to the compiler in cost order; the first accepted is planned, and a run the
    compiler refuses everywhere is one line naming the smallest program found."""
    from neoscale import aot

    target = hardware.parse_target("v4-32")
    asked = []

    def compiler(accepts):
        def check(model, seq_len, batch_size, micro_batches, mesh, target):
            asked.append((model.remat, micro_batches))
            needed = 40 * GiB / micro_batches / (4 if model.remat == "full" else 1)
            if accepts(model.remat, micro_batches):
                return aot.Verdict(True, int(needed), GiB, target.kind.memory, 1.0)
            return aot.Verdict(False, None, None, target.kind.memory, 1.0,
                               error=f"RESOURCE_EXHAUSTED: HLO temporaries ({needed / GiB:.2f}G) "
                                     "exceeds available HBM (30.75G).")
        return check

    monkeypatch.setattr(aot, "check", compiler(lambda remat, count: count >= 4))
    kwargs = {"vocab_size": 50257, "seq_len": 2048, "num_devices": 16, "process_count": 4,
              "target": target, "model_overrides": {"dtype": "bfloat16"}, "compile_check": True}
    (run,) = plan_lib.make_plan(["350M"], plan_lib.parse_budget(), **kwargs)
    costs = [memory.relative_cost(remat, count) for remat, count in asked]
    assert costs == sorted(costs) and asked[-1] == ("none", 4)
    assert (run.model.remat, run.micro_batches) == ("none", 4)
    assert run.compiled["train_bytes"] == 10 * GiB
    assert "compiled" in plan_lib.format_table([run]) and "10 GiB" in plan_lib.format_table([run])
    monkeypatch.setattr(aot, "check", compiler(lambda remat, count: False))
    with pytest.raises(ValueError, match=r"size '350M' does not fit on v4-32 .* by its compiler: the "
                                         r"best found, remat=full x 16 micro-batches needs 0.6 GiB"):
        plan_lib.make_plan(["350M"], plan_lib.parse_budget(), **kwargs)


def test_the_dry_run_warns_when_the_fit_cannot_be_checked():
    train = base_config().train
    train.batch_size = 8
    kwargs = {"vocab_size": 512, "seq_len": 64, "train": train}
    three = plan_lib.make_plan(["cpu-100k", "cpu-220k", "cpu-400k"], plan_lib.parse_budget(steps=100),
                               **kwargs)
    warnings = plan_lib.fit_warnings(three)
    assert len(warnings) == 2 and "exactly determined" in warnings[0] and "Approach 3" in warnings[1]
    branched = plan_lib.make_plan(["cpu-100k", "cpu-220k", "cpu-400k"], plan_lib.parse_budget(steps=100),
                                  cooldowns=(0.25, 0.5, 1.0), **kwargs)
    assert plan_lib.fit_warnings(branched) == []
