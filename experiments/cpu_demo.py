"""The default study: a ladder of small GPT-Neo models on the built-in corpus, ~10 minutes on 2 cores.

    python -m neoscale.run

Five sizes from w32d2h2 to cpu-800k (11x in total and 31x in non-embedding parameters) train on
the offline built-in English corpus with a small (2048-piece) vocabulary, so that embeddings do
not dominate the smallest models, at sequence length 128. Each size trains on 1.5 tokens per
parameter (35 to 392 steps of 32 x 128 tokens; at most 0.42 epochs of the corpus) with a
warmup-stable-decay schedule, and forks cooldown branches ending at 25% and 50% of its run
(Hägele et al. 2024), so every size gives three (N, D) points: 15 in all, enough for Chinchilla's
Approach 3 beside L(C) and the Approach-1 envelope, for ~20% more compute.

Measured on an idle 2-core machine (matmul probe ~250 GFLOP/s; `python -m neoscale.run`,
2026-11-22): 9m44s from a fresh workdir, preparation included. Fitting without the largest size,
L(C) predicts its held-out loss within 1.3% and Approach 3 within 2.0% (2.6% for its 25% branch);
the irreducible loss E is not identified (the fits put it at 0 and report.md says so), and
Approach 3's exponents (alpha 0.92, beta 0.13) give a compute-optimal allocation that means
nothing: the models are far from converged at 1.5 tokens per parameter. Without the
branches (the previous default) the study ran in ~5 minutes but Approach 3 had too few points.
The learning rates follow the GPT-3 rule scaled by sqrt(batch / table batch) for these 4k-token
batches (3.2e-4 to 1.2e-3); a learning-rate sweep of the small sizes is the next thing to try.
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
    c.cooldowns = "0.25,0.5,1.0"
    c.fit.n_bootstrap = 100
    return c
