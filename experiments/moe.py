"""The sparsity axis: dense models against E = 4, 8, 16 routed experts (top-1) at several widths.

Every model sees the same number of tokens (``budget.tokens``), so loss differences at equal
active parameters come from sparsity alone (Clark et al. 2022). Sized for one TPU host, on
FineWeb-Edu with the GPT-2 tokenizer (2e8 tokens per run, far below the corpus: no repetition);
prepare the corpus once with ``python -m neoscale.prepare`` and pass ``--data=prepared:DIR``. On a
laptop: ``--sizes=w128d4h4,w128d4h4e4k1 --tokens=2e6 --data=builtin
--config.data.tokenizer=train:8192`` (0.7 epochs of the built-in corpus).

What has been measured (benchmarks/RESULTS.md): the routed step's cost on a CPU (E = 8 top-1 at
1.18x dense's time per FLOP at w256, E = 32 at 1.56x, idle), and, in the CPU study
experiments/moe_cpu.py (48k-223k active parameters, 3 and 30 tokens per parameter, the dense
rate law), routed experts losing to dense: E = 8 at 0.14x and 0.77x dense's compute efficiency,
E = 32 at 0.4x. The laptop recipe below (equal tokens, ~2.5 tokens per active parameter) sits
in that short-training regime: expect E = 8 to lose unless its rate is swept.
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
