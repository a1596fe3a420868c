"""The train state (parameters, optimizer state, step) and its creation directly in sharded form.

Parameters live in a flat dict keyed by their path in the model ("groups/blocks/0/attn/q_proj"):
the checkpoint format, readable without the model code. ``ModelParams`` turns such a dict back
into a ``GPTNeo`` module (``merge``) inside jitted functions.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from neoscale.model import GPTNeo, ModelConfig
from neoscale.sharding import check_divisible, named_shardings

Params = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    """step: int32 scalar (optimizer steps done); params: {path: array}; opt_state: optax's."""

    step: jax.Array
    params: Params
    opt_state: Any


def _path_name(path: tuple) -> str:
    return "/".join(str(key) for key in path)


class ModelParams:
    """The parameters of one model configuration: names, shapes, logical axes; init and merge."""

    def __init__(self, config: ModelConfig, seed: int):
        self.config = config
        self.seed = seed
        with nnx.use_eager_sharding(False):
            abstract = nnx.eval_shape(lambda: GPTNeo(config, rngs=nnx.Rngs(seed)))
        self.graphdef, state, rest = nnx.split(abstract, nnx.Param, ...)
        if jax.tree.leaves(rest):
            raise ValueError("the model holds non-parameter state, which the train state does "
                             "not carry; make it a static attribute or an nnx.Param")
        self._template = list(nnx.to_flat_state(state))
        self.names = [_path_name(path) for path, _ in self._template]
        self.shapes: dict[str, jax.ShapeDtypeStruct] = {
            _path_name(path): jax.ShapeDtypeStruct(var.get_value().shape, var.get_value().dtype)
            for path, var in self._template}
        self.logical_specs: dict[str, PartitionSpec] = {
            _path_name(path): PartitionSpec(*(var.get_metadata().get("out_sharding") or ()))
            for path, var in self._template}

    def init(self) -> Params:
        """Fresh parameters {path: array}; call under jax.jit (with out_shardings)."""
        with nnx.use_eager_sharding(False):
            model = GPTNeo(self.config, rngs=nnx.Rngs(self.seed))
        return self.params_of(model)

    def params_of(self, model: GPTNeo) -> Params:
        """The {path: array} parameters of a GPTNeo module of this configuration (e.g. one
        ``neoscale.convert.load_hf_gpt_neo`` loaded)."""
        state = nnx.state(model, nnx.Param)
        return {_path_name(path): var.get_value() for path, var in nnx.to_flat_state(state)}

    def merge(self, params: Params) -> GPTNeo:
        """The GPTNeo module holding ``params`` (arrays or tracers)."""
        flat = [(path, var.replace(params[name]))
                for (path, var), name in zip(self._template, self.names, strict=True)]
        return nnx.merge(self.graphdef, nnx.from_flat_state(flat))

    def shardings(self, mesh: Mesh) -> dict[str, NamedSharding]:
        """Placement of every parameter, from the rules table; checks divisibility first."""
        shardings = named_shardings(self.logical_specs, mesh)
        check_divisible(self.shapes, shardings, self.logical_specs)
        return shardings


def _replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(model_params: ModelParams, optimizer: optax.GradientTransformation,
                    mesh: Mesh) -> TrainState:
    """Shardings of every leaf of the TrainState: optimizer moments follow their parameters."""
    param_shardings = model_params.shardings(mesh)
    abstract_opt = jax.eval_shape(optimizer.init, model_params.shapes)
    opt_shardings = optax.tree_map_params(
        optimizer, lambda _, sharding: sharding, abstract_opt, param_shardings,
        transform_non_params=lambda _: _replicated(mesh))
    return TrainState(step=_replicated(mesh), params=param_shardings, opt_state=opt_shardings)


def abstract_state(model_params: ModelParams, optimizer: optax.GradientTransformation,
                   mesh: Mesh) -> TrainState:
    """ShapeDtypeStructs with shardings for every leaf: the restore target on any mesh."""
    shapes = jax.eval_shape(lambda: _fresh_state(model_params.shapes, optimizer))
    shardings = state_shardings(model_params, optimizer, mesh)
    return jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                                 sharding=sharding),
                        shapes, shardings)


def _fresh_state(params: Params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params))


def create_train_state(model_params: ModelParams, optimizer: optax.GradientTransformation,
                       mesh: Mesh) -> TrainState:
    """Initialises the state under jax.jit with out_shardings: no host ever holds it whole."""
    shardings = state_shardings(model_params, optimizer, mesh)
    init = jax.jit(lambda: _fresh_state(model_params.init(), optimizer), out_shardings=shardings)
    with jax.set_mesh(mesh):
        return init()
