"""A Chinchilla Approach-2 grid: several compute budgets x several sizes (IsoFLOP slices).

Each budget C trains every size on D = C / (FLOPs per token) tokens; per budget the loss against
log N is a parabola whose vertex is N_opt(C). The grid below spans ~16x in parameters around the
optimum of each budget on the CPU ladder; on TPU pass larger budgets and sizes, e.g.
``--flops=1e18,3e18,1e19 --sizes=w512d8h8,w768d12h12,...``.
"""

from neoscale.runner.config import base_config


def get_config():
    c = base_config()
    c.name = "isoflop"
    c.sizes = "cpu-100k,cpu-220k,cpu-400k,cpu-800k,cpu-1.8M"
    c.budget.flops = "3e13,1e14,3e14"
    c.data.tokenizer = "train:2048"
    c.data.seq_len = 128
    c.data.heldout_tokens = 32768
    c.model.max_positions = 128
    c.train.batch_size = 32
    return c
