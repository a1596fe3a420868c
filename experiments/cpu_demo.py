"""The default study: a ladder of small GPT-Neo models on the built-in corpus, ~10 minutes on 2 cores.

    python -m neoscale.run

Five sizes from w32d2h2 to cpu-800k (11x in total and 31x in non-embedding parameters) train on
the offline built-in English corpus with a small (2048-piece) vocabulary, so that embeddings do
not dominate the smallest models, at sequence length 128. Each size sees 1.5 tokens per parameter
(35 to 392 steps of 32 x 128 tokens; Chinchilla's 20 would take the largest size alone about an
hour on 2 cores), so compute grows ~quadratically (120x) along the ladder. With the same tokens
for every size (``--tokens=1e6``), 244 steps were too few for the GPT-3-rule learning rates to
order the final losses by size (cpu-220k ended above cpu-100k); more tokens for larger sizes keeps
loss falling with compute. The study ends with a loss-vs-compute fit, its plot and report.md.
"""

from neoscale.runner.config import base_config


def get_config():
    c = base_config()
    c.name = "cpu_demo"
    c.sizes = "w32d2h2,cpu-100k,cpu-220k,cpu-400k,cpu-800k"
    c.budget.tokens_per_param = 1.5
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
