"""The sparsity study on the built-in corpus: dense against routed top-1 experts (E = 1, 8, 32) at
matched active shapes, in two token arms, with replicate seeds.

    python -m neoscale.run --config=experiments/moe_cpu.py --dry_run   # the plan and its time
    python -m neoscale.run --config=experiments/moe_cpu.py

Variants: dense ``w{d}d4h{h}``, the sanity arm ``...e1k1`` (a routed layer with one expert: at the
same seed it is the dense model, tests/test_model.py), and ``...e8k1``, ``...e32k1`` (every MLP a
routed layer, Switch-style top-1, dropless), each at 6 widths (16, 20, 24, 32, 40, 48; depth 4,
head dimension 16 to 24: 48k to 223k active parameters with the 2048-piece vocabulary). Six widths
because the multiplier's law has 3 constants: its bootstrap needs resamples with at least 4
distinct computes, which 4 widths almost never give. Token arms:
``tokens_per_param=3,30`` (3 and 30 tokens per active parameter, the two sides of REFERENCE's
"E = 8 loses below ~29"), every run within 2 epochs of the corpus (the largest, 217k x 30 = 6.5M
tokens, reads ~1.45 epochs of ~4.5M). Replicates: 2 model seeds at the two middle
widths of every variant (the data seed, and so the held-out set and the data order, is shared),
so the report measures seed noise and the multiplier's intervals include it.

Learning rate: every variant uses the CPU demo's dense law at its *active* parameter count,
lr = 5.91 * N_active^-0.606 (experiments/cpu_demo.py). Why: with top-1 routing each token passes
through exactly the dense model's shape, and Switch and OLMoE train their MoEs at the dense rate
of the same active size. Swept at the smallest width only (RESULTS: at 30 tokens/param the routed
variants' best rate still leaves them 10-11% above dense's best); widths 20-48 were not swept.
Aux losses at their defaults (load balancing 1e-2, z-loss 1e-3; both have no effect at E = 1).

Measured (benchmarks/RESULTS.md, "The sparsity study"): 1h19m on the idle 2-core host; routed
experts lose to dense in both arms at these sizes (E = 8: 0.14x and 0.67x, E = 32: 0.17x and
0.33x), with 95% intervals wider than x/÷1.3 (the report says why). Its 2-size smoke version runs
in tests/test_moe_study.py.
"""

from neoscale.runner.config import base_config

SHAPES = ((16, 1), (20, 1), (24, 1), (32, 2), (40, 2), (48, 2))  # (d_model, heads) at depth 4
DEPTH = 4
VARIANTS = ("", "e1k1", "e8k1", "e32k1")  # dense, then routed top-1 with 1, 8, 32 experts
REPLICATED = ((24, 1), (32, 2))  # two seeds at the two middle widths of every variant


def size_name(d_model: int, heads: int, suffix: str) -> str:
    return f"w{d_model}d{DEPTH}h{heads}{suffix}"


def get_config():
    c = base_config()
    c.name = "moe_cpu"
    c.sizes = ",".join(size_name(d, h, v) for v in VARIANTS for d, h in SHAPES)
    c.replicates = ",".join(f"{size_name(d, h, v)}:2" for v in VARIANTS for d, h in REPLICATED)
    c.budget.tokens_per_param = "3,30"  # two token arms
    c.data.tokenizer = "train:2048"
    c.data.seq_len = 128
    c.data.heldout_tokens = 16384
    c.data.max_epochs = 2.0
    c.model.max_positions = 128
    c.model.window_size = 64
    c.train.batch_size = 16  # half the steps of 8: a tiny routed step costs its dispatch, not its FLOPs
    c.train.evals_per_run = 4
    c.train.checkpoints_per_run = 2
    c.train.log_every = 50
    c.train.tensorboard = False
    c.train.learning_rate_law = (5.91, -0.606)  # the CPU demo's dense law, on active parameters
    c.fit.n_bootstrap = 200
    return c
