"""Scoring multiple-choice tasks through the model's own sharded, jitted forward.

A request is (context, continuation): its log-likelihood is the sum over the continuation's
tokens of log p(token | everything before it). Each request is one row, left-truncated to the
run's ``seq_len`` (the continuation kept whole when it fits), in the smallest of a few fixed
lengths (powers of two up to ``seq_len``: ``bucket_lengths``) that holds it, padded and masked,
``rows`` rows per call: one compilation per length, whatever the tasks. Per task
(``task_metrics``):

* ``task_<name>_bpb``: bits per UTF-8 byte of the gold continuation (its summed negative
  log-likelihood / ln 2 / its bytes), averaged over examples (OLMo's ``bits_per_byte_corr``);
* ``task_<name>_acc``: accuracy of the argmax of log-likelihood per character of each choice
  (OLMo's ``acc_per_char``);
* ``task_<name>_chance``: the mean of 1 / number of choices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from neoscale.evaluation.tasks import Example, load_task
from neoscale.model.lm_head import head_logits
from neoscale.sharding import batch_divisor, batch_sharding
from neoscale.training.state import ModelParams, Params
from neoscale.training.step import MeshFunction

TOKENS_PER_CALL = 2048  # rows x length per call: a partly filled last call wastes little
MIN_BUCKET = 64  # two row lengths at the demo's seq_len 128: two compilations per model


@dataclasses.dataclass(frozen=True)
class TokenRequest:
    """One request as tokens: ``context`` (>= 1 token) then ``continuation`` (>= 1 token)."""

    context: np.ndarray  # int32 [c]
    continuation: np.ndarray  # int32 [n]


def encode_request(tokenizer, context: str, continuation: str, seq_len: int,
                   ) -> tuple[TokenRequest, str]:
    """(tokens of the request fitted to ``seq_len`` inputs, the continuation text scored).

    Context and continuation are encoded apart (the continuation's tokens are its own); an
    empty context is the EOS token (what precedes a document in training). The context is cut
    from the left so that context + continuation is ``seq_len`` + 1 tokens at most; a
    continuation longer than ``seq_len`` keeps its first ``seq_len`` tokens, and the text scored
    is then theirs.
    """
    context_ids = list(tokenizer.encode(context)) or [tokenizer.eos_id]
    continuation_ids = list(tokenizer.encode(continuation))
    if not continuation_ids:
        raise ValueError(f"the continuation {continuation!r} encodes to no token")
    if len(continuation_ids) > seq_len:
        continuation_ids = continuation_ids[:seq_len]
        continuation = tokenizer.decode(continuation_ids)
    context_ids = context_ids[-(seq_len + 1 - len(continuation_ids)):]
    return TokenRequest(np.asarray(context_ids, np.int32),
                        np.asarray(continuation_ids, np.int32)), continuation


def bucket_lengths(seq_len: int, min_bucket: int = MIN_BUCKET) -> list[int]:
    """The row lengths requests are padded to: powers of two from ``min_bucket``, and ``seq_len``."""
    lengths, length = [], min_bucket
    while length < seq_len:
        lengths.append(length)
        length *= 2
    return lengths + [seq_len]


def rows_per_call(length: int, divisor: int, tokens_per_call: int = TOKENS_PER_CALL) -> int:
    """Rows of one call at ``length``: about ``tokens_per_call`` tokens, a multiple of ``divisor``
    (the mesh's batch shards)."""
    return max(divisor, tokens_per_call // length // divisor * divisor)


@dataclasses.dataclass
class Batches:
    """Requests laid out in calls: per call, "inputs"/"targets" int32 and "mask" float32
    [rows, length] and the request index of every row (-1: padding)."""

    calls: list[dict[str, np.ndarray]]
    request_index: list[np.ndarray]  # [rows] per call
    num_requests: int


def make_batches(requests: Sequence[TokenRequest], seq_len: int, divisor: int = 1,
                 tokens_per_call: int = TOKENS_PER_CALL, min_bucket: int = MIN_BUCKET) -> Batches:
    """Pads each request into the shortest bucket that holds it; ``rows_per_call`` rows a call."""
    lengths = bucket_lengths(seq_len, min_bucket)
    by_bucket: dict[int, list[int]] = {length: [] for length in lengths}
    for i, request in enumerate(requests):
        inputs = len(request.context) + len(request.continuation) - 1
        if inputs > seq_len or len(request.context) < 1 or len(request.continuation) < 1:
            raise ValueError(f"request {i} has {inputs} inputs (context {len(request.context)}, "
                             f"continuation {len(request.continuation)}); fit it with encode_request")
        by_bucket[next(length for length in lengths if length >= inputs)].append(i)
    calls, index = [], []
    for length, members in by_bucket.items():
        rows = rows_per_call(length, divisor, tokens_per_call)
        for start in range(0, len(members), rows):
            chunk = members[start:start + rows]
            call = {"inputs": np.zeros((rows, length), np.int32),
                    "targets": np.zeros((rows, length), np.int32),
                    "mask": np.zeros((rows, length), np.float32)}
            for row, i in enumerate(chunk):
                tokens = np.concatenate([requests[i].context, requests[i].continuation])
                n = len(tokens) - 1
                call["inputs"][row, :n] = tokens[:-1]
                call["targets"][row, :n] = tokens[1:]
                call["mask"][row, n - len(requests[i].continuation):n] = 1.0
            calls.append(call)
            index.append(np.asarray(chunk + [-1] * (rows - len(chunk)), np.int64))
    return Batches(calls, index, len(requests))


def row_logliks(model, inputs: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Summed masked log-likelihood per row, float32 [rows]: log_softmax over the real vocabulary
    (padding rows of the embedding excluded) at each target.

    model: a ``GPTNeo``; inputs, targets int32 [rows, length]; mask float32 [rows, length].
    """
    logits = head_logits(model.hidden(inputs)[0], model.output_embedding())  # [rows, length, V]
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
    logits = jnp.where(vocab < model.config.vocab_size, logits, -jnp.inf)
    target = jnp.sum(jnp.where(vocab == targets[..., None], logits, 0.0), axis=-1)
    per_token = target - jax.nn.logsumexp(logits, axis=-1)
    return jnp.sum(per_token * mask, axis=-1)


# One jitted function per (model, mesh), so that a study's cooldown branches (new runs of the same
# model in the same process) reuse their run's compiled programs instead of compiling again.
_LOGLIK_FUNCTIONS: dict[tuple, MeshFunction] = {}


def make_loglik(model_params: ModelParams, mesh: Mesh, param_shardings: dict) -> MeshFunction:
    """Jitted (params, call) -> per-row log-likelihoods float32 [rows], replicated.

    call: "inputs", "targets" int32 and "mask" float32 [rows, length], rows over the mesh's
    batch axes; params with the run's shardings.
    """
    key = (model_params.config, mesh, tuple(sorted((k, str(v)) for k, v in param_shardings.items())))
    if key not in _LOGLIK_FUNCTIONS:
        _LOGLIK_FUNCTIONS[key] = _make_loglik(model_params, mesh, param_shardings)
    return _LOGLIK_FUNCTIONS[key]


def _make_loglik(model_params: ModelParams, mesh: Mesh, param_shardings: dict) -> MeshFunction:

    def loglik(params: Params, call: dict[str, jax.Array]) -> jax.Array:
        model = model_params.merge(params)
        return row_logliks(model, call["inputs"], call["targets"], call["mask"])

    jitted = jax.jit(loglik, in_shardings=(param_shardings, batch_sharding(mesh)),
                     out_shardings=NamedSharding(mesh, PartitionSpec()))
    return MeshFunction(jitted, mesh)


def to_device(call: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """A call's arrays (the same on every process) as global arrays over the batch axes."""
    sharding = batch_sharding(mesh)
    return {name: jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index])
            for name, value in call.items()}


def score_batches(loglik: MeshFunction, params: Params, batches: Batches,
                  device_calls: list[dict[str, jax.Array]]) -> np.ndarray:
    """Log-likelihood of every request, float64 [num_requests] (all calls dispatched, then read)."""
    outputs = [loglik(params, call) for call in device_calls]
    result = np.full(batches.num_requests, np.nan)
    for index, output in zip(batches.request_index, jax.device_get(outputs), strict=True):
        real = index >= 0
        result[index[real]] = np.asarray(output, np.float64)[real]
    return result


def task_metrics(name: str, examples: Sequence[Example], logliks: np.ndarray,
                 texts: Sequence[str]) -> dict[str, float]:
    """task_<name>_{bpb,acc,chance} from the log-likelihoods (nats) of every choice, in example
    order, and the continuation texts they scored."""
    bpb, correct, chance, i = [], [], [], 0
    for example in examples:
        k = len(example.choices)
        ll = logliks[i:i + k]
        chars = np.asarray([max(1, len(t)) for t in texts[i:i + k]], np.float64)
        gold_bytes = max(1, len(texts[i + example.gold].encode("utf-8")))
        bpb.append(-ll[example.gold] / math.log(2) / gold_bytes)
        correct.append(float(np.argmax(ll / chars) == example.gold))
        chance.append(1.0 / k)
        i += k
    return {f"task_{name}_bpb": float(np.mean(bpb)), f"task_{name}_acc": float(np.mean(correct)),
            f"task_{name}_chance": float(np.mean(chance))}


class TaskScorer:
    """Scores ``tasks`` for a model on ``mesh``: tokenized and laid out once, then
    ``scorer(params) -> {task_<name>_bpb/_acc/_chance: float}`` at every evaluation."""

    def __init__(self, tasks: Sequence[str], tokenizer, seq_len: int, model_params: ModelParams,
                 mesh: Mesh, param_shardings: dict, max_examples: int | None = None,
                 tokens_per_call: int = TOKENS_PER_CALL):
        self.tasks = {name: load_task(name, max_examples) for name in tasks}
        requests, self.texts = [], []
        for examples in self.tasks.values():
            for example in examples:
                for context, choice in zip(example.contexts, example.choices, strict=True):
                    request, text = encode_request(tokenizer, context, choice, seq_len)
                    requests.append(request)
                    self.texts.append(text)
        self.num_requests = len(requests)
        self.batches = make_batches(requests, seq_len, batch_divisor(mesh), tokens_per_call)
        self.device_calls = [to_device(call, mesh) for call in self.batches.calls]
        self.loglik = make_loglik(model_params, mesh, param_shardings)

    def logliks(self, params: Params) -> np.ndarray:
        """Log-likelihood (nats) of every request, in task, example and choice order."""
        return score_batches(self.loglik, params, self.batches, self.device_calls)

    def __call__(self, params: Params) -> dict[str, float]:
        logliks, metrics, start = self.logliks(params), {}, 0
        for name, examples in self.tasks.items():
            count = sum(len(e.choices) for e in examples)
            metrics.update(task_metrics(name, examples, logliks[start:start + count],
                                        self.texts[start:start + count]))
            start += count
        return metrics


__all__ = ["TaskScorer", "TokenRequest", "encode_request", "make_batches", "make_loglik",
           "score_batches", "task_metrics"]
