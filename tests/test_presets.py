"""Size names, presets and the custom grammar."""

import pytest

from neoscale.presets import CPU_LADDER, GPT_NEO_PRESETS, model_config, parse_sizes


def test_gpt_neo_shapes():
    config = model_config("1.3B")
    assert (config.d_model, config.num_layers, config.num_heads) == (2048, 24, 16)
    assert config.vocab_size == 50257 and config.max_positions == 2048 and config.window_size == 256
    assert config.attention_scale == "none" and config.tie_embeddings


def test_custom_grammar_and_experts():
    config = model_config("w512d8h8e8k2")
    assert (config.d_model, config.num_layers, config.num_heads) == (512, 8, 8)
    assert (config.num_experts, config.top_k) == (8, 2)
    preset = model_config("125M-e8k2")
    assert (preset.d_model, preset.num_experts, preset.top_k) == (768, 8, 2)
    ladder = model_config("cpu-800k-e4k1", vocab_size=512)
    assert (ladder.d_model, ladder.num_experts, ladder.vocab_size) == (128, 4, 512)


@pytest.mark.parametrize("name, message", [
    ("125X", "unknown model size"),
    ("w100d4h3", "not divisible by num_heads"),
    ("w64d4h4e4k8", "top_k=8 must be between 1 and num_experts=4"),
    ("w64d3h4", "must be a multiple of 2"),
    ("", "unknown model size"),
])
def test_bad_names_are_clear_one_line_errors(name, message):
    with pytest.raises(ValueError, match=message) as info:
        model_config(name)
    assert "\n" not in str(info.value)
    if "unknown" in message:
        assert "w{d_model}d{layers}h{heads}" in str(info.value)


def test_bad_overrides():
    with pytest.raises(ValueError, match="window_size must be >= 1"):
        model_config("w64d2h2", window_size=0)
    with pytest.raises(ValueError, match="bad override"):
        model_config("w64d2h2", no_such_field=1)


def test_parse_sizes():
    assert parse_sizes("125M, 350M,w64d2h2") == ["125M", "350M", "w64d2h2"]
    with pytest.raises(ValueError, match="empty size list"):
        parse_sizes(" , ")
    with pytest.raises(ValueError, match="unknown model size '125X'"):
        parse_sizes("125M,125X")


def test_every_name_builds():
    for name in [*GPT_NEO_PRESETS, *CPU_LADDER]:
        assert model_config(name).num_layers >= 1
