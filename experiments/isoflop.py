"""A Chinchilla Approach-2 grid: several compute budgets x several sizes (IsoFLOP slices).

Each budget C trains every size on D = C / (FLOPs per token) tokens; per budget the loss against
log N is a parabola whose vertex is N_opt(C). The budgets are bounded by the built-in corpus
(~3.7M training tokens at a 2048-piece vocabulary): at the largest, 1.2e13 FLOPs, the smallest size
reads ~2.2 epochs, below the 4-epoch limit (``data.max_epochs``). The optimum N ~ sqrt(C / 120)
(20 tokens per parameter) moves from ~160k to ~320k parameters across the budgets, inside the
100k-800k ladder. On TPU pass larger budgets, sizes and a larger corpus, e.g.
``--flops=1e18,3e18,1e19 --sizes=w512d8h8,w768d12h12,... --data=prepared:gs://...``.
"""

from neoscale.runner.config import base_config


def get_config():
    c = base_config()
    c.name = "isoflop"
    c.sizes = "cpu-100k,cpu-220k,cpu-400k,cpu-800k"
    c.budget.flops = "3e12,6e12,1.2e13"
    c.data.tokenizer = "train:2048"
    c.data.seq_len = 128
    c.data.heldout_tokens = 32768
    c.model.max_positions = 128
    c.train.batch_size = 32
    return c
