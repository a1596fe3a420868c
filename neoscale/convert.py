"""Load a Hugging Face ``transformers`` GPT-Neo checkpoint into a neoscale ``GPTNeo``.

    config, model = load_hf_gpt_neo("path/to/gpt-neo-125m")
    logits, aux = model(tokens)  # tokens int [batch, seq] -> float32 logits [batch, seq, vocab]

The checkpoint directory holds ``config.json`` and the weights as ``model.safetensors`` (read with
numpy, no torch needed), a sharded ``model.safetensors.index.json``, or ``pytorch_model.bin``
(needs torch). The model is built abstractly (``nnx.eval_shape``) and filled with the checkpoint's
arrays, so no random model is materialised first. The embedding gets zero rows up to a multiple of
128 (``ModelConfig.vocab_pad_multiple``; masked out of every logit), as the GPT-Neo presets have.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from neoscale.model import GPTNeo, ModelConfig

# HF activation names (transformers.activations.ACT2FN) -> ours.
ACTIVATIONS = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu",
               "relu": "relu", "silu": "silu", "swish": "silu"}

# HF tensor name -> (our path, is a torch Linear weight). Linear weights are (out, in): they are
# transposed to (in, out) and reshaped to our shape, e.g. q_proj (d, d) -> (d_model, heads, head_dim)
# and out_proj (d, d) -> (heads, head_dim, d_model). Names under "h.{i}." are per layer.
TOP_LEVEL = {
    "wte.weight": (("wte",), False),
    "wpe.weight": (("wpe",), False),
    "ln_f.weight": (("ln_f", "scale"), False),
    "ln_f.bias": (("ln_f", "bias"), False),
}
PER_LAYER = {
    "ln_1.weight": (("ln_1", "scale"), False),
    "ln_1.bias": (("ln_1", "bias"), False),
    "attn.attention.q_proj.weight": (("attn", "q_proj"), True),
    "attn.attention.k_proj.weight": (("attn", "k_proj"), True),
    "attn.attention.v_proj.weight": (("attn", "v_proj"), True),
    "attn.attention.out_proj.weight": (("attn", "out_proj"), True),
    "attn.attention.out_proj.bias": (("attn", "out_bias"), False),
    "ln_2.weight": (("ln_2", "scale"), False),
    "ln_2.bias": (("ln_2", "bias"), False),
    "mlp.c_fc.weight": (("mlp", "fc"), True),
    "mlp.c_fc.bias": (("mlp", "fc_bias"), False),
    "mlp.c_proj.weight": (("mlp", "proj"), True),
    "mlp.c_proj.bias": (("mlp", "proj_bias"), False),
}
SKIPPED_SUFFIXES = ("attn.attention.bias", "attn.attention.masked_bias")  # causal-mask buffers


def config_from_hf(hf: dict, **overrides) -> ModelConfig:
    """Maps a GPT-Neo ``config.json`` dict to a ModelConfig; ``overrides`` replace fields.

    Raises ValueError for a model type or layout neoscale cannot express.
    """
    if hf.get("model_type", "gpt_neo") != "gpt_neo":
        raise ValueError(f"model_type={hf['model_type']!r} is not a GPT-Neo checkpoint (want 'gpt_neo')")
    layers = hf.get("attention_layers") or [
        kind for kinds, repeat in hf["attention_types"] for _ in range(repeat) for kind in kinds]
    if len(layers) != hf["num_layers"]:
        raise ValueError(f"attention layout lists {len(layers)} layers but num_layers={hf['num_layers']}")
    if set(layers) in ({"global"}, {"local"}):
        pattern = layers[0]
    elif layers == ["global", "local"] * (len(layers) // 2):
        pattern = "alternating"
    else:
        raise ValueError(f"attention layout {layers} is not supported; neoscale expresses all-global, "
                         "all-local or alternating global/local (starting global) layers")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation_function={activation!r} is not supported; valid: "
                         + ", ".join(ACTIVATIONS))
    fields = {
        "vocab_size": hf["vocab_size"],
        "max_positions": hf["max_position_embeddings"],
        "d_model": hf["hidden_size"],
        "num_layers": hf["num_layers"],
        "num_heads": hf["num_heads"],
        "mlp_dim": hf.get("intermediate_size"),  # None: 4 * d_model
        "attention_pattern": pattern,
        "window_size": hf.get("window_size", 256),
        "activation": ACTIVATIONS[activation],
        "layer_norm_eps": hf.get("layer_norm_epsilon", 1e-5),
        "tie_embeddings": hf.get("tie_word_embeddings", True),
        "attention_scale": "none",  # GPT-Neo does not scale attention scores
        "vocab_pad_multiple": 128,  # as the GPT-Neo presets: whole tiles, splits over a tensor axis
        **overrides,
    }
    return ModelConfig(**fields)


def load_hf_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads the weights of a checkpoint directory as {HF tensor name: numpy array}.

    Prefers safetensors (single file or sharded with an index); falls back to pytorch_model.bin.
    """
    path = Path(path)
    for index_name, single_name in (("model.safetensors.index.json", "model.safetensors"),
                                    ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (path / index_name).is_file():
            shards = sorted(set(json.loads((path / index_name).read_text())["weight_map"].values()))
        elif (path / single_name).is_file():
            shards = [single_name]
        else:
            continue
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            if not (path / shard).is_file():
                raise FileNotFoundError(f"{path / index_name} names shard {shard!r}, which is missing")
            tensors.update(_read_weights_file(path / shard))
        return tensors
    raise FileNotFoundError(f"no GPT-Neo weights in {path}: expected model.safetensors, "
                            "model.safetensors.index.json or pytorch_model.bin")


def _read_weights_file(file: Path) -> dict[str, np.ndarray]:
    if file.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return load_file(file)
        except TypeError:  # numpy has no bfloat16: read through JAX's dtypes instead
            from safetensors.flax import load_file as load_jax_file

            return {name: np.asarray(array) for name, array in load_jax_file(file).items()}
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {file.name} needs torch (pip install torch), or save the "
                          "checkpoint as safetensors") from None
    state_dict = torch.load(file, map_location="cpu", weights_only=True)
    return {name: tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
            for name, tensor in state_dict.items()}


def _target(name: str, config: ModelConfig) -> tuple[tuple, bool, int | None]:
    """HF tensor name -> (our parameter path, is a Linear weight, index on the 'layers' axis)."""
    name = name.removeprefix("transformer.")
    if name == "lm_head.weight" and not config.tie_embeddings:
        return ("lm_head",), True, None
    if name in TOP_LEVEL:
        return (*TOP_LEVEL[name], None)
    layer, _, rest = name.removeprefix("h.").partition(".")
    if name.startswith("h.") and layer.isdigit() and int(layer) < config.num_layers and rest in PER_LAYER:
        group, position = divmod(int(layer), config.layer_period)
        ours, linear = PER_LAYER[rest]
        return ("groups", "blocks", position, *ours), linear, group
    raise ValueError(f"unexpected tensor {name!r} in the checkpoint; is it a GPT-Neo model?")


def _fits(shape: tuple, target: tuple, linear: bool) -> bool:
    """Whether a (transposed) HF tensor of ``shape`` is our ``target`` with heads merged."""
    if not linear:
        return tuple(shape) == tuple(target)
    rows_first = (target[0], int(np.prod(target[1:])))  # (d_model, heads * head_dim), (d, ffn)
    cols_last = (int(np.prod(target[:-1])), target[-1])  # (heads * head_dim, d_model)
    return tuple(shape) in (rows_first, cols_last)


def _pad_vocabulary(name: str, tensor: np.ndarray, ours: tuple, config: ModelConfig) -> np.ndarray:
    """wte [V, D] or the untied head [D, V] (transposed) with zero rows / columns up to
    ``config.padded_vocab_size``; a checkpoint whose vocabulary is not ``config.vocab_size`` is an error."""
    axis = 0 if ours == ("wte",) else 1
    if tensor.shape[axis] != config.vocab_size:
        raise ValueError(f"tensor {name!r} has {tensor.shape[axis]} vocabulary entries, but config.json "
                         f"says vocab_size={config.vocab_size}; is the config from the same checkpoint?")
    widths = [(0, 0), (0, 0)]
    widths[axis] = (0, config.padded_vocab_size - config.vocab_size)
    return np.pad(tensor, widths)


def load_hf_gpt_neo(path: str | Path, *, dtype: str | None = None,
                    param_dtype: str | None = None) -> tuple[ModelConfig, GPTNeo]:
    """Loads a ``transformers`` GPT-Neo checkpoint directory as ``(config, model)``.

    ``dtype`` / ``param_dtype`` override the compute and parameter dtypes (default float32).
    ``model(tokens)`` returns ``(logits, aux)``: float32 logits [batch, seq, vocab] and the (zero,
    for a dense model) MoE aux dict. Raises FileNotFoundError / ValueError with one-line messages.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path / 'config.json'} not found; give a directory saved by "
                                "transformers' save_pretrained")
    overrides = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v is not None}
    try:
        config = config_from_hf(json.loads((path / "config.json").read_text()), **overrides)
    except KeyError as missing:
        raise ValueError(f"{path / 'config.json'} lacks {missing}; is it a GPT-Neo config?") from None
    except ValueError as error:
        raise ValueError(f"{path / 'config.json'}: {error}") from None
    tensors = load_hf_state_dict(path)

    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: GPTNeo(config, rngs=nnx.Rngs(0))))
    shapes = {p: v.shape for p, v in nnx.to_flat_state(abstract)}
    arrays: dict[tuple, np.ndarray] = {}  # our path -> array ([layers, ...] for stacked layers)
    filled: dict[tuple, set[int]] = {}  # stacked path -> indices on the 'layers' axis seen so far
    for name in sorted(tensors):
        if name.endswith(SKIPPED_SUFFIXES) or (name == "lm_head.weight" and config.tie_embeddings):
            continue
        ours, linear, group = _target(name, config)
        tensor = tensors.pop(name)
        tensor = tensor.T if linear else tensor
        shape = shapes[ours] if group is None else shapes[ours][1:]
        if ours in (("wte",), ("lm_head",)):
            tensor = _pad_vocabulary(name, tensor, ours, config)
        if not _fits(tensor.shape, shape, linear):
            raise ValueError(f"tensor {name!r} has shape {tensor.shape}, but config.json implies "
                             f"{shape}; is the config from the same checkpoint?")
        if group is None:
            arrays[ours] = tensor.reshape(shape)
        else:
            arrays.setdefault(ours, np.zeros(shapes[ours], tensor.dtype))[group] = tensor.reshape(shape)
            filled.setdefault(ours, set()).add(group)
    missing = [".".join(map(str, p)) for p in shapes
               if p not in arrays or (p in filled and len(filled[p]) != shapes[p][0])]
    if missing:
        raise ValueError(f"checkpoint lacks weights for {', '.join(missing)} (some or all layers)")
    pdtype = jnp.dtype(config.param_dtype)
    state = nnx.from_flat_state([(p, v.replace(jnp.asarray(arrays.pop(p), pdtype)))
                                 for p, v in nnx.to_flat_state(abstract)])
    return config, nnx.merge(graphdef, state)


__all__ = ["load_hf_gpt_neo", "config_from_hf", "load_hf_state_dict"]
