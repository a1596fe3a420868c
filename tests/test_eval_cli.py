"""neoscale.eval: a transformers GPT-Neo scored as transformers scores it; bad input in one line."""

import json
import subprocess
import sys

import numpy as np
import pytest
from subprocess_env import cpu_env

from neoscale.evaluation import checkpoints as eval_lib
from neoscale.evaluation import scoring

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TASKS = ["arc_easy", "winogrande"]  # a shared context, and one context per choice


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """A random GPT-Neo on the GPT-2 vocabulary (so the real tokenizer's ids are in range)."""
    args = dict(hidden_size=32, num_layers=2, num_heads=2, vocab_size=50257,
                max_position_embeddings=64, window_size=8, initializer_range=0.2,
                attention_types=[[["global", "local"], 1]], bos_token_id=50256, eos_token_id=50256)
    torch.manual_seed(0)
    model = transformers.GPTNeoForCausalLM(transformers.GPTNeoConfig(**args)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:  # LayerNorms and biases off their defaults
                torch.nn.init.normal_(param, mean=1.0 if "ln" in name and name.endswith("weight")
                                      else 0.0, std=0.3)
    directory = tmp_path_factory.mktemp("gpt_neo")
    model.save_pretrained(directory)
    return directory, model


def test_logliks_match_transformers(hf_checkpoint):
    directory, model = hf_checkpoint
    scorer, params = eval_lib.hf_scorer(str(directory), TASKS, max_examples=6, seq_len=64,
                                        mesh_spec="fsdp:8")
    logliks = scorer.logliks(params)
    requests = [r for call, index in zip(scorer.batches.calls, scorer.batches.request_index,
                                         strict=True) for r in zip(index, call["inputs"], call["targets"],
                                                                   call["mask"], strict=True)]
    assert scorer.num_requests == 6 * 4 + 6 * 2 == len([r for r in requests if r[0] >= 0])
    reference = np.zeros(scorer.num_requests)
    for i, inputs, targets, mask in requests:
        if i < 0:
            continue
        n = int(np.flatnonzero(mask)[-1]) + 1  # inputs up to the last continuation token
        with torch.no_grad():
            logits = model(torch.as_tensor(inputs[None, :n], dtype=torch.long)).logits[0].double()
        logp = torch.log_softmax(logits, -1).numpy()
        reference[i] = float(np.sum(logp[np.arange(n), targets[:n]] * mask[:n]))
    assert np.all(reference < 0)
    np.testing.assert_allclose(logliks, reference, rtol=1e-4, atol=1e-4)
    metrics = scorer(params)
    assert metrics["task_winogrande_chance"] == 0.5 and metrics["task_arc_easy_chance"] == 0.25
    assert 0 < metrics["task_arc_easy_bpb"] < 100 and 0 <= metrics["task_arc_easy_acc"] <= 1


def test_cli_prints_the_table_and_writes_json(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint
    out = tmp_path / "tasks.json"
    done = subprocess.run([sys.executable, "-m", "neoscale.eval", f"--hf_checkpoint={directory}",
                           "--tasks=piqa", "--max_examples=3", "--seq_len=32", f"--out={out}"],
                          env=cpu_env(device_count=None), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(out.read_text())["metrics"]
    assert set(metrics) == {"task_piqa_bpb", "task_piqa_acc", "task_piqa_chance"}
    assert f"{metrics['task_piqa_bpb']:.4f}" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--tasks=piqa"], "give exactly one of --workdir"),
    (["--hf_checkpoint=/nonexistent", "--tasks=nope"], "unknown task(s) nope"),
    (["--workdir=/nonexistent"], "holds no study"),
])
def test_bad_input_is_one_line(args, message):
    done = subprocess.run([sys.executable, "-m", "neoscale.eval", *args], env=cpu_env(device_count=None),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert message in done.stderr and done.stderr.strip().count("\n") == 0


def test_scoring_rows_hold_whole_requests():
    assert scoring.bucket_lengths(256) == [64, 128, 256] and scoring.bucket_lengths(16) == [16]
    assert scoring.bucket_lengths(64, min_bucket=16) == [16, 32, 64]
    assert scoring.rows_per_call(64, 8, tokens_per_call=1000) == 8
