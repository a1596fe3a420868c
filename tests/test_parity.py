"""Parity with the reference PyTorch GPT-Neo (transformers): load its checkpoints, compare logits.

Each case saves a randomly initialised ``GPTNeoForCausalLM`` (non-trivial weights: a large
initializer range and random LayerNorm/bias parameters), loads it with ``load_hf_gpt_neo`` and
compares float32 logits on random tokens longer than the local window.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from flax import nnx  # noqa: E402

from neoscale.accounting import param_counts  # noqa: E402
from neoscale.convert import load_hf_gpt_neo, load_hf_state_dict  # noqa: E402

TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    hf: dict  # GPTNeoConfig arguments
    seq_len: int
    storage: str  # "safetensors", "sharded" (safetensors with an index) or "bin"


CASES = [
    Case("w32-l2-h4-win8", dict(hidden_size=32, num_layers=2, num_heads=4, vocab_size=97,
                                max_position_embeddings=64, window_size=8), 40, "safetensors"),
    Case("w48-l4-h3-win5-sharded", dict(hidden_size=48, num_layers=4, num_heads=3, vocab_size=131,
                                        max_position_embeddings=48, window_size=5), 48, "sharded"),
    Case("w64-l6-h8-win16-mlp96-bin", dict(hidden_size=64, num_layers=6, num_heads=8, vocab_size=257,
                                           max_position_embeddings=80, window_size=16,
                                           intermediate_size=96), 64, "bin"),
    Case("w24-l2-h2-global-gelu-untied", dict(hidden_size=24, num_layers=2, num_heads=2, vocab_size=61,
                                              max_position_embeddings=32, activation_function="gelu",
                                              attention_types=[[["global"], 2]],
                                              tie_word_embeddings=False), 32, "safetensors"),
]


def make_reference(hf_args: dict, seed: int = 0):
    """A GPTNeoForCausalLM with non-trivial random weights (every parameter random)."""
    args = {"attention_types": [[["global", "local"], hf_args["num_layers"] // 2]],
            "initializer_range": 0.2, "bos_token_id": 0, "eos_token_id": 0, **hf_args}
    torch.manual_seed(seed)
    model = transformers.GPTNeoForCausalLM(transformers.GPTNeoConfig(**args)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:  # LayerNorm scales and biases, Linear biases: off their defaults
                torch.nn.init.normal_(param, mean=1.0 if "ln" in name and name.endswith("weight")
                                      else 0.0, std=0.3)
    return model


def save(model, directory, storage: str) -> None:
    if storage == "safetensors":
        model.save_pretrained(directory)
    elif storage == "sharded":
        model.save_pretrained(directory, max_shard_size="20KB")
        assert (directory / "model.safetensors.index.json").is_file()
    else:  # transformers 5 always writes safetensors: write the legacy .bin format by hand
        model.config.save_pretrained(directory)
        state_dict = dict(model.state_dict())  # includes the tied lm_head.weight
        for i in range(model.config.num_layers):  # buffers that old checkpoints carry
            state_dict[f"transformer.h.{i}.attn.attention.bias"] = torch.ones(1, 1, 4, 4, dtype=bool)
            state_dict[f"transformer.h.{i}.attn.attention.masked_bias"] = torch.tensor(-1e9)
        torch.save(state_dict, directory / "pytorch_model.bin")


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.name)
def converted(request, tmp_path_factory):
    """(case, reference model, neoscale config, neoscale model) for each case."""
    case = request.param
    reference = make_reference(case.hf)
    directory = tmp_path_factory.mktemp(case.name)
    save(reference, directory, case.storage)
    config, model = load_hf_gpt_neo(directory)
    return case, reference, config, model


def reference_logits(reference, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return reference(torch.from_numpy(tokens)).logits.numpy()


@nnx.jit
def forward(model, tokens):
    return model(tokens)[0]


def test_logits_match_reference(converted):
    case, reference, config, model = converted
    tokens = np.random.default_rng(1).integers(0, config.vocab_size, (2, case.seq_len))
    expected = reference_logits(reference, tokens)
    logits = forward(model, tokens)
    assert logits.dtype == np.float32 and logits.shape == expected.shape
    assert np.abs(expected).max() > 1.0  # the weights are not trivial
    difference = float(np.abs(np.asarray(logits) - expected).max())
    print(f"{case.name}: max |logits - reference| = {difference:.2e}")
    assert difference <= TOLERANCE


@pytest.mark.parametrize("impl", ["dense", "blocked", "splash"])
def test_every_attention_path_matches_reference(converted, impl, monkeypatch):
    """Blocked global layers in several query blocks (16 positions, ragged tails), local layers
    in window blocks, splash in Pallas interpret mode; lengths below the window and ragged ones."""
    from neoscale.model import GPTNeo
    from neoscale.model import attention as attention_module

    monkeypatch.setattr(attention_module, "GLOBAL_BLOCK", 16)
    case, reference, config, model = converted
    other = GPTNeo(config.replace(attention_impl=impl), rngs=nnx.Rngs(0))
    nnx.update(other, nnx.state(model))
    for seq in (min(config.window_size - 2, case.seq_len), case.seq_len - 3):
        tokens = np.random.default_rng(seq).integers(0, config.vocab_size, (2, seq))
        difference = float(np.abs(np.asarray(forward(other, tokens))
                                  - reference_logits(reference, tokens)).max())
        assert difference <= TOLERANCE, (impl, seq, difference)


def test_config_and_parameter_count_round_trip(converted):
    case, reference, config, _ = converted
    hf = reference.config
    assert (config.d_model, config.num_layers, config.num_heads, config.vocab_size) == (
        hf.hidden_size, hf.num_layers, hf.num_heads, hf.vocab_size)
    assert config.max_positions == hf.max_position_embeddings
    assert config.ffn_dim == (hf.intermediate_size or 4 * hf.hidden_size)
    expected_pattern = "global" if set(hf.attention_layers) == {"global"} else "alternating"
    assert config.attention_pattern == expected_pattern
    assert config.tie_embeddings == hf.tie_word_embeddings
    assert param_counts(config)["total"] == reference.num_parameters()


def test_dtype_overrides(tmp_path):
    save(make_reference(CASES[0].hf), tmp_path, "safetensors")
    config, model = load_hf_gpt_neo(tmp_path, dtype="bfloat16", param_dtype="bfloat16")
    assert (config.dtype, config.param_dtype) == ("bfloat16", "bfloat16")
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    assert {variable[...].dtype for _, variable in params} == {np.dtype("bfloat16")}


@pytest.mark.parametrize("storage", ["safetensors", "bin"])
def test_bfloat16_checkpoint_is_read_exactly(tmp_path, storage):
    reference = make_reference(CASES[0].hf).to(torch.bfloat16)
    save(reference, tmp_path, storage)
    tensors = load_hf_state_dict(tmp_path)
    for name, tensor in reference.state_dict().items():
        if name in tensors:
            np.testing.assert_array_equal(np.asarray(tensors[name], np.float32), tensor.float().numpy())
    config, model = load_hf_gpt_neo(tmp_path)  # parameters upcast to the default float32
    wte = np.asarray(model.wte[...])
    assert wte.shape[0] == 128 and not wte[config.vocab_size:].any()  # zero rows to a whole tile
    np.testing.assert_array_equal(wte[:config.vocab_size],
                                  reference.transformer.wte.weight.detach().float().numpy())


# --- bad input -----------------------------------------------------------------------------------


def write_config(directory, **changes) -> None:
    args = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "vocab_size": 50,
            "max_position_embeddings": 16, "attention_types": [[["global", "local"], 1]],
            "bos_token_id": 0, "eos_token_id": 0, **changes}
    transformers.GPTNeoConfig(**args).save_pretrained(directory)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_gpt_neo(tmp_path / "nowhere")


def test_missing_weights(tmp_path):
    write_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_gpt_neo(tmp_path)


@pytest.mark.parametrize("attention_types", [
    [[["local", "global"], 1]],  # alternation that starts local
    [[["global"], 1], [["local"], 2]],  # no single pattern
])
def test_unsupported_attention_layout(tmp_path, attention_types):
    layers = sum(repeat * len(kinds) for kinds, repeat in attention_types)
    write_config(tmp_path, num_layers=layers, attention_types=attention_types)
    with pytest.raises(ValueError, match="attention layout"):
        load_hf_gpt_neo(tmp_path)


def test_unsupported_activation_and_model_type(tmp_path):
    write_config(tmp_path, activation_function="quick_gelu")
    with pytest.raises(ValueError, match="activation_function='quick_gelu'"):
        load_hf_gpt_neo(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="not a GPT-Neo checkpoint"):
        load_hf_gpt_neo(tmp_path)


def test_weights_that_do_not_match_the_config(tmp_path):
    reference = make_reference(dict(hidden_size=16, num_layers=2, num_heads=2, vocab_size=50,
                                    max_position_embeddings=16))
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "vocab_size": 51}))
    with pytest.raises(ValueError, match="transformer.wte.weight"):
        load_hf_gpt_neo(tmp_path)


def test_layer_beyond_num_layers(tmp_path):
    make_reference(dict(hidden_size=16, num_layers=4, num_heads=2, vocab_size=50,
                        max_position_embeddings=16)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    layout = {"num_layers": 2, "attention_types": [[["global", "local"], 1]],
              "attention_layers": ["global", "local"]}
    (tmp_path / "config.json").write_text(json.dumps({**config, **layout}))
    with pytest.raises(ValueError, match="unexpected tensor 'h.2.attn"):
        load_hf_gpt_neo(tmp_path)


def test_missing_tensor(tmp_path):
    from safetensors.numpy import load_file, save_file

    make_reference(dict(hidden_size=16, num_layers=2, num_heads=2, vocab_size=50,
                        max_position_embeddings=16)).save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="lacks weights for groups.blocks.1.mlp.fc_bias"):
        load_hf_gpt_neo(tmp_path)


def test_bin_without_torch(tmp_path, monkeypatch):
    save(make_reference(dict(hidden_size=16, num_layers=2, num_heads=2, vocab_size=50,
                             max_position_embeddings=16)), tmp_path, "bin")
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # `import torch` now fails
    with pytest.raises(ImportError, match="needs torch"):
        load_hf_gpt_neo(tmp_path)
