"""Train one model: ``python -m neoscale.train --size=NAME --workdir=DIR [flags]``.

Rerunning the same command resumes from the latest checkpoint; a finished run is skipped. Other
settings on an existing run directory stop with one line naming the differing fields.
Exit status: 0 done, 1 bad input (one line on stderr), 2 another process trains in the same
--workdir (one line naming it), 75 preempted (SIGTERM) or 130 interrupted
(Ctrl-C) with a checkpoint saved at the current step (rerun to resume; a second Ctrl-C stops at
once), 3 non-finite loss.
Multi-host (e.g. a TPU pod): run the same command on every host with ``--distributed``.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

from neoscale import multihost
from neoscale.sharding.mesh import MESH_HELP
from neoscale.workdir_lock import WorkdirLocked

FLAGS = flags.FLAGS
flags.DEFINE_string("size", None, "model size name, e.g. cpu-100k, 125M, w256d4h4, 125M-e8k2")
flags.DEFINE_string("workdir", None, "run directory (local path or gs://)")
flags.DEFINE_integer("steps", 1000, "optimizer steps")
flags.DEFINE_integer("batch_size", None, "global batch in sequences (default: GPT-3 table)")
flags.DEFINE_integer("seq_len", 256, "tokens per sequence")
flags.DEFINE_integer("micro_batches", 1, "gradient accumulation: slices per batch")
flags.DEFINE_string("mesh", "", MESH_HELP)
flags.DEFINE_integer("seed", 0, "model seed: parameter initialisation")
flags.DEFINE_integer("data_seed", 0, "data seed: held-out documents, data order, tokenizer training")
flags.DEFINE_float("learning_rate", None, "peak learning rate (default: --learning_rate_law, else "
                   "the GPT-3 table rule)")
flags.DEFINE_string("learning_rate_law", None, "COEF,EXPONENT: peak lr = COEF * active_params^EXPONENT, "
                    "the study runner's train.learning_rate_law (e.g. 5.91,-0.606)")
flags.DEFINE_enum("schedule", "cosine", ["cosine", "wsd", "constant"], "learning-rate schedule")
flags.DEFINE_integer("warmup_steps", None, "warmup steps (default: 375M tokens, <= 10% of run)")
flags.DEFINE_float("cooldown_fraction", 0.2, "wsd: fraction of the steps spent cooling down")
flags.DEFINE_integer("cooldown_steps", None, "wsd: cooldown steps (overrides the fraction)")
flags.DEFINE_enum("cooldown_shape", "linear", ["linear", "1-sqrt"], "wsd cooldown shape")
flags.DEFINE_float("weight_decay", 0.1, "AdamW weight decay (not on norms/biases/embeddings)")
flags.DEFINE_integer("log_every", 10, "steps between metrics lines")
flags.DEFINE_integer("eval_every", 100, "steps between held-out evaluations (and at the end)")
flags.DEFINE_integer("eval_batch_size", None,
                     "sequences per evaluation micro-batch (default: the training micro-batch)")
flags.DEFINE_integer("checkpoint_every", 100, "steps between checkpoints (and at the end)")
flags.DEFINE_integer("keep_checkpoints", 3, "checkpoints kept")
flags.DEFINE_string("data", "builtin", "synthetic | builtin | text:GLOB | tfds:NAME")
flags.DEFINE_string("tfds_data_dir", None, "--data=tfds:NAME: dataset directory (local or gs://)")
flags.DEFINE_string("tfds_split", "train", "--data=tfds:NAME: split read (held-out documents too)")
flags.DEFINE_string("text_field", "text", "text field of .jsonl records and tfds examples")
flags.DEFINE_integer("max_documents", None, "read at most this many documents (None: all)")
flags.DEFINE_string("tokenizer", "train:8192", "train:VOCAB[:unigram] or a .model path")
flags.DEFINE_integer("heldout_tokens", 65536, "held-out tokens evaluated")
flags.DEFINE_string("data_cache_dir", "~/.cache/neoscale", "prepared-data cache")
flags.DEFINE_integer("vocab_size", None, "--data=synthetic only: vocabulary size")
flags.DEFINE_string("model_overrides", "{}", 'JSON of ModelConfig fields, e.g. {"dtype":"bfloat16"}')
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-host)")
flags.DEFINE_string("coordinator", None, "distributed: coordinator address host:port")
flags.DEFINE_integer("num_processes", None, "distributed: number of processes")
flags.DEFINE_integer("process_id", None, "distributed: this process's index")


def _fail(message: str, status: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _check_cache_dir(config) -> None:
    """The prepared-data cache can be created (the default lives under HOME, which a batch job
    may mount read-only): one line naming the flag, before anything is prepared."""
    from neoscale.training.config import SYNTHETIC

    if config.data.data == SYNTHETIC:
        return
    expanded = os.path.expanduser(config.data.cache_dir)
    try:
        os.makedirs(expanded, exist_ok=True)
        probe = os.path.join(expanded, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"cannot write the prepared-data cache --data_cache_dir="
                         f"{config.data.cache_dir} ({expanded}: {error.strerror or error}); pass "
                         "a writable --data_cache_dir=DIR") from None


def _run_config():
    from neoscale.training.config import RunConfig

    if not FLAGS.size:
        raise ValueError("--size is required, e.g. --size=cpu-100k")
    try:
        overrides = json.loads(FLAGS.model_overrides)
    except json.JSONDecodeError as error:
        raise ValueError(f"--model_overrides is not JSON ({error.msg})") from None
    law = None
    if FLAGS.learning_rate_law:
        try:
            law = tuple(float(x) for x in FLAGS.learning_rate_law.split(","))
        except ValueError:
            law = ()
        if len(law) != 2:
            raise ValueError(f"--learning_rate_law={FLAGS.learning_rate_law!r}: give COEF,EXPONENT, "
                             "e.g. 5.91,-0.606")
    return RunConfig.from_flat(dict(
        size=FLAGS.size, workdir=FLAGS.workdir or "", model_overrides=overrides,
        steps=FLAGS.steps, batch_size=FLAGS.batch_size, seq_len=FLAGS.seq_len,
        micro_batches=FLAGS.micro_batches, mesh=FLAGS.mesh, seed=FLAGS.seed,
        data_seed=FLAGS.data_seed, eval_batch_size=FLAGS.eval_batch_size,
        learning_rate=FLAGS.learning_rate, learning_rate_law=law, schedule=FLAGS.schedule,
        warmup_steps=FLAGS.warmup_steps, cooldown_fraction=FLAGS.cooldown_fraction,
        cooldown_steps=FLAGS.cooldown_steps, cooldown_shape=FLAGS.cooldown_shape,
        weight_decay=FLAGS.weight_decay, log_every=FLAGS.log_every, eval_every=FLAGS.eval_every,
        checkpoint_every=FLAGS.checkpoint_every, keep_checkpoints=FLAGS.keep_checkpoints,
        data=FLAGS.data, tokenizer=FLAGS.tokenizer, heldout_tokens=FLAGS.heldout_tokens,
        data_cache_dir=FLAGS.data_cache_dir, tfds_data_dir=FLAGS.tfds_data_dir,
        tfds_split=FLAGS.tfds_split, text_field=FLAGS.text_field,
        max_documents=FLAGS.max_documents, vocab_size=FLAGS.vocab_size))


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])!r}; all settings are --flags")
    try:
        config = _run_config()  # an unknown size fails here, before jax starts
        if "://" not in config.data.cache_dir:
            _check_cache_dir(config)
        if FLAGS.distributed:
            multihost.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
        from neoscale.training import loop, stopping
        from neoscale.training.checkpoint import DiskFullError

        try:
            result = loop.train(config)
        except stopping.Preempted as error:  # a checkpoint was saved: rerun to resume
            _fail(str(error), error.exit_code)
        except loop.NonFiniteLossError as error:
            _fail(str(error), loop.NON_FINITE_EXIT_CODE)
        except WorkdirLocked as error:  # another process trains in this run directory
            _fail(str(error), error.exit_code)
        except DiskFullError as error:  # the complete checkpoints are kept: rerun to resume
            _fail(str(error))
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    if result.skipped:
        print(f"{config.workdir}: already finished at step {result.step}", file=sys.stderr)
    print(json.dumps({"step": result.step, "train_loss": result.train_loss,
                      "eval_loss": result.eval_loss, "run_dir": result.run_dir}))


def entrypoint() -> None:
    app.run(multihost.fail_fast(main))


if __name__ == "__main__":
    entrypoint()
