"""The sparsity axis: dense models against E = 4, 8, 16 routed experts (top-1) at several widths.

Every model sees the same number of tokens (``budget.tokens``), so loss differences at equal
active parameters come from sparsity alone (Clark et al. 2022). Sized for one TPU host, on
FineWeb-Edu with the GPT-2 tokenizer (2e8 tokens per run, far below the corpus: no repetition);
prepare the corpus once with ``python -m neoscale.prepare`` and pass ``--data=prepared:DIR``. On a
laptop: ``--sizes=w128d4h4,w128d4h4e4k1 --tokens=2e6 --data=builtin
--config.data.tokenizer=train:8192`` (0.7 epochs of the built-in corpus).

What has been measured: the routed step's cost on a CPU (E = 8 top-1 at 1.22x dense's time per
FLOP at w256, E = 32 at 1.53x; benchmarks/RESULTS.md, "A routed step that costs what it
computes"), not yet what sparsity buys in loss. The laptop recipe (equal tokens, ~2.5 tokens per
active parameter) sits in the short-training regime where some published laws predict E = 8 loses
to dense; the CPU study with two token arms, seeds and the published laws beside its multipliers
is experiments/moe_cpu.py.
"""

from neoscale.runner.config import base_config

WIDTHS = ((256, 4, 4), (384, 6, 6), (512, 8, 8))
EXPERTS = (1, 4, 8, 16)


def get_config():
    c = base_config()
    c.name = "moe"
    names = []
    for d, layers, heads in WIDTHS:
        for experts in EXPERTS:
            suffix = f"e{experts}k1" if experts > 1 else ""
            names.append(f"w{d}d{layers}h{heads}{suffix}")
    c.sizes = ",".join(names)
    c.budget.tokens = 2e8
    c.data.data = "hf:HuggingFaceFW/fineweb-edu:sample-100BT"
    c.data.corpus_tokens = 100e9
    c.data.tokenizer = "gpt2"
    c.data.seq_len = 512
    c.model.max_positions = 512
    c.model.window_size = 128
    c.model.moe_every = 2  # experts in every other layer (GShard / Switch)
    c.train.batch_size = 128
    c.train.evals_per_run = 10
    return c
