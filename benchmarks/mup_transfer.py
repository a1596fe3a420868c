"""Does the best learning rate transfer from the smallest to the largest size of a ladder?

For each parametrization, sweeps the peak learning rate (powers of 2) at the smallest and the
largest size of a ladder, trains each for the same steps on a noisy synthetic language (arithmetic
progressions modulo the vocabulary, random stride 1-8, 10% of the tokens replaced at random: the
loss has a floor and the stride must be read from the context, so attention matters), and prints
per size the best rate (the grid's and a parabola's vertex through its neighbours, in log2 lr),
the best held-out loss, and what the largest size loses with the smallest size's best rate.

    python benchmarks/mup_transfer.py                      # sp and mup across 8x width,
                                                           # completep across 8x width and 4x depth
    python benchmarks/mup_transfer.py --parametrizations=mup --steps=100
    python benchmarks/mup_transfer.py --parametrizations=mup --steps=400 \
        --output_multiplier=4 --hidden_init_std=0.08   # μP's base multipliers (RESULTS.md)
    python benchmarks/mup_transfer.py --parametrizations=mup --steps=400 --log2_rates=-9,-8,-7,-6,-5,-4 \
        --base_output_multipliers=1,2,4,8 --base_hidden_init_stds=0.02,0.04,0.08,0.16
        # tune the base's multipliers with the rate at the smallest size, then transfer

Losses, not times: valid on a busy machine. The project's AdamW, schedule and multipliers
(``neoscale.training.optimizer``, ``neoscale.model.parametrization``); one compile per size (the
rate is an argument of the jitted step).
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from neoscale.model import ModelConfig, parametrization
from neoscale.training.optimizer import make_optimizer, make_schedule, weight_decay_mask
from neoscale.training.state import ModelParams
from neoscale.training.step import loss_fn

VOCAB = 256
NOISE = 0.1


def batches(seed: int, count: int, batch: int, seq: int) -> list[dict[str, jax.Array]]:
    """``count`` batches of noisy progressions (inputs, targets int32 [batch, seq])."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        start = rng.integers(0, VOCAB, (batch, 1))
        stride = rng.integers(1, 9, (batch, 1))
        tokens = (start + stride * np.arange(seq + 1)) % VOCAB
        noisy = rng.random(tokens.shape) < NOISE
        tokens = np.where(noisy, rng.integers(0, VOCAB, tokens.shape), tokens)
        out.append({"inputs": jnp.asarray(tokens[:, :-1], jnp.int32),
                    "targets": jnp.asarray(tokens[:, 1:], jnp.int32)})
    return out


def model_config(name: str, width: int, depth: int, base: tuple[int, int], seq: int,
                 output_multiplier: float = 1.0, hidden_init_std: float | None = None) -> ModelConfig:
    mup_base = {} if name == "sp" else {"output_multiplier": output_multiplier,
                                        "hidden_init_std": hidden_init_std}
    return ModelConfig(vocab_size=VOCAB, max_positions=seq, d_model=width, num_layers=depth,
                       num_heads=4, window_size=seq // 2, parametrization=name,
                       base_d_model=base[0], base_num_layers=base[1], loss_impl="plain", **mup_base)


def sweep_size(config: ModelConfig, rates: list[float], args) -> list[float]:
    """Held-out loss after ``args.steps`` steps at each peak rate (diverged runs: inf)."""
    model_params = ModelParams(config, seed=0)
    decay = weight_decay_mask(model_params.logical_specs)
    multipliers = parametrization.adam_multipliers(config, model_params.logical_specs)
    unit = make_schedule("cosine", 1.0, args.steps, args.steps // 10)

    def optimizer(lr):
        return make_optimizer(lambda count: lr * unit(count), decay, multipliers=multipliers)

    @jax.jit
    def step(params, opt_state, batch, lr):
        grads, _ = jax.grad(lambda p: loss_fn(p, model_params, batch), has_aux=True)(params)
        updates, opt_state = optimizer(lr).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def evaluate(params, batch):
        return loss_fn(params, model_params, batch)[1]["loss"]

    train = batches(1, args.steps, args.batch_size, args.seq_len)
    heldout = batches(2, 4, args.batch_size, args.seq_len)
    init = jax.jit(model_params.init)
    losses = []
    for lr in rates:
        params = init()
        opt_state = optimizer(1.0).init(params)
        lr_array = jnp.asarray(lr, jnp.float32)
        for batch in train:
            params, opt_state = step(params, opt_state, batch, lr_array)
        loss = float(np.mean([evaluate(params, batch) for batch in heldout]))
        losses.append(loss if math.isfinite(loss) else math.inf)
    return losses


def optimum(rates: list[float], losses: list[float]) -> tuple[float, float]:
    """(the grid's best rate, the vertex of a parabola in log2(lr) through it and its neighbours)."""
    i = int(np.argmin(losses))
    if 0 < i < len(rates) - 1 and all(math.isfinite(v) for v in losses[i - 1:i + 2]):
        x = np.log2(rates[i - 1:i + 2])
        a, b, _ = np.polyfit(x, losses[i - 1:i + 2], 2)
        if a > 0:
            return rates[i], float(2 ** np.clip(-b / (2 * a), x[0], x[2]))
    return rates[i], rates[i]


def ladder(name: str, args) -> tuple[tuple[int, int], tuple[int, int]]:
    """(smallest, largest) (width, depth) of the ladder; completep also deepens."""
    small = (args.base_width, args.base_depth)
    large = (args.base_width * args.width_ratio,
             args.base_depth * (args.depth_ratio if name == "completep" else 1))
    return small, large


def _floats(text: str, default) -> list:
    return [float(v) for v in text.split(",")] if text else [default]


def tune_base(name: str, small: tuple[int, int], rates: list[float], args) -> tuple[float, float | None]:
    """(α_out, σ_base) with the lowest loss over the grid x rates at the smallest size (printed)."""
    best, best_loss = None, math.inf
    for out in _floats(args.base_output_multipliers, args.output_multiplier):
        for std in _floats(args.base_hidden_init_stds, args.hidden_init_std):
            losses = sweep_size(model_config(name, *small, small, args.seq_len, out, std), rates, args)
            print(f"{name} base grid w{small[0]} d{small[1]} α_out {out:g} σ {std}: "
                  f"{[round(v, 4) for v in losses]}", flush=True)
            if min(losses) < best_loss:
                best, best_loss = (out, std), min(losses)
    print(f"{name}: best base α_out {best[0]:g}, σ {best[1]} (loss {best_loss:.4f})", flush=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parametrizations", default="sp,mup,completep")
    parser.add_argument("--base_width", type=int, default=32)
    parser.add_argument("--base_depth", type=int, default=2)
    parser.add_argument("--width_ratio", type=int, default=8)
    parser.add_argument("--depth_ratio", type=int, default=4)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--output_multiplier", type=float, default=1.0,
                        help="μP's base output multiplier α_out (mup / completep)")
    parser.add_argument("--hidden_init_std", type=float, default=None,
                        help="μP's base hidden init std (default: init_std, 0.02)")
    parser.add_argument("--base_output_multipliers", default="",
                        help="mup / completep: first sweep these α_out (x --base_hidden_init_stds x the "
                             "rates) at the smallest size, then transfer the best (μP's recipe)")
    parser.add_argument("--base_hidden_init_stds", default="",
                        help="the base hidden init stds of that grid (default: --hidden_init_std)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--log2_rates", default="-12,-11,-10,-9,-8,-7,-6,-5,-4",
                        help="peak learning rates 2^k, comma-separated k")
    args = parser.parse_args()
    rates = [2.0 ** int(k) for k in args.log2_rates.split(",")]
    rows, grids = [], []
    for name in args.parametrizations.split(","):
        small, large = ladder(name, args)
        base = (args.output_multiplier, args.hidden_init_std)
        if name != "sp" and (args.base_output_multipliers or args.base_hidden_init_stds):
            base = tune_base(name, small, rates, args)
        results = {}
        for width, depth in (small, large):
            started = time.time()
            config = model_config(name, width, depth, small, args.seq_len, *base)
            losses = sweep_size(config, rates, args)
            results[(width, depth)] = losses
            grids.append(f"| {name} | w{width} d{depth} | " + " | ".join(f"{v:.4f}" for v in losses) + " |")
            seconds = time.time() - started
            print(f"{name} w{width} d{depth}: {[round(v, 4) for v in losses]} ({seconds:.0f} s)", flush=True)
        best_small, vertex_small = optimum(rates, results[small])
        best_large, vertex_large = optimum(rates, results[large])
        transferred = results[large][rates.index(best_small)]
        lost = transferred / min(results[large]) - 1
        rows.append(f"| {name} | w{small[0]} d{small[1]} -> w{large[0]} d{large[1]} | "
                    f"2^{math.log2(best_small):.0f} (2^{math.log2(vertex_small):.2f}) | "
                    f"2^{math.log2(best_large):.0f} (2^{math.log2(vertex_large):.2f}) | "
                    f"{vertex_large / vertex_small:.2f}x | {min(results[small]):.4f} | "
                    f"{min(results[large]):.4f} | {transferred:.4f} | {100 * lost:.2f}% |")
    print("\nHeld-out loss by peak learning rate (columns 2^k, k = " + args.log2_rates + "):\n")
    print("| parametrization | size | " + " | ".join(f"2^{k}" for k in args.log2_rates.split(",")) + " |")
    print("|---|---|" + "---:|" * len(rates))
    print("\n".join(grids))
    print("\nTransfer (grid optimum, parabola vertex in brackets; loss lost = the largest size at the "
          "smallest size's grid optimum vs at its own):\n")
    print("| parametrization | ladder | best lr, smallest | best lr, largest | optimum moved | "
          "best loss, smallest | best loss, largest | largest at transferred lr | loss lost |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
