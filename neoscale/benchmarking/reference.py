"""The reference: Hugging Face ``transformers`` GPT-Neo (PyTorch, CPU) trained with the same AdamW.

Imported only for ``--compare=reference`` (torch and transformers are test/benchmark extras).
"""

from __future__ import annotations

import dataclasses
import time

from neoscale.benchmarking.memory import minor_page_faults
from neoscale.model import ModelConfig


@dataclasses.dataclass(frozen=True)
class AdamWSettings:
    """The neoscale optimizer's hyper-parameters (``neoscale.training.optimizer.make_optimizer``)."""

    learning_rate: float
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0


def gpt_neo_config(config: ModelConfig):
    """The ``transformers.GPTNeoConfig`` of the same shape (dropout off, like neoscale)."""
    from transformers import GPTNeoConfig

    if config.is_moe:
        raise ValueError("--compare=reference needs a dense size: the reference GPT-Neo has no experts")
    if config.attention_scale != "none" or not config.tie_embeddings:
        raise ValueError("--compare=reference needs GPT-Neo's unscaled attention and tied embeddings")
    if config.attention_pattern == "alternating":
        attention_types = [[["global", "local"], config.num_layers // 2]]
    else:
        attention_types = [[[config.attention_pattern], config.num_layers]]
    return GPTNeoConfig(
        vocab_size=config.vocab_size, max_position_embeddings=config.max_positions,
        hidden_size=config.d_model, num_layers=config.num_layers, num_heads=config.num_heads,
        attention_types=attention_types, intermediate_size=config.ffn_dim,
        window_size=config.window_size, activation_function=config.activation,
        layer_norm_epsilon=config.layer_norm_eps, initializer_range=config.init_std,
        resid_dropout=0.0, embed_dropout=0.0, attention_dropout=0.0, use_cache=False,
        tie_word_embeddings=True)


def reference_step_seconds(config: ModelConfig, batch_size: int, seq_len: int,
                           adamw: AdamWSettings, steps: int, warmup_steps: int,
                           threads: int) -> tuple[list[float], float]:
    """(seconds of each of ``steps`` timed reference training steps after ``warmup_steps``, the
    host's minor page faults per timed step).

    One step: forward on int64 tokens [batch_size, seq_len], mean cross-entropy against the next
    tokens, backward, global-norm clipping, AdamW (decay on matrices only, not on embeddings,
    norms or biases, as in neoscale).
    """
    import torch
    from transformers import GPTNeoForCausalLM

    if config.dtype != "float32":
        raise ValueError(f"--compare=reference runs PyTorch on the CPU in float32; "
                         f"use --dtype=float32 (got {config.dtype})")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPTNeoForCausalLM(gpt_neo_config(config)).train()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        is_embedding = "wte" in name or "wpe" in name
        (decay if param.ndim >= 2 and not is_embedding else no_decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": adamw.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=adamw.learning_rate, betas=(adamw.b1, adamw.b2), eps=adamw.eps)
    tokens = torch.randint(0, config.vocab_size, (batch_size, seq_len + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step() -> None:
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab_size),
                                                 targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), adamw.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup_steps):
        step()
    seconds = []
    faults_before = minor_page_faults()
    for _ in range(steps):
        start = time.perf_counter()
        step()  # eager CPU execution: the work is done when the call returns
        seconds.append(time.perf_counter() - start)
    return seconds, (minor_page_faults() - faults_before) / steps
