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
    # The one independent hand count (every number below written out, not recomputed):
    # w64d2h2, vocab 100, seq 8: layer 0 global (causal), layer 1 local with window 4, MLP 256.
    config = model_config("w64d2h2", vocab_size=100, max_positions=16, window_size=4)
    # Per token, multiply-add = 2 FLOPs:
    #   logits: [64] x [64, 100]                                   2*64*100      = 12_800
    #   per layer, q, k, v, out: 4 x [64] x [64, 64]               4*2*64*64     = 32_768
    #   per layer, MLP: [64] x [64, 256] then [256] x [256, 64]    2*2*64*256    = 65_536
    #   layer 0 attention: query i sees keys 0..i: 1+2+...+8 = 36 keys for 8 queries, 4.5 each;
    #     scores q.k and sum of values: 2 x 2*64 per key           4*64*4.5      = 1_152
    #   layer 1 attention: query i sees min(i+1, 4) keys: 1+2+3+4+4+4+4+4 = 26, 3.25 each
    #                                                              4*64*3.25     = 832
    forward = 12_800 + 2 * (32_768 + 65_536) + 1_152 + 832
    assert forward == 211_392
    assert accounting.forward_flops_per_token(config, 8) == 211_392
    assert accounting.train_flops_per_token(config, 8) == 3 * 211_392  # backward = 2 x forward
    # Chinchilla App. F on the same config: embedding 2*100*64 = 12_800 more, and per layer the
    # full context (8 keys for every query, no window): scores + values 2*2*8*64 = 2_048 and
    # softmax 3*2 heads*8 = 48, instead of 1_152 and 832.
    chinchilla = 12_800 + 12_800 + 2 * (32_768 + 65_536 + 2_048 + 48)
    assert accounting.forward_flops_per_token(config, 8, convention="chinchilla") == chinchilla


def test_chinchilla_convention_at_125m():
    # Hoffmann et al. 2022 App. F per token at 125M (d 768, 12 layers, 12 heads, V 50257), S 2048:
    #   embedding 2*50257*768 = 77_194_752, logits the same;
    #   per layer: q,k,v 2*3*768*768 = 3_538_944; scores 2*2048*768 = 3_145_728; softmax
    #   3*12*2048 = 73_728; values 3_145_728; out 2*768*768 = 1_179_648; MLP 2*2*768*3072 = 9_437_184
    #   -> 20_520_960 per layer, 246_251_520 for 12.
    config = model_config("125M")
    chinchilla = 2 * 77_194_752 + 12 * 20_520_960
    assert accounting.forward_flops_per_token(config, 2048, convention="chinchilla") == chinchilla
    # neoscale: logits 77_194_752; per layer projections 4*2*768*768 = 4_718_592 and MLP 9_437_184;
    # attention 4*768 per key over 6 global layers (1024.5 keys) and 6 local ones (window 256:
    # 256 - 256*255/4096 = 240.0625 keys) = 3072 * 6 * 1264.5625 = 23_308_416.
    neoscale = 77_194_752 + 12 * (4_718_592 + 9_437_184) + 23_308_416
    assert neoscale == 270_372_480
    assert accounting.forward_flops_per_token(config, 2048) == neoscale
    # The "16% fewer forward FLOPs than Chinchilla's" is App. F without its embedding term;
    # with it, 32.5% fewer.
    assert 1 - neoscale / (chinchilla - 77_194_752) == pytest.approx(0.164, abs=5e-4)
    assert 1 - neoscale / chinchilla == pytest.approx(0.325, abs=5e-4)
    with pytest.raises(ValueError, match="unknown FLOP convention"):
        accounting.train_flops_per_token(config, 2048, convention="kaplan")


def test_moe_flops_count_router_and_k_experts():
    # w64d2h2e8k2 at seq 64, vocab 100: both layers are MoE with 8 experts of width 256, top-2.
    # Per MoE layer instead of one MLP (65_536): router 2*64*8 = 1_024 and 2 experts 2*65_536.
    dense = model_config("w64d2h2", vocab_size=100)
    moe = model_config("w64d2h2e8k2", vocab_size=100)
    difference = accounting.forward_flops_per_token(moe, 64) - accounting.forward_flops_per_token(dense, 64)
    assert difference == 2 * (1_024 + 65_536)


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


def test_saved_residuals_keep_only_what_the_backward_pass_needs():
    """remat=none keeps per token and layer: the LayerNorms' inputs (2 x d), q, k, v and the
    kernel's output (4 x d), the MLP hidden before the GELU (4 x d), all bf16, and a float32
    log-sum-exp per head: 2 x 10·d + 4·heads bytes; no bf16 weight copies. Before the LayerNorms
    and the GELU were recomputed, a 125M layer kept 87·d bytes (splash) and 96·d (blocked), and
    13.5 MiB of weight copies (benchmarks/RESULTS.md, 2026-12-03)."""
    config = model_config("125M", dtype="bfloat16")
    d, heads = config.d_model, config.num_heads
    saved = accounting.saved_residual_bytes(config, 2048, "none", "tpu")  # splash
    assert saved["per_token_layer"] == 2 * (2 + 4 + 4) * d + 4 * heads
    assert saved["per_layer"] < 2**16  # splash's mask tables at most: no weight copies
    assert saved["per_token_layer"] <= 87 * d / 4
    assert accounting.saved_residual_bytes(config, 2048, "none", "gpu") == saved  # cuDNN: as splash
    blocked = accounting.saved_residual_bytes(config, 2048, "none", "cpu")["per_token_layer"]
    assert blocked <= 96 * d / 3
    # Mixture of experts (every other layer, top-2 of 8): 155·d and 77 MiB per layer before.
    moe = accounting.saved_residual_bytes(model_config("125M-e8k2", dtype="bfloat16"), 2048, "none", "tpu")
    assert moe["per_token_layer"] <= 155 * d / 5 and moe["per_layer"] < 2**16
    # The other policies keep less still, and no more than before.
    saved = {remat: accounting.saved_residual_bytes(config, 2048, remat, "tpu")["per_token_layer"]
             for remat in ("dots", "dots_no_batch", "full")}
    assert saved == {"dots": 18 * d, "dots_no_batch": 18 * d, "full": d}
