"""Task scoring: batched, bucketed, sharded log-likelihoods equal a direct forward per request."""

import gzip
import json
import math

import jax
import numpy as np
import pytest

from neoscale.evaluation import scoring, tasks
from neoscale.evaluation.tasks import Example
from neoscale.presets import model_config
from neoscale.sharding import make_mesh
from neoscale.training.state import ModelParams

SEQ_LEN = 32
VOCAB = 61


def _random_requests(count: int, seed: int = 0) -> list[scoring.TokenRequest]:
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        continuation = int(rng.integers(1, 8))
        context = int(rng.integers(1, SEQ_LEN + 2 - continuation))  # up to the full seq_len + 1
        requests.append(scoring.TokenRequest(rng.integers(0, VOCAB, context).astype(np.int32),
                                             rng.integers(0, VOCAB, continuation).astype(np.int32)))
    return requests


def _direct(model, request: scoring.TokenRequest) -> float:
    """The log-likelihood from one un-batched, un-jitted forward of the request alone."""
    tokens = np.concatenate([request.context, request.continuation])
    logits, _ = model(tokens[None, :-1])
    logp = jax.nn.log_softmax(np.asarray(logits[0], np.float64), axis=-1)
    n = len(request.continuation)
    positions = np.arange(len(tokens) - 1 - n, len(tokens) - 1)
    return float(np.sum(np.asarray(logp)[positions, tokens[positions + 1]]))


@pytest.fixture(scope="module")
def model_and_reference():
    config = model_config("w32d2h2", vocab_size=VOCAB, max_positions=SEQ_LEN,
                          vocab_pad_multiple=64)  # 3 padding rows: masked out of every logit
    model_params = ModelParams(config, seed=3)
    params = jax.jit(model_params.init)()
    requests = _random_requests(12)  # a direct eager forward each: ~1.5 s
    model = model_params.merge(params)
    reference = np.asarray([_direct(model, r) for r in requests])
    return model_params, params, requests, reference


@pytest.mark.parametrize("mesh_spec, devices", [("", 1), ("fsdp:8", 8), ("data:2,fsdp:2,tensor:2", 8)])
def test_batched_sharded_logliks_equal_a_direct_forward(model_and_reference, mesh_spec, devices):
    model_params, params, requests, reference = model_and_reference
    mesh = make_mesh(mesh_spec, jax.devices()[:devices])
    shardings = model_params.shardings(mesh)
    sharded = jax.device_put(params, shardings)
    batches = scoring.make_batches(requests, SEQ_LEN, scoring.batch_divisor(mesh), tokens_per_call=128,
                                   min_bucket=16)
    assert len({call["inputs"].shape for call in batches.calls}) == 2  # the 16 and 32 buckets
    calls = [scoring.to_device(call, mesh) for call in batches.calls]
    logliks = scoring.score_batches(scoring.make_loglik(model_params, mesh, shardings), sharded,
                                    batches, calls)
    assert np.all(reference < 0)
    np.testing.assert_allclose(logliks, reference, rtol=1e-5, atol=1e-5)


class CharTokenizer:
    """One token per character (ids 1..), EOS 0: predictable truncation."""

    eos_id = 0

    def encode(self, text):
        return [1 + (ord(c) % (VOCAB - 1)) for c in text]

    def decode(self, ids):
        return "".join(chr(ord("a") + i - 1) for i in ids)


def test_encode_request_cuts_the_context_from_the_left():
    request, text = scoring.encode_request(CharTokenizer(), "x" * 40, " abc", SEQ_LEN)
    assert len(request.context) + len(request.continuation) == SEQ_LEN + 1
    assert len(request.continuation) == 4 and text == " abc"
    request, _ = scoring.encode_request(CharTokenizer(), "", "ab", SEQ_LEN)
    assert list(request.context) == [0]  # an empty context is EOS
    request, text = scoring.encode_request(CharTokenizer(), "q", "b" * 40, SEQ_LEN)
    assert len(request.continuation) == SEQ_LEN and len(text) == SEQ_LEN


def test_task_metrics_are_bits_per_byte_of_gold_and_per_char_accuracy():
    examples = [Example(("c",) * 2, (" yes", " no"), 0), Example(("c",) * 3, (" a", " bb", " ccc"), 2)]
    texts = [" yes", " no", " a", " bb", " ccc"]
    # example 1: per char -0.5 vs -1.0 -> choice 0 (gold); example 2: -1, -0.5, -1/3 -> 2 (gold)
    logliks = np.asarray([-2.0, -3.0, -2.0, -1.5, -4.0 / 3])
    metrics = scoring.task_metrics("t", examples, logliks, texts)
    assert metrics["task_t_acc"] == 1.0
    assert metrics["task_t_chance"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    expected = (2.0 / math.log(2) / 4 + (4.0 / 3) / math.log(2) / 4) / 2
    assert metrics["task_t_bpb"] == pytest.approx(expected)
    # the raw argmax would pick " a" in example 2: per-char normalisation matters
    assert np.argmax(logliks[2:]) == 2 and np.argmax(logliks[2:] / np.asarray([2, 3, 4])) == 2


def test_shipped_tasks_load_and_match_their_readme():
    readme = (tasks.task_file("x").parent / "README.md").read_text()
    for name, info in tasks.TASKS.items():
        examples = tasks.load_task(name)
        assert 100 <= len(examples) <= tasks.MAX_VENDORED
        assert all(0 <= e.gold < len(e.choices) == len(e.contexts) for e in examples)
        assert f"| {name}.jsonl.gz | {len(examples)} |" in readme and info.licence in readme
        with gzip.open(tasks.task_file(name).open("rb"), "rt") as f:
            assert set(json.loads(f.readline())) == {"id", "context", "choices", "gold"}
    assert len(tasks.load_task("piqa", 7)) == 7
    assert tasks.parse_tasks("all") == list(tasks.TASKS)
    with pytest.raises(ValueError, match="unknown task.*nope"):
        tasks.parse_tasks("piqa,nope")
