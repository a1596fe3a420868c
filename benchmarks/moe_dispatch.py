r"""The routed MLP layer alone: gradient time of each dropless dispatch against the dense MLP.

    python benchmarks/moe_dispatch.py --experts=8,32 --dispatch=blocked,ragged --block_rows=64,128

One layer (d_model 256, expert width 1024, top-1, 8 x 256 tokens by default: the shapes of
``neoscale.bench --sizes=w256d4h4,w256d4h4e8k1,w256d4h4e32k1 --seq_len=256``), value and gradient
of sum(y²) jitted, every variant timed in alternation over ``--rounds`` rounds; the minimum over
the timed calls is printed (the machine may be shared), with the ratio to the dense MLP's. The
whole train step, optimizer included, is ``neoscale.bench``'s.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx

from neoscale.model.config import ModelConfig
from neoscale.model.layers import Mlp
from neoscale.model.moe import MoeMlp

_EXPERTS = flags.DEFINE_list("experts", ["8", "32"], "expert counts")
_DISPATCH = flags.DEFINE_list("dispatch", ["blocked", "ragged"], "dropless dispatches")
_BLOCK_ROWS = flags.DEFINE_list("block_rows", ["64"], "rows per block of the blocked dispatch")
_TOP_K = flags.DEFINE_integer("top_k", 1, "experts per token")
_D_MODEL = flags.DEFINE_integer("d_model", 256, "width")
_TOKENS = flags.DEFINE_integer("tokens", 2048, "tokens per call (batch x seq)")
_ROUNDS = flags.DEFINE_integer("rounds", 4, "timed rounds")
_CALLS = flags.DEFINE_integer("calls", 2, "timed calls per variant per round")


def gradient_fn(config: ModelConfig):
    """(jitted value-and-gradient of sum(y²) over the layer's parameters, the parameters)."""
    layer = MoeMlp(config, rngs=nnx.Rngs(0)) if config.is_moe else Mlp(config, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(layer)

    def loss(params, x):
        out = nnx.merge(graphdef, params)(x)
        return jnp.sum(jnp.square(out[0] if isinstance(out, tuple) else out))

    return jax.jit(jax.value_and_grad(loss)), params


def main(argv: list[str]) -> None:
    del argv
    d = _D_MODEL.value
    x = jax.random.normal(jax.random.key(0), (_TOKENS.value // 256, 256, d))
    base = ModelConfig(vocab_size=256, d_model=d, num_layers=4, num_heads=4, top_k=_TOP_K.value)
    variants = {"dense MLP": base}
    for experts in map(int, _EXPERTS.value):
        for dispatch in _DISPATCH.value:
            for rows in (map(int, _BLOCK_ROWS.value) if dispatch == "blocked" else [64]):
                label = f"E={experts} {dispatch}" + (f" B={rows}" if dispatch == "blocked" else "")
                variants[label] = base.replace(num_experts=experts, moe_dispatch=dispatch,
                                               moe_block_rows=rows)
    compiled = {label: gradient_fn(config) for label, config in variants.items()}
    for fn, params in compiled.values():
        jax.block_until_ready(fn(params, x))  # compile
    seconds = {label: [] for label in variants}
    for _ in range(_ROUNDS.value):
        for label, (fn, params) in compiled.items():
            for _ in range(_CALLS.value):
                start = time.perf_counter()
                jax.block_until_ready(fn(params, x))
                seconds[label].append(time.perf_counter() - start)
    dense = min(seconds["dense MLP"])
    print(f"MoE layer gradient, d_model {d}, {_TOKENS.value} tokens, top-{_TOP_K.value} "
          f"(min of {_ROUNDS.value * _CALLS.value} calls; {jax.devices()[0].device_kind})")
    for label, times in seconds.items():
        print(f"  {label:<22} {min(times) * 1e3:9.1f} ms  {min(times) / dense:6.2f}x dense")


if __name__ == "__main__":
    app.run(main)
