"""Parameter counts against REFERENCE.md and the FLOP formula against a hand count."""

import pytest

from neoscale import accounting
from neoscale.presets import CPU_LADDER, model_config

# REFERENCE.md §1: (total, non-embedding) at vocab 50257, 2048 positions, tied head.
REFERENCE_COUNTS = {
    "125M": (125_198_592, 85_028_352),
    "350M": (355_798_016, 302_237_696),
    "760M": (760_189_440, 679_848_960),
    "1.3B": (1_315_575_808, 1_208_455_168),
    "2.7B": (2_651_307_520, 2_517_406_720),
}


@pytest.mark.parametrize("name", REFERENCE_COUNTS)
def test_param_counts_match_reference_exactly(name):
    counts = accounting.param_counts(model_config(name))
    assert (counts["total"], counts["non_embedding"]) == REFERENCE_COUNTS[name]
    assert counts["active"] == counts["total"]
    assert counts["embedding"] == (50257 + 2048) * model_config(name).d_model


def test_cpu_ladder_is_named_by_non_embedding_count():
    for name in CPU_LADDER:
        count = accounting.param_counts(model_config(name))["non_embedding"]
        label = name.removeprefix("cpu-")
        value = float(label[:-1]) * {"k": 1e3, "M": 1e6}[label[-1]]
        assert abs(count - value) / value < 0.06, (name, count)


def test_moe_active_params():
    d, layers, e, k, vocab = 64, 2, 4, 2, 100
    config = model_config(f"w{d}d{layers}h2e{e}k{k}", vocab_size=vocab, max_positions=32)
    counts = accounting.param_counts(config)
    one_expert = d * 4 * d + 4 * d + 4 * d * d + d  # w_in, b_in, w_out, b_out
    assert counts["expert"] == layers * e * one_expert
    assert counts["router"] == layers * d * e
    assert counts["active"] == counts["total"] - layers * (e - k) * one_expert
    dense = accounting.param_counts(model_config(f"w{d}d{layers}h2", vocab_size=vocab,
                                                 max_positions=32))
    assert counts["active"] == dense["total"] + layers * ((k - 1) * one_expert + d * e)


def test_mean_keys_per_query():
    assert accounting.mean_keys_per_query("global", 2048, 256) == 1024.5
    assert accounting.mean_keys_per_query("local", 2048, 256) == pytest.approx(240.0625)
    # Brute force for a small case: query i sees min(i + 1, w) keys.
    s, w = 10, 4
    assert accounting.mean_keys_per_query("local", s, w) == pytest.approx(
        sum(min(i + 1, w) for i in range(s)) / s)


def test_train_flops_against_a_hand_count():
    # d=64, 2 layers (global then local, window 4), seq 8, vocab 100, mlp 256.
    config = model_config("w64d2h2", vocab_size=100, max_positions=16, window_size=4)
    d, s, v = 64, 8, 100
    logits = 2 * d * v
    projections = 2 * 4 * d * d
    mlp = 2 * 2 * d * 4 * d
    global_keys = (s + 1) / 2  # 4.5
    local_keys = sum(min(i + 1, 4) for i in range(s)) / s  # (1+2+3+4*5)/8 = 3.25
    attention = 4 * d * global_keys + 4 * d * local_keys
    forward = logits + 2 * (projections + mlp) + attention
    assert accounting.train_flops_per_token(config, s) == pytest.approx(3 * forward)


def test_moe_flops_count_router_and_k_experts():
    dense = model_config("w64d2h2", vocab_size=100)
    moe = model_config("w64d2h2e8k2", vocab_size=100)
    extra = 2 * (2 * 64 * 8 + (2 - 1) * 2 * 2 * 64 * 256)  # per layer: router + one more expert
    assert accounting.train_flops_per_token(moe, 64) == pytest.approx(
        accounting.train_flops_per_token(dense, 64) + 3 * extra)


def test_6nd_approximation_is_close_for_a_large_model():
    config = model_config("1.3B")
    exact = accounting.train_flops_per_token(config, 2048)
    approx = accounting.train_flops_6nd(config, 1)
    assert 0.9 < exact / approx < 1.25


def test_device_peaks():
    assert accounting.device_peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert accounting.device_peak_flops("TPU v5 lite", "bfloat16") == 197e12
    assert accounting.device_peak_flops("TPU v5p") == 459e12
    assert accounting.device_peak_flops("cpu") is None
