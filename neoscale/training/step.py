"""The loss, the jitted train step (sharded, donated, with gradient accumulation) and evaluation."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from neoscale.sharding import batch_sharding, mesh_pspec, sharding_context
from neoscale.training.state import ModelParams, Params, TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
MOE_METRICS = ("load_balancing_loss", "router_z_loss", "dropped_fraction", "expert_load")


def loss_fn(params: Params, model_params: ModelParams, batch: Batch) -> tuple[jax.Array, Metrics]:
    """Training objective and its parts, all float32.

    batch: "inputs", "targets" int32 [B, S] (optional "mask" float32 [B, S]). Returns
    (cross-entropy + load_balancing_coef * sum_l lb_l + router_z_loss_coef * sum_l z_l, metrics):
    the MoE coefficients apply per MoE layer l (Switch, ST-MoE). metrics["loss"] is the
    cross-entropy alone (comparable with the eval loss); "load_balancing_loss" and
    "router_z_loss" are means over MoE layers, "aux_loss" the term added to the objective.
    """
    config = model_params.config
    summed, count, aux = _cross_entropy_sum(params, model_params, batch)
    loss = summed / count
    total = loss
    metrics = {"loss": loss}
    if config.is_moe:
        aux_loss = (config.load_balancing_coef * aux["load_balancing_loss_per_layer"].sum()
                    + config.router_z_loss_coef * aux["router_z_loss_per_layer"].sum())
        total = loss + aux_loss
        metrics.update({name: aux[name].astype(jnp.float32) for name in MOE_METRICS})
        metrics["aux_loss"] = aux_loss
    metrics["total_loss"] = total
    return total, metrics


def masked_loss_sums(params: Params, model_params: ModelParams,
                     batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(sum of masked per-token cross-entropy, number of unmasked tokens), float32 scalars.

    batch: "inputs", "targets" int32 [B, S], optional "mask" float32 [B, S] (default all ones).
    The evaluation loss is sum / count over all held-out batches.
    """
    summed, count, _ = _cross_entropy_sum(params, model_params, batch)
    return summed, count


def _cross_entropy_sum(params: Params, model_params: ModelParams,
                       batch: Batch) -> tuple[jax.Array, jax.Array, Metrics]:
    """(sum of masked cross-entropy, token count, MoE aux) through the configured LM-head loss
    (``ModelConfig.loss_impl``: fused by default, so [B, S, vocab] logits are never whole)."""
    mask = batch.get("mask")
    if mask is None:
        mask = jnp.ones(batch["targets"].shape, jnp.float32)
    mask = mask.astype(jnp.float32)
    model = model_params.merge(params)
    summed, aux = model.cross_entropy_sum(batch["inputs"], batch["targets"], mask)
    return summed, mask.sum(), aux


def _split_micro_batches(batch: Batch, micro_batches: int) -> Batch:
    """[B, S] -> [M, B/M, S] taking every M-th row, so every device keeps its own rows."""

    def split(x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0] // micro_batches, micro_batches, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(
            x, PartitionSpec(None, *mesh_pspec(("act_batch", "act_length"))))

    return jax.tree.map(split, batch)


def grads_and_metrics(params: Params, model_params: ModelParams, batch: Batch,
                      micro_batches: int = 1) -> tuple[Params, Metrics]:
    """Mean gradient and metrics over ``micro_batches`` equal slices of the batch."""
    grad_fn = jax.grad(lambda p, b: loss_fn(p, model_params, b), has_aux=True)
    if micro_batches == 1:
        return grad_fn(params, batch)
    micro = _split_micro_batches(batch, micro_batches)

    def accumulate(carry, micro_batch):
        return jax.tree.map(jnp.add, carry, grad_fn(params, micro_batch)), None

    shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro))
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    summed, _ = jax.lax.scan(accumulate, zeros, micro)
    return jax.tree.map(lambda x: x / micro_batches, summed)


class MeshFunction:
    """A jitted function called, and lowered, inside its mesh's sharding context: ``f(*args)``
    runs it; ``f.lower(*args)`` (abstract ShapeDtypeStructs with shardings are enough) gives the
    program to compile ahead of time, e.g. for a TPU topology (``neoscale.aot``)."""

    def __init__(self, jitted: Callable, mesh: Mesh):
        self.jitted, self.mesh = jitted, mesh

    def __call__(self, *args):
        with sharding_context(self.mesh):
            return self.jitted(*args)

    def lower(self, *args):
        with sharding_context(self.mesh):
            return self.jitted.lower(*args)


def make_train_step(model_params: ModelParams, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, mesh: Mesh, shardings: TrainState,
                    micro_batches: int = 1) -> MeshFunction:
    """The jitted step: (state, batch) -> (state after one optimizer update, metrics).

    The state is donated; metrics are replicated float32 scalars (and MoE expert_load), with
    "finite" = 1.0 when the loss, the gradient and the update are all finite.
    """

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        grads, metrics = grads_and_metrics(state.params, model_params, batch, micro_batches)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = (jnp.isfinite(metrics["total_loss"]) & jnp.isfinite(grad_norm)
                  & jnp.isfinite(optax.global_norm(updates)))
        metrics.update(grad_norm=grad_norm, learning_rate=jnp.asarray(schedule(state.step),
                                                                      jnp.float32),
                       finite=finite.astype(jnp.float32))
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    replicated = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(step, in_shardings=(shardings, batch_sharding(mesh)),
                     out_shardings=(shardings, replicated), donate_argnums=0)
    return MeshFunction(jitted, mesh)


def stacked_batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of stacked batches [N, B, S]: the batch axis over the mesh, N unsharded."""
    return NamedSharding(mesh, PartitionSpec(None, *batch_sharding(mesh).spec))


def make_evaluate(model_params: ModelParams, mesh: Mesh, param_shardings: dict) -> MeshFunction:
    """Jitted (params, stacked held-out batches) -> mean masked cross-entropy, float32 scalar.

    batches: "inputs", "targets" int32 and "mask" float32, all [N, B, S] (``stack_batches``):
    one program scans the N micro-batches of B sequences (``masked_loss_sums`` each, float32
    sums), so one evaluation is one dispatch of collectives on every device, whatever N, and
    holds the activations of one micro-batch at a time.
    """

    def evaluate(params: Params, batches: Batch) -> jax.Array:
        def accumulate(totals, batch):
            loss_sum, count = masked_loss_sums(params, model_params, batch)
            return (totals[0] + loss_sum, totals[1] + count), None

        zero = jnp.zeros((), jnp.float32)
        (loss_sum, count), _ = jax.lax.scan(accumulate, (zero, zero), batches)
        return loss_sum / count

    jitted = jax.jit(evaluate, in_shardings=(param_shardings, stacked_batch_sharding(mesh)),
                     out_shardings=NamedSharding(mesh, PartitionSpec()))
    return MeshFunction(jitted, mesh)


def stack_batches(local_batches: list[dict], mesh: Mesh) -> Batch:
    """This process's rows of N batches (numpy [B_local, S] each) -> global [N, B, S] arrays."""
    sharding = stacked_batch_sharding(mesh)
    return {name: jax.make_array_from_process_local_data(
        sharding, np.stack([batch[name] for batch in local_batches]))
        for name in local_batches[0]}


def global_batch(local_batch: dict, mesh: Mesh) -> Batch:
    """This process's rows (numpy) -> global jax Arrays sharded over the batch mesh axes."""
    sharding = batch_sharding(mesh)
    return {name: jax.make_array_from_process_local_data(sharding, value)
            for name, value in local_batch.items()}
