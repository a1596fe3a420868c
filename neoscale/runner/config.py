"""The study config: the fields every ``experiments/*.py`` starts from (``base_config()``).

A study is one ml_collections ConfigDict:

* ``sizes``: comma-separated size names (``neoscale.presets``); ``--sizes`` replaces it.
* ``seeds``: model seeds trained per size (``--seeds``); ``replicates``: more for some sizes,
  'size:K,...' (``neoscale.runner.plan.parse_replicates``: replicate i's model seed is
  ``train.seed`` + i, its run ``{size}-seed{i}_{tag}``; the data seed is shared).
* ``budget``: exactly one of ``tokens_per_param`` / ``tokens`` / ``flops`` (comma-separated for
  several IsoFLOP budgets) / ``steps``; all unset means ``tokens_per_param=20``.
* ``data``: the ``neoscale.data.DataConfig`` fields shared by every size; ``data.seed`` is the
  data seed (held-out documents, shuffling, tokenizer training order); ``max_epochs``: the most
  passes over the corpus a run may make unless ``allow_repetition`` (``--allow_repetition``).
* ``train``: ``neoscale.training.RunConfig`` settings shared by every size; ``train.seed`` is the
  model seed (initialisation). ``None`` (unset) ``batch_size`` / ``learning_rate`` /
  ``warmup_steps`` take the GPT-3-table rule (``neoscale.training.hparams``), except that a set
  ``learning_rate_law`` (coef, exponent) gives lr = coef * N_active^exponent; unset
  ``micro_batches`` (and an unset ``model.remat``) are chosen by the planner to fit the devices'
  memory (``neoscale.runner.memory``).
* ``model``: ModelConfig fields replaced for every size (e.g. ``dtype``, ``max_positions``,
  ``parametrization`` with ``base_d_model`` / ``base_num_layers``).
* ``size_overrides``: {size: {field: value}} for one size only (train or model fields).
* ``tune``: ``size`` set (μP / CompleteP only): sweep that size's learning rate over 2^k,
  k in ``log2_rates``, and train every size at the best (``neoscale.runner.tune``).
* ``cooldowns``: fractions at which WSD cooldown branches are forked ("" = none).
* ``fit``: what ``neoscale.scaling.fit_study`` fits (bootstrap resamples, seed).
* ``eval``: downstream tasks scored at every evaluation of every run (``tasks``: "" none, "all"
  or e.g. "arc_easy,piqa"; ``max_examples`` per task, None: all shipped), into results.csv's
  ``task_*`` columns and the report (``neoscale.evaluation``).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from neoscale.model import ModelConfig


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by every study; experiments change what they need."""
    c = ml_collections.ConfigDict()
    c.name = "study"
    c.sizes = "cpu-100k,cpu-400k,cpu-1.8M"
    c.seeds = 1
    c.replicates = ""
    c.budget = ml_collections.ConfigDict({
        "tokens_per_param": config_dict.placeholder(object),  # K, or "3,35": token arms
        "tokens": config_dict.placeholder(float),
        "flops": config_dict.placeholder(str),
        "steps": config_dict.placeholder(int),
    })
    c.data = ml_collections.ConfigDict({
        "data": "builtin",
        "tokenizer": "train:8192",
        "seq_len": 256,
        "heldout_tokens": 65536,
        "seed": 0,
        "tfds_data_dir": config_dict.placeholder(str),
        "tfds_split": "train",
        "text_field": "text",
        "max_documents": config_dict.placeholder(int),  # None: all (cap huge corpora like c4)
        "cache_dir": config_dict.placeholder(str),  # None: WORKDIR/cache (local workdirs)
        "corpus_tokens": config_dict.placeholder(float),  # known size, for plans before preparing
        "max_epochs": 4.0,  # Muennighoff et al. 2023: little is lost up to ~4 epochs
        "allow_repetition": False,
    })
    c.train = ml_collections.ConfigDict({
        "batch_size": config_dict.placeholder(int),
        "learning_rate": config_dict.placeholder(float),
        # (coef, exponent): lr = coef * active_params ** exponent where learning_rate is unset.
        "learning_rate_law": config_dict.placeholder(tuple),
        "warmup_steps": config_dict.placeholder(int),
        "micro_batches": config_dict.placeholder(int),  # None: the planner's choice
        "seed": 0,  # model initialisation (the data seed is data.seed)
        "schedule": "cosine",
        "cooldown_fraction": 0.2,
        "cooldown_shape": "1-sqrt",
        "weight_decay": 0.1,
        "clip_norm": 1.0,
        "evals_per_run": 10,  # evaluation points per run (rows of results.csv)
        "checkpoints_per_run": 10,
        # Also save when this many minutes have passed since the last save (a preempted 1.3B run
        # loses minutes, not the ~1.5 h between step-count checkpoints); None: by steps only.
        "checkpoint_minutes": 30.0,
        "keep_checkpoints": 2,
        "log_every": 10,
        "tensorboard": True,
    })
    c.model = ml_collections.ConfigDict({"dtype": "float32", **{
        # "sp" | "mup" | "completep", its base shape and base multipliers (neoscale.model.parametrization)
        name: ModelConfig.__dataclass_fields__[name].default
        for name in ("parametrization", "base_d_model", "base_num_layers", "output_multiplier")},
        "hidden_init_std": config_dict.placeholder(float)})  # None: init_std (mup / completep only)
    c.size_overrides = ml_collections.ConfigDict()
    c.tune = ml_collections.ConfigDict({  # tune at a base size, transfer (neoscale.runner.tune)
        "size": config_dict.placeholder(str),  # one of the sizes; None: no sweep
        "log2_rates": "-11,-10,-9,-8,-7,-6,-5",  # peak rates 2^k
        "output_multipliers": "",  # also sweep μP's base output multiplier, e.g. "1,2,4,8"
        "hidden_init_stds": "",  # also sweep μP's base hidden init std, e.g. "0.02,0.04,0.08,0.16"
        "dir": config_dict.placeholder(str),  # None: WORKDIR/tune (share it to reuse a sweep)
    })
    c.cooldowns = ""
    c.fit = ml_collections.ConfigDict({
        # 10x forecast intervals of the ladder's 3-constant forms move by up to 0.02-0.08 nats between
        # bootstrap seeds at 100-800 resamples, < 0.01 from 1600 (benchmarks/forecast_resamples.py)
        "n_bootstrap": 2000,
        "seed": 0,
        # The held-out set's irreducible loss, when the study cannot identify it (fit_study's pin_E).
        "pin_E": config_dict.placeholder(float),
        # H of the ladder's law: the held-out loss of the training split's token frequencies. None:
        # the runner measures it on the prepared data (PreparedData.context_free_loss).
        "context_free_loss": config_dict.placeholder(float),
    })
    c.eval = ml_collections.ConfigDict({
        "tasks": "",  # "" none, "all", or comma-separated names (neoscale.evaluation.tasks.TASKS)
        "max_examples": config_dict.placeholder(int),  # per task; None: all shipped (<= 1,000)
    })
    c.mesh = ""
    return c


def check_eval_settings(study: ml_collections.ConfigDict) -> None:
    """A study's ``eval`` section, checked before anything runs (one-line ValueError)."""
    from neoscale.evaluation.tasks import parse_tasks

    evaluation = study.get("eval") or {}
    parse_tasks(str(evaluation.get("tasks") or ""), flag="--config.eval.tasks")
    examples = evaluation.get("max_examples")
    if examples is not None and (isinstance(examples, bool) or not isinstance(examples, int)
                                 or examples < 1):
        raise ValueError(f"--config.eval.max_examples={examples}: examples per task, an integer "
                         ">= 1 (unset: all shipped)")
    if evaluation.get("tasks") and study.data.data == "synthetic":
        raise ValueError("--config.eval.tasks needs real data (a tokenizer for the tasks' text); "
                         "use --data=builtin or --config.eval.tasks=")


def check_fit_settings(fit: ml_collections.ConfigDict) -> None:
    """A study's ``fit`` section, checked before anything runs (one-line ValueError)."""
    for name, minimum, meaning in (("n_bootstrap", 0, "bootstrap resamples (0: no intervals)"),
                                   ("seed", 0, "the bootstrap's random seed")):
        value = fit.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"--config.fit.{name}={value}: {meaning}, an integer >= {minimum}")
