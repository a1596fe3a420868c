"""Scores downstream tasks offline, after training: a study's finished runs, or a released GPT-Neo.

    python -m neoscale.eval --workdir=STUDY [--runs=PATTERN,...] [--tasks=all] [--max_examples=N]
    python -m neoscale.eval --hf_checkpoint=DIR [--tasks=...] [--out=tasks.json]

``--workdir``: every finished run of the study is scored at its final checkpoint, with the run's
own tokenizer and sequence length; the metrics go into the last evaluation point of its
finished.json (so results.csv keeps them whenever it is rewritten), results.csv's ``task_*``
columns of that row, and report.md (fit, figures and report are made again). ``--hf_checkpoint``:
a ``transformers`` GPT-Neo directory (``neoscale.convert.load_hf_gpt_neo``) with the GPT-2
tokenizer: prints a table and writes the metrics as JSON. The tasks and metrics:
``neoscale.evaluation`` (bits per byte of the gold continuation, accuracy per character, chance).
"""

from __future__ import annotations

import sys

import jax
from absl import app, flags, logging
from etils import epath

from neoscale.evaluation.checkpoints import hf_scorer, score_study, table
from neoscale.evaluation.scoring import TOKENS_PER_CALL
from neoscale.evaluation.tasks import parse_tasks
from neoscale.files import to_json, write_atomic

flags.DEFINE_string("workdir", None, "a study directory: score its finished runs")
flags.DEFINE_string("hf_checkpoint", None, "a transformers GPT-Neo directory to score")
flags.DEFINE_list("runs", [], "--workdir: score only the runs whose names match these shell "
                  "patterns (e.g. 'w*_tpp1.5' for the main runs; default: every finished run)")
flags.DEFINE_string("tasks", "all", "'all' or comma-separated task names (neoscale.evaluation.tasks)")
flags.DEFINE_integer("max_examples", None, "examples per task (default: all shipped, <= 1,000)")
flags.DEFINE_string("mesh", "", "device mesh (--mesh syntax of neoscale.train; '' = all on fsdp)")
flags.DEFINE_string("tokenizer", "gpt2", "--hf_checkpoint: the tokenizer (gpt2 or a .model file)")
flags.DEFINE_integer("seq_len", None, "--hf_checkpoint: tokens per request (default: the model's "
                     "max_positions)")
flags.DEFINE_integer("tokens_per_call", TOKENS_PER_CALL, "rows x length per call (raise it on "
                     "an accelerator: the float32 logits of a call are this x the vocabulary)")
flags.DEFINE_string("out", "tasks.json", "--hf_checkpoint: where to write the metrics (JSON)")
FLAGS = flags.FLAGS


def main(argv) -> None:
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    try:
        if bool(FLAGS.workdir) == bool(FLAGS.hf_checkpoint):
            raise ValueError("give exactly one of --workdir=STUDY and --hf_checkpoint=DIR")
        tasks = parse_tasks(FLAGS.tasks)
        if not tasks:
            raise ValueError("--tasks is empty: give 'all' or task names")
        if FLAGS.max_examples is not None and FLAGS.max_examples < 1:
            raise ValueError(f"--max_examples must be >= 1, got {FLAGS.max_examples}")
        if FLAGS.tokens_per_call < 1:
            raise ValueError(f"--tokens_per_call must be >= 1, got {FLAGS.tokens_per_call}")
        if FLAGS.workdir:
            scored = score_study(FLAGS.workdir, tasks, FLAGS.max_examples, FLAGS.mesh,
                                 FLAGS.tokens_per_call, FLAGS.runs)
            if FLAGS.runs and not scored:
                raise ValueError(f"--runs={','.join(FLAGS.runs)} matched no finished run of "
                                 f"{FLAGS.workdir}: give patterns of its runs/ folder names")
            print(f"scored {len(scored)} finished runs into {FLAGS.workdir}/results.csv")
            return
        scorer, params = hf_scorer(FLAGS.hf_checkpoint, tasks, FLAGS.max_examples, FLAGS.tokenizer,
                                   FLAGS.seq_len, FLAGS.mesh, FLAGS.tokens_per_call)
        metrics = scorer(params)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(table(metrics))
    if jax.process_index() == 0:
        write_atomic(epath.Path(FLAGS.out), to_json(
            {"checkpoint": FLAGS.hf_checkpoint, "tokenizer": FLAGS.tokenizer, "metrics": metrics},
            indent=2))
        print(f"wrote {FLAGS.out}")


def entrypoint() -> None:
    app.run(main)


if __name__ == "__main__":
    entrypoint()
