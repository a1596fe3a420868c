"""The default study: a ladder of small GPT-Neo models on the built-in corpus, ~10 minutes on 2 cores.

    python -m neoscale.run

Five sizes from cpu-100k to cpu-1.8M (about 9x in total and 18x in non-embedding parameters)
train on the offline built-in English corpus with a small (2048-piece) vocabulary, so that the
embeddings do not dominate the smallest models, at sequence length 128. Each size gets a fixed
number of tokens per parameter, so compute grows about quadratically along the ladder; the
study ends with a loss-vs-compute fit, its plot and report.md.
"""

from neoscale.runner.config import base_config


def get_config():
    c = base_config()
    c.name = "cpu_demo"
    c.sizes = "cpu-100k,cpu-220k,cpu-400k,cpu-800k,cpu-1.8M"
    c.budget.tokens_per_param = 2.0
    c.data.tokenizer = "train:2048"
    c.data.seq_len = 128
    c.data.heldout_tokens = 16384
    c.model.max_positions = 128
    c.model.window_size = 64
    c.train.batch_size = 32
    c.train.evals_per_run = 8
    c.train.checkpoints_per_run = 4
    c.train.log_every = 25
    c.train.tensorboard = True
    c.fit.n_bootstrap = 100
    return c
