"""GPT-Neo 125M-2.7B at Chinchilla's 20 tokens per parameter on a tfds corpus (for Cloud TPU).

    python -m neoscale.run --config=experiments/gpt_neo.py --workdir=gs://BUCKET/gpt_neo \
        --config.data.data=tfds:openwebtext --config.data.tfds_data_dir=gs://BUCKET/tfds

The GPT-Neo vocabulary size (50257) is kept so parameter counts match the released models; batch,
learning rate and warmup per size come from the GPT-3 table (neoscale.training.hparams). Runs use
bfloat16 compute with float32 parameters. ``--sizes=125M,350M`` on one slice and
``--sizes=760M,1.3B,2.7B`` on another share one workdir; ``python -m neoscale.fit`` combines them.
"""

from neoscale.runner.config import base_config


def get_config():
    c = base_config()
    c.name = "gpt_neo"
    c.sizes = "125M,350M,760M,1.3B,2.7B"
    c.data.data = "tfds:openwebtext"
    c.data.tokenizer = "train:50257"
    c.data.seq_len = 2048
    c.data.heldout_tokens = 4 * 2**20
    # Data is tokenized once into the workdir's cache: cap the documents read (~20B tokens of
    # openwebtext-sized text at 2.7B x 20 tokens/param would need ~54B tokens: raise as needed).
    c.data.max_documents = 8_000_000
    c.model.dtype = "bfloat16"
    c.model.remat = "dots"
    c.train.schedule = "cosine"
    c.train.evals_per_run = 20
    c.train.checkpoints_per_run = 20
    c.fit.n_bootstrap = 1000
    return c
