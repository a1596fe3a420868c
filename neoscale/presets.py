"""Named model sizes: the GPT-Neo family, a CPU ladder, and a grammar for any width/depth/sparsity.

Valid names (see ``model_config``):

* GPT-Neo presets ``125M``, ``350M``, ``760M``, ``1.3B``, ``2.7B`` (total parameters at vocab 50257).
* The CPU ladder ``cpu-100k`` ... ``cpu-14M``, named by their *non-embedding* parameter count
  (the embedding count depends on the tokenizer's vocabulary), small enough to train on a laptop.
* Custom shapes ``w{d_model}d{layers}h{heads}``, e.g. ``w256d4h4``.
* Any of the above with routed experts appended: ``w512d8h8e8k2``, ``125M-e8k2``, ``cpu-800k-e4k1``.
"""

from __future__ import annotations

import re

from neoscale.model.config import ModelConfig

# name -> (d_model, layers, heads). Shapes from REFERENCE.md §1.
GPT_NEO_PRESETS: dict[str, tuple[int, int, int]] = {
    "125M": (768, 12, 12),
    "350M": (1024, 24, 16),
    "760M": (1536, 24, 16),
    "1.3B": (2048, 24, 16),
    "2.7B": (2560, 32, 20),
}

# name -> (d_model, layers, heads); the name is the non-embedding parameter count.
CPU_LADDER: dict[str, tuple[int, int, int]] = {
    "cpu-100k": (64, 2, 2),
    "cpu-220k": (96, 2, 3),
    "cpu-400k": (128, 2, 4),
    "cpu-800k": (128, 4, 4),
    "cpu-1.8M": (192, 4, 6),
    "cpu-3.2M": (256, 4, 4),
    "cpu-6.3M": (256, 8, 8),
    "cpu-14M": (384, 8, 6),
}
# The ladder trains at short context: a window of 64 keeps local layers local at seq_len 256.
CPU_LADDER_DEFAULTS = {"max_positions": 512, "window_size": 64}

_CUSTOM = re.compile(r"^w(?P<d>\d+)d(?P<layers>\d+)h(?P<heads>\d+)(?:e(?P<e>\d+)k(?P<k>\d+))?$")
_EXPERTS_SUFFIX = re.compile(r"^(?P<base>.+)-e(?P<e>\d+)k(?P<k>\d+)$")

VALID_FORMS = (
    "valid sizes: GPT-Neo presets " + ", ".join(GPT_NEO_PRESETS)
    + "; CPU ladder " + ", ".join(CPU_LADDER)
    + "; custom w{d_model}d{layers}h{heads} (e.g. w256d4h4); any of these with experts appended "
    "as e{experts}k{top_k} (w512d8h8e8k2) or -e{experts}k{top_k} for named sizes (125M-e8k2)"
)


# GPT-Neo sizes pad the embedding to whole 128-row tiles (50257 -> 50304), so the vocabulary
# splits over a tensor axis; counts and FLOPs stay GPT-Neo's own (ModelConfig.vocab_pad_multiple).
GPT_NEO_DEFAULTS = {"vocab_pad_multiple": 128}


def _named_shape(name: str) -> tuple[int, int, int, dict] | None:
    if name in GPT_NEO_PRESETS:
        return (*GPT_NEO_PRESETS[name], dict(GPT_NEO_DEFAULTS))
    if name in CPU_LADDER:
        return (*CPU_LADDER[name], dict(CPU_LADDER_DEFAULTS))
    return None


def _experts(match: re.Match) -> dict:
    """The e{experts}k{top_k} suffix's fields; e1k1 is a routed layer with one expert, not dense."""
    experts = {"num_experts": int(match["e"]), "top_k": int(match["k"])}
    return experts | ({"routed": True} if experts["num_experts"] == 1 else {})


def model_config(name: str, **overrides) -> ModelConfig:
    """Returns the ModelConfig for a size name; ``overrides`` replace fields (e.g. vocab_size).

    Raises ValueError naming the valid forms for an unknown or malformed name, and for an
    inconsistent shape (width not divisible by heads, top-k larger than experts, ...).
    """
    name = name.strip()
    experts: dict = {}
    base = name
    shape = _named_shape(name)
    if shape is None and (match := _EXPERTS_SUFFIX.match(name)):
        base = match["base"]
        experts = _experts(match)
        shape = _named_shape(base)
    if shape is None and (match := _CUSTOM.match(name)):
        shape = (int(match["d"]), int(match["layers"]), int(match["heads"]), {})
        if match["e"] is not None:
            experts = _experts(match)
    if shape is None:
        raise ValueError(f"unknown model size {name!r}; {VALID_FORMS}")
    d_model, layers, heads, defaults = shape
    fields = {"d_model": d_model, "num_layers": layers, "num_heads": heads, **defaults, **experts}
    fields.update(overrides)
    try:
        return ModelConfig(**fields)
    except ValueError as error:
        raise ValueError(f"size {name!r}: {error}") from None
    except TypeError as error:
        raise ValueError(f"size {name!r}: bad override ({error})") from None


def parse_sizes(spec: str) -> list[str]:
    """Splits a comma-separated size list and validates every name (one-line ValueError)."""
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise ValueError(f"empty size list {spec!r}; give comma-separated sizes, e.g. 125M,350M; "
                         + VALID_FORMS)
    for name in names:
        model_config(name)
    return names
