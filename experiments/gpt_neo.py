"""GPT-Neo 125M-2.7B at Chinchilla's 20 tokens per parameter on FineWeb-Edu (for Cloud TPU / GPUs).

    python -m neoscale.run --sizes=125M,350M,1.3B --dry_run --accelerator=v4-32   # plan it anywhere
    python -m neoscale.run --sizes=125M,350M,1.3B --workdir=gs://BUCKET/gpt_neo --distributed

The second command, run on every host of a pod (``tpu_setup.sh run`` does that), prepares the
corpus once, all hosts together, into ``gs://BUCKET/gpt_neo/cache`` and then trains. To share one
preparation between studies, prepare it separately and point the study at it::

    python -m neoscale.prepare --data=hf:HuggingFaceFW/fineweb-edu:sample-100BT --tokenizer=gpt2 \\
        --heldout_tokens=4194304 --out=gs://BUCKET/data/fineweb_edu_gpt2 --distributed
    python -m neoscale.run --sizes=125M,350M,1.3B --workdir=gs://BUCKET/gpt_neo --distributed \\
        --config.data.data=prepared:gs://BUCKET/data/fineweb_edu_gpt2

Naming GPT-Neo presets in ``--sizes`` selects this study without ``--config``. The models have
GPT-Neo's true shapes (vocabulary 50257, 2048 positions, window 256), GPT-Neo's tokenizer (GPT-2
BPE, offline), sequence length 2048, bfloat16 compute with float32 parameters, and the batch, peak
learning rate and warmup of the GPT-3 table (``neoscale.training.hparams``: 0.5M-token batches up to
760M, 1M above). The planner picks each size's micro-batches and rematerialisation to fit the
accelerator's memory (``--dry_run`` prints them; ``--compile`` asks the target's compiler).

Every run forks WSD cooldown branches ending at 25% and 50% of it (``cooldowns``; the run's own
cooldown is the 100% point): three final points per size at three token counts, so that L(C) has
an interval and a held-out check and Chinchilla's Approach 3 can be fitted. Without them three
sizes give three points, which determine L(C)'s three constants exactly (the dry run warns). The
branches cost ~17% more FLOPs (each cools down over 20% of its own length).

Corpus: FineWeb-Edu's ``sample-100BT`` (Hugging Face ``HuggingFaceFW/fineweb-edu``, ODC-By; ~100B
GPT-2 tokens), streamed by the preparation step into array_record token shards (on ``gs://`` for a
pod: a preempted pod never prepares twice). Unique tokens cover the largest size's budget (2.7B:
53B tokens, 0.53 epochs), so no run repeats data. The study's own preparation reads only what its
largest run reads plus 2% (extended in place when a later study reads more);
``data.max_documents`` caps the documents (~1,000 GPT-2 tokens each in FineWeb-Edu).
``data.corpus_tokens`` is the corpus's size used for planning until it is prepared (then the
measured count replaces it).
"""

from neoscale.runner.config import base_config


def get_config():
    c = base_config()
    c.name = "gpt_neo"
    c.sizes = "125M,350M,760M,1.3B,2.7B"
    c.data.data = "hf:HuggingFaceFW/fineweb-edu:sample-100BT"
    c.data.tokenizer = "gpt2"
    c.data.seq_len = 2048
    c.data.heldout_tokens = 4 * 2**20  # 2048 sequences: noise well below the differences fitted
    c.data.corpus_tokens = 100e9
    c.model.dtype = "bfloat16"
    c.cooldowns = "0.25,0.5,1.0"  # WSD with cooldown branches (--cooldowns= for one cosine run)
    c.train.schedule = "cosine"  # used only without cooldowns
    c.train.evals_per_run = 20
    c.train.checkpoints_per_run = 20
    c.fit.n_bootstrap = 1000
    return c
