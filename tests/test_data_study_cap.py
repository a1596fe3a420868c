"""A study prepares only what its largest run reads; a later, larger study extends that preparation
and the earlier study's finished run is still skipped (python -m neoscale.run, end to end)."""

import json
import math
import os
import subprocess
import sys

import pytest
from subprocess_env import cpu_env
from test_data import make_documents

pytest.importorskip("datasets")  # hf: sources are always capped (their size may need the network)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def study(tmp_path, steps: int) -> subprocess.CompletedProcess:
    env = {**cpu_env(), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "neoscale.run", "--sizes=w32d2h2", f"--steps={steps}", "--cooldowns=",
         f"--data=hf:{tmp_path / 'hf'}", "--config.data.tokenizer=gpt2", "--config.data.seq_len=32",
         "--config.data.heldout_tokens=512", "--config.train.batch_size=8", "--config.eval.tasks=",
         f"--workdir={tmp_path / 'study'}"],
        capture_output=True, text=True, env=env, timeout=600, cwd=REPO)


def manifest(tmp_path) -> dict:
    [path] = (tmp_path / "study" / "cache" / "data").glob("*/manifest.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_a_study_prepares_what_it_reads_and_a_larger_one_extends_it(tmp_path):
    (tmp_path / "hf").mkdir()
    with open(tmp_path / "hf" / "part0.jsonl", "w") as f:
        for text in make_documents(1500, seed=4):
            f.write(json.dumps({"text": text}) + "\n")
    first = study(tmp_path, 10)
    assert first.returncode == 0, first.stderr[-2000:]
    small = manifest(tmp_path)
    assert small["max_train_tokens"] == math.ceil(10 * 8 * 32 * 1.02) and not small["complete"]
    assert small["documents"] < 1500 / 10  # the rest of the source was never read

    larger = study(tmp_path, 30)  # a later study reads more: the preparation is extended
    assert larger.returncode == 0, larger.stderr[-2000:]
    extended = manifest(tmp_path)
    assert extended["max_train_tokens"] == math.ceil(30 * 8 * 32 * 1.02)
    assert extended["heldout_documents"] == small["heldout_documents"]
    again = study(tmp_path, 10)  # the first study's finished run is the same run: skipped
    assert again.returncode == 0, again.stderr[-2000:]
    assert "trained 0, skipped 1 finished" in again.stderr
