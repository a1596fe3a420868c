"""Rebuilds ladder.csv and targets.csv from a clone of allenai/OLMo (not needed to run anything).

    python tests/data/olmo_ladder/extract.py /path/to/OLMo [git-ref]

Keeps, from `scripts/scaling/data/peteish-moreeval/` at the ref (default the commit in README.md):
every evaluation row of the 16 ladder runs the paper fits ({190M,370M,760M,1B}-{1,2,5,10}xC.csv,
as scripts/scaling/final.json and step2.json list them) and the targets' rows the paper reads
(7B-4T: peteish7_eval_anneal.csv; 13B-5T: the last 5 rows of peteish13_eval_final.csv), with only
the columns of the paper's 8 tasks (rc 5-shot bits per byte and length-normalised accuracy).
"""

import csv
import io
import subprocess
import sys

COMMIT = "9bc064c72b1439640993e7ff28238e7b8f855aee"
FOLDER = "scripts/scaling/data/peteish-moreeval"
KEYS = ["mmlu_stem_test", "mmlu_humanities_test", "mmlu_social_sciences_test", "mmlu_other_test",
        "hellaswag_val", "arc_challenge_test", "arc_easy_test", "piqa_val", "csqa_val",
        "socialiqa_val", "openbookqa_test"]
METRICS = [m for k in KEYS for m in (f"eval/downstream_bpb/{k}_rc_5shot_bpb",
                                     f"eval/downstream/{k}_rc_5shot_len_norm")]
LADDER = [f"{size}-{mult}xC" for size in ("190M", "370M", "760M", "1B") for mult in (1, 2, 5, 10)]
TARGETS = {"7B-4T": ("peteish7_eval_anneal", 5), "13B-5T": ("peteish13_eval_final", 5)}


def read(repo: str, ref: str, name: str) -> list[dict]:
    text = subprocess.run(["git", "-C", repo, "show", f"{ref}:{FOLDER}/{name}.csv"],
                          check=True, capture_output=True, text=True).stdout
    return list(csv.DictReader(io.StringIO(text)))


def tokens(row: dict) -> int:
    if row.get("throughput/total_tokens"):
        return int(float(row["throughput/total_tokens"]))
    return int(float(row["_step"])) * int(float(row["batch_size_in_tokens"]))


def write(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(repo: str, ref: str = COMMIT) -> None:
    out = []
    for run in LADDER:
        for row in read(repo, ref, run):
            out.append({"run": run, "tokens": tokens(row), **{m: row[m] for m in METRICS}})
    write("tests/data/olmo_ladder/ladder.csv", out)
    out = []
    for target, (name, last) in TARGETS.items():
        for row in read(repo, ref, name)[-last:]:
            out.append({"target": target, "tokens": tokens(row), **{m: row[m] for m in METRICS}})
    write("tests/data/olmo_ladder/targets.csv", out)


if __name__ == "__main__":
    main(*sys.argv[1:])
