"""The default study: six small GPT-Neo models on the built-in corpus (RESULTS.md: its time).

    python -m neoscale.run

One shape family (depth 4, head dimension 24 to 40, width 32 to 128: 120k to 1.07M parameters) trains
on the offline built-in English corpus with a 2048-piece vocabulary at sequence length 128, 1.5
tokens per parameter each (176 to 1568 steps of 8 x 128 tokens; six sizes so that the ladder's law
has a rollout backtest once the rule excludes the smallest, on the plateau), with a warmup-stable-decay
schedule and cooldown branches ending at 25% and 50% of every run, and a second model seed at two
sizes (the seed noise every interval includes): 24 runs, enough for L(C), the ladder's law,
Chinchilla's Approach 3 and the Approach-1 envelope. The learning rate
comes from a law fitted to CPU sweeps of an earlier ladder, lr = 5.91 * N^-0.606; the largest
size gets the law's extrapolation, never tuned.

At every evaluation each run also scores five downstream tasks offline (ARC-Easy, PIQA,
WinoGrande, CommonsenseQA, OpenBookQA; 10 examples each, the same at every evaluation): bits per
byte of the correct answer and accuracy beside chance, in results.csv and the report. Models this
small sit at chance on accuracy; the bits per byte fall with compute. The 10 examples keep the
scoring under 10% of the demo's time (benchmarks/RESULTS.md "Downstream tasks in the loop").

What it measures, how long it takes and how far its laws can be trusted beyond the ladder, with
the command for each figure: benchmarks/RESULTS.md ("How far beyond its ladder", "The ladder's
law", "The CPU demo's learning rate"); how the ladder was chosen: benchmarks/HISTORY.md.
"""

from neoscale.runner.config import base_config


def get_config():
    c = base_config()
    c.name = "cpu_demo"
    c.sizes = "w32d4h1,w48d4h2,w64d4h2,w80d4h2,w96d4h3,w128d4h4"  # depth 4; w80 added for a backtest
    c.budget.tokens_per_param = 1.5
    c.data.tokenizer = "train:2048"
    c.data.seq_len = 128
    c.data.heldout_tokens = 16384
    c.model.max_positions = 128
    c.model.window_size = 64
    c.train.batch_size = 8  # 4x the steps of 32 for the same tokens and time: 0.1-0.35 nats better
    c.train.evals_per_run = 8
    c.train.checkpoints_per_run = 4
    c.train.log_every = 25
    c.train.tensorboard = True
    c.train.learning_rate_law = (5.91, -0.606)  # lr = 5.91 * N^-0.606: the sweep's optima, above
    c.cooldowns = "0.25,0.5,1.0"
    c.replicates = "w48d4h2:2,w64d4h2:2"  # a second model seed at two sizes: the seed noise, measured
    c.fit.n_bootstrap = 2000  # intervals stable to the second digit (neoscale/runner/config.py)
    c.eval.tasks = "arc_easy,piqa,winogrande,csqa,openbookqa"
    c.eval.max_examples = 10  # x 5 tasks at every evaluation: under 10% of the demo's time
    return c
