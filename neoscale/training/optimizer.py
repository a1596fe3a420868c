"""AdamW with GPT-3's settings, gradient clipping, and the learning-rate schedules.

* ``cosine``: linear warmup, then cosine decay to 10% of the peak, reached at the last update.
* ``wsd`` (warmup-stable-decay, Hägele et al. 2024): linear warmup, constant at the peak, then a
  cooldown over the last ``cooldown_steps`` updates to exactly 0 at the last one, ``linear`` or
  ``1-sqrt`` in shape.
* ``constant``: linear warmup, then the peak to the end (a WSD run without cooldown: the trunk
  from which cooldown branches are forked).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

SCHEDULES = ("cosine", "wsd", "constant")
COOLDOWN_SHAPES = ("linear", "1-sqrt")
COSINE_FINAL_FRACTION = 0.1  # GPT-3: cosine decay to 10% of the peak.
EMBEDDING_AXES = ("vocab", "positions")  # first axis of a lookup table
STACKING_AXES = ("layers", "expert")  # axes that stack copies of one matrix or vector


def make_schedule(kind: str, peak_learning_rate: float, total_steps: int, warmup_steps: int,
                  cooldown_steps: int = 0, cooldown_shape: str = "linear") -> optax.Schedule:
    """The learning rate of each update, as optax calls it: with the count of updates done before.

    Update ``t = count + 1`` (1-based, the step number the loop logs; ``T = total_steps``,
    ``W = warmup_steps``, ``C = cooldown_steps``) uses:

    * warmup, ``t <= W``: ``peak * t / W`` (the first update uses ``peak / W``, never 0; the
      peak is reached at update W);
    * cosine, ``t > W``: from the peak down to ``COSINE_FINAL_FRACTION * peak`` reached at the
      last update, ``t = T``;
    * wsd, ``t > W``: the peak up to update ``T - C``, then the cooldown to exactly 0 at the last
      update (linear: ``peak * (T - t) / C``; 1-sqrt: ``peak * (1 - sqrt((t - T + C) / C))``);
    * constant: the peak after warmup (a wsd trunk; a branch forked at step F with
      ``T = F + C`` follows it exactly up to F).

    Counts past ``T`` keep the final value.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    if cooldown_shape not in COOLDOWN_SHAPES:
        raise ValueError(f"unknown cooldown shape {cooldown_shape!r}; "
                         f"valid: {', '.join(COOLDOWN_SHAPES)}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must be between 0 and steps={total_steps}")
    if kind != "wsd":
        cooldown_steps = 0
    if not 0 <= cooldown_steps <= total_steps - warmup_steps:
        raise ValueError(f"cooldown of {cooldown_steps} steps does not fit after {warmup_steps} "
                         f"warmup steps in a run of {total_steps} steps")
    peak = float(peak_learning_rate)

    def after_warmup(t: jax.Array) -> jax.Array:
        if kind == "cosine":
            progress = jnp.clip((t - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
            floor = COSINE_FINAL_FRACTION * peak
            return floor + (peak - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        if kind == "constant" or cooldown_steps == 0:
            return jnp.full_like(t, peak)
        progress = jnp.clip((t - (total_steps - cooldown_steps)) / cooldown_steps, 0.0, 1.0)
        if cooldown_shape == "1-sqrt":
            return peak * (1.0 - jnp.sqrt(progress))
        return peak * (1.0 - progress)

    def schedule(count) -> jax.Array:
        t = jnp.asarray(count, jnp.float32) + 1.0
        warmup = peak * jnp.minimum(t, warmup_steps) / max(warmup_steps, 1)
        return jnp.where(t <= warmup_steps, warmup, after_warmup(t))

    return schedule


def weight_decay_mask(logical_specs: Mapping[str, PartitionSpec], decay_embeddings: bool = False,
                      decay_norms_and_biases: bool = False) -> dict[str, bool]:
    """True for parameters that get weight decay: matrices, not embeddings, norms or biases.

    Decided from logical axis names, so it holds for any layer naming: after dropping the
    stacking axes (``layers``, ``expert``) a vector is a norm or bias, and a matrix whose first
    axis is ``vocab`` or ``positions`` is an embedding table (an untied LM head is a matrix).
    """
    mask = {}
    for name, spec in logical_specs.items():
        axes = [axis for axis in (spec or ()) if axis not in STACKING_AXES]
        is_vector = len(axes) < 2
        is_embedding = not is_vector and axes[0] in EMBEDDING_AXES
        mask[name] = ((not is_vector or decay_norms_and_biases)
                      and (not is_embedding or decay_embeddings))
    return mask


def make_optimizer(schedule: optax.Schedule, decay_mask: Mapping[str, bool],
                   weight_decay: float = 0.1, b1: float = 0.9, b2: float = 0.95, eps: float = 1e-8,
                   clip_norm: float = 1.0,
                   multipliers: Mapping[str, tuple[float, float]] | None = None
                   ) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW (decoupled weight decay scaled by the schedule).

    ``multipliers`` {name: (LR multiplier μ, ε multiplier)} (μP / CompleteP:
    ``neoscale.model.parametrization.adam_multipliers``) makes parameter p's step
    ``-lr(t) · (μ_p · adam_p(ε · ε_p) + λ · p)``: the decay is independent of μ_p. None: plain
    AdamW, ``-lr(t) · (adam_p(ε) + λ · p)`` (SP; its optimizer state is unchanged).
    """
    if multipliers is None:
        return optax.chain(
            optax.clip_by_global_norm(clip_norm),
            optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                        mask=dict(decay_mask)),
        )
    # Adam is invariant to a constant scale c of a parameter's gradients except through ε:
    # (c·m) / (√(c²·v) + ε) = m / (√v + ε/c). Scaling the gradient by 1/ε_p is ε · ε_p.
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        _scale_each({name: 1.0 / eps_mult for name, (_, eps_mult) in multipliers.items()}),
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        _scale_each({name: lr_mult for name, (lr_mult, _) in multipliers.items()}),
        optax.add_decayed_weights(weight_decay, mask=dict(decay_mask)),
        optax.scale_by_learning_rate(schedule),
    )


def _scale_each(factors: Mapping[str, float]) -> optax.GradientTransformation:
    """Multiplies each entry of a {name: array} update by its factor (stateless)."""
    factors = dict(factors)

    def scale(updates, params=None):
        del params
        return {name: u if factors[name] == 1.0 else u * jnp.asarray(factors[name], u.dtype)
                for name, u in updates.items()}

    return optax.stateless(scale)
