"""Prepare a corpus into token shards once: ``python -m neoscale.prepare``.

  python -m neoscale.prepare --data=tfds:c4/en:3.1.0 --tfds_data_dir=gs://B/tfds \\
      --tokenizer=gpt2 --out=gs://B/c4-gpt2 [--distributed] [--train_tokens=26.3e9]

Splits off the held-out documents first (a random sample across sources, by --seed), tokenizes
the rest in parallel (--workers processes; with --distributed, each host of a pod its own share of
the documents) and writes array_record shards and a manifest (last) to --out, a local directory or
gs://. Interrupted, the same command resumes: complete shards are kept, never written twice.
With --train_tokens, it reads only what the study needs (plus a 2% margin), not the whole source;
a later command with a larger --train_tokens extends it (the held-out set stays), and an --out
holding another source's or tokenizer's preparation is refused.
Train on the result with ``--data=prepared:OUT --tokenizer=<the same tokenizer>``.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from neoscale import multihost
from neoscale.data.shards import TRAIN_TOKENS_MARGIN, max_train_tokens

PROG = "python -m neoscale.prepare"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from neoscale.data import DataConfig

    defaults = DataConfig()
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True,
                        help="builtin | text:GLOB | tfds:NAME[:VERSION] | hf:NAME[:CONFIG]")
    parser.add_argument("--tokenizer", default="gpt2",
                        help="gpt2 (default) | train:VOCAB[:unigram] | a sentencepiece .model path")
    parser.add_argument("--heldout_tokens", type=int, default=defaults.heldout_tokens,
                        help="tokens of held-out documents to split off (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="the data seed: held-out choice and tokenizer training order")
    parser.add_argument("--out", required=True, help="output directory, local or gs://")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="tokenizer processes on this host (default: every core, %(default)s)")
    parser.add_argument("--distributed", action="store_true",
                        help="one of several hosts (jax.distributed.initialize()): each tokenizes "
                             "its own share; process 0 writes the manifest")
    parser.add_argument("--tfds_data_dir", default=None, help="where the tfds dataset was built")
    parser.add_argument("--tfds_split", default=defaults.tfds_split, help="tfds / hf split")
    parser.add_argument("--text_field", default=defaults.text_field,
                        help="text field of .jsonl / tfds / hf examples")
    parser.add_argument("--max_documents", type=int, default=None, help="read at most this many documents")
    parser.add_argument("--train_tokens", type=float, default=None,
                        help="training tokens the study reads (its largest run: the dry run of "
                             "python -m neoscale.run says how many): prepares that plus a "
                             f"{TRAIN_TOKENS_MARGIN:.0%} margin and reads no more of the source "
                             "(default: all of it)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from neoscale.data import pipeline, shards

    try:
        if args.workers < 1:
            raise ValueError(f"--workers={args.workers} must be at least 1")
        if args.train_tokens is not None and not args.train_tokens >= 1:
            raise ValueError(f"--train_tokens={args.train_tokens} must be at least 1 (or unset: all)")
        if args.out.startswith("prepared:") or not args.out.strip():
            raise ValueError(f"--out={args.out!r} must be a directory path (local or gs://)")
        pipeline.check_writable_dir(args.out, "--out")
        config = pipeline.DataConfig(
            data=args.data, tokenizer=args.tokenizer, heldout_tokens=args.heldout_tokens,
            seed=args.seed, tfds_data_dir=args.tfds_data_dir, tfds_split=args.tfds_split,
            text_field=args.text_field, max_documents=args.max_documents, seq_len=1)
        pipeline.check_source(config)
        source = config.source()
        if source.kind == "prepared":
            raise ValueError(f"--data={args.data} is already prepared: train on it directly")
        process_index, process_count = 0, 1
        if args.distributed:
            import jax

            multihost.initialize()  # with fail_fast: one host's failure stops every host
            process_index, process_count = jax.process_index(), jax.process_count()
        options = shards.PrepareOptions(
            tokenizer=args.tokenizer, heldout_tokens=args.heldout_tokens, seed=args.seed,
            workers=args.workers, process_index=process_index, process_count=process_count,
            max_train_tokens=max_train_tokens(args.train_tokens))
        manifest = shards.prepare_shards(source, options, args.out)
    except (ValueError, OSError) as error:  # bad input, or an --out that cannot be written
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        return 2
    summary = {k: manifest[k] for k in ("source", "train_stream_tokens", "train_documents",
                                         "heldout_stream_tokens", "heldout_documents",
                                         "heldout_mixture", "train_mixture", "prepare_seconds")}
    print(json.dumps({"out": args.out, **summary}, indent=1))
    return 0


def entrypoint() -> None:
    sys.exit(multihost.fail_fast(main)())


if __name__ == "__main__":
    entrypoint()
