"""Which μP rule costs the wide model its loss? One rule switched back at a time (prints a table).

    python benchmarks/mup_ablations.py [--width=256] [--steps=400] [--log2_rates=-7,-5,-3]

Trains benchmarks/mup_transfer.py's task at one width under μP (base width 32), once per variant,
each changing one of ``neoscale.model.parametrization``'s rules (or the optimizer) by replacing
the function that defines it for this process only, and prints each variant's held-out loss per
rate and its best. A diagnostic: the shipped rules are not changed. Losses, not times.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mup_transfer  # noqa: E402

from neoscale.model import parametrization as rules  # noqa: E402
from neoscale.training import optimizer  # noqa: E402

SHIPPED = {name: getattr(rules, name) for name in ("readout_multiplier", "attention_scale", "adam_rule",
                                                    "init_std")}
SHIPPED_OPTIMIZER = optimizer.make_optimizer


def _small_lr(kinds):
    def rule(config, kind):
        return (1.0 / rules.width_mult(config), 1.0) if kind in kinds else SHIPPED["adam_rule"](config, kind)
    return {"adam_rule": rule}


def _init(kinds, std):
    def init(config, kind):
        return std(config) if kind in kinds else SHIPPED["init_std"](config, kind)
    return {"init_std": init}


VARIANTS = {
    "μP as shipped": {},
    "no gradient clipping": {"optimizer": {"clip_norm": 1e9}},
    "no weight decay": {"optimizer": {"weight_decay": 0.0}},
    "query initialised at random": _init({"query"}, lambda c: c.init_std),
    "attention-logit multiplier 1": {"attention_scale": lambda c: 1.0},
    "embedding LR x 1/m_N": _small_lr({"embedding", "readout"}),
    "LayerNorm and bias LR x 1/m_N": _small_lr({"vector", "block_vector"}),
    "hidden init 1/sqrt(d_model)": _init({"hidden"}, lambda c: c.d_model ** -0.5),
    "readout multiplier 1": {"readout_multiplier": lambda c: 1.0},
    "hidden init 0.02 as SP": _init({"hidden"}, lambda c: c.init_std),
    "readout multiplier 1 and hidden init 0.02": {"readout_multiplier": lambda c: 1.0,
                                                  **_init({"hidden"}, lambda c: c.init_std)},
}


def run_variant(changes: dict, width: int, rates: list[float], args) -> list[float]:
    for name, function in SHIPPED.items():
        setattr(rules, name, changes.get(name, function))
    extra = changes.get("optimizer", {})
    mup_transfer.make_optimizer = lambda *a, **kw: SHIPPED_OPTIMIZER(*a, **{**kw, **extra})
    config = mup_transfer.model_config("mup", width, 2, (args.base_width, 2), args.seq_len)
    return mup_transfer.sweep_size(config, rates, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--base_width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--log2_rates", default="-9,-7,-5,-3")
    args = parser.parse_args()
    ks = [int(k) for k in args.log2_rates.split(",")]
    rates = [2.0 ** k for k in ks]
    print(f"| μP at w{args.width}, changed | " + " | ".join(f"2^{k}" for k in ks) + " | best |")
    print("|---|" + "---:|" * (len(ks) + 1))
    for name, changes in VARIANTS.items():
        losses = run_variant(changes, args.width, rates, args)
        best = min(range(len(ks)), key=losses.__getitem__)
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in losses)
              + f" | {losses[best]:.4f} (2^{ks[best]}) |", flush=True)


if __name__ == "__main__":
    main()
