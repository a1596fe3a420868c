"""Coordinate check: do activations keep their size as the model widens (and deepens)?

Trains models of several widths (and, for CompleteP, depths) for a few AdamW steps at one learning
rate on one fixed batch, and after every step measures on that batch the mean absolute value of the
token embedding, every layer's output (the residual stream after each block), every layer's
attention logits (causal entries, scale and multipliers included) and the output logits, for each
of a few seeds (combined by the geometric mean). Under a correct μP / CompleteP the log-log slope
of each against width (depth) stays near 0 or falls (init terms that vanish); under SP, Adam's
Θ(1) steps on every coordinate of a width-n matrix move its output by Θ(n), so the slopes are
clearly positive (Yang et al. 2022, Figure 5). The rate must be a stable one: at the edge of
stability a quantity's value at a fixed step varies several-fold between seeds, and the CLI warns.

    python -m neoscale.coord_check --parametrization=mup --out_dir=/tmp/coord
    python -m neoscale.coord_check --parametrization=completep --out_dir=/tmp/coord

writes ``coord_check_{parametrization}.md`` (values, slopes after every step, the seeds' spread),
``.json`` (every value: size x seed x step) and ``.png`` (Yang et al.'s Figure 5: one panel per
quantity, one line per step), and prints the slopes. The check's numbers come from
``run_check``, which the tests call with smaller settings.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from neoscale import files
from neoscale.model import GPTNeo, ModelConfig, parametrization
from neoscale.model.lm_head import head_logits
from neoscale.training.optimizer import make_optimizer, weight_decay_mask
from neoscale.training.state import ModelParams
from neoscale.training.step import loss_fn


@dataclasses.dataclass(frozen=True)
class CheckConfig:
    """One coordinate check: which models, how they train, what batch they see."""

    parametrization: str = "mup"
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    depths: tuple[int, ...] = (2, 4, 8, 16, 32)  # depth sweep (at width base_width) for completep
    base_width: int = 64
    base_depth: int = 2
    depth: int = 2  # depth of the width sweep
    num_heads: int = 4  # fixed: the head dimension grows with width
    vocab_size: int = 256
    seq_len: int = 64
    window_size: int = 16
    batch_size: int = 8
    steps: int = 5
    # 1e-2 put layer 1's attention logits at the start of a fast growth by step 5 (the loss rose on
    # 4 of 6 seeds at width 1024, the logits varied 12x between seeds): a check measures a stable
    # update's scaling, so the default is half that (seed spread <= 1.23x; benchmarks/RESULTS.md).
    learning_rate: float = 5e-3
    seeds: tuple[int, ...] = (0, 1, 2)


def model_config(check: CheckConfig, width: int, depth: int) -> ModelConfig:
    return ModelConfig(vocab_size=check.vocab_size, max_positions=check.seq_len, d_model=width,
                       num_layers=depth, num_heads=check.num_heads, window_size=check.window_size,
                       parametrization=check.parametrization, base_d_model=check.base_width,
                       base_num_layers=check.base_depth, attention_impl="dense", loss_impl="plain",
                       max_unrolled_groups=0)


def fixed_batch(check: CheckConfig) -> dict[str, jax.Array]:
    """Arithmetic progressions modulo the vocabulary (random start and stride): learnable."""
    rng = np.random.default_rng(1234)
    start = rng.integers(0, check.vocab_size, (check.batch_size, 1))
    stride = rng.integers(1, 5, (check.batch_size, 1))
    tokens = (start + stride * np.arange(check.seq_len + 1)) % check.vocab_size
    return {"inputs": jnp.asarray(tokens[:, :-1], jnp.int32),
            "targets": jnp.asarray(tokens[:, 1:], jnp.int32)}


UNSTABLE_SPREAD = 2.0  # seeds' max/min above which the CLI warns (stable protocol: <= 1.23)


def trajectory(config: ModelConfig, batch: dict[str, jax.Array], steps: int, learning_rate: float,
               seed: int) -> Iterator[GPTNeo]:
    """The model after each of ``steps`` updates of the project's AdamW (clipping, decay,
    multipliers): t = 1 .. steps."""
    model_params = ModelParams(config, seed)
    params = jax.jit(model_params.init)()
    optimizer = make_optimizer(optax.constant_schedule(learning_rate),
                               weight_decay_mask(model_params.logical_specs),
                               multipliers=parametrization.adam_multipliers(
                                   config, model_params.logical_specs))

    @jax.jit
    def step(params, opt_state):
        grads, _ = jax.grad(lambda p: loss_fn(p, model_params, batch), has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = optimizer.init(params)
    for _ in range(steps):
        params, opt_state = step(params, opt_state)
        yield model_params.merge(params)


def train(config: ModelConfig, batch: dict[str, jax.Array], steps: int, learning_rate: float,
          seed: int) -> GPTNeo:
    """The model after ``steps`` (>= 1) updates."""
    *_, model = trajectory(config, batch, steps, learning_rate, seed)
    return model


def activations(model: GPTNeo, tokens: jax.Array) -> dict[str, float]:
    """Mean |value| of the embedding, each layer's output and attention logits, and the logits.

    tokens int [batch, seq]. Runs the model's own blocks one by one (the stacked layer groups
    are sliced), so every multiplier the model applies is measured.
    """
    config = model.config
    seq = tokens.shape[1]
    causal = np.tril(np.ones((seq, seq), bool))
    x = model.wte[...][tokens] + model.wpe[...][:seq]
    out = {"embedding": float(jnp.abs(x).mean())}
    graphdef, state = nnx.split(model.groups)
    for g in range(config.num_groups):
        group = nnx.merge(graphdef, jax.tree.map(lambda a, g=g: a[g], state))
        for j, block in enumerate(group.blocks):
            layer = g * config.layer_period + j
            h = block.ln_1(x)
            q = jnp.einsum("bsd,dhk->bshk", h, block.attn.q_proj[...])
            k = jnp.einsum("bsd,dhk->bshk", h, block.attn.k_proj[...])
            scores = jnp.einsum("bqhk,bshk->bhqs", q, k) * block.attn.scale
            out[f"attn_logits_{layer}"] = float(jnp.abs(scores).sum(axis=(0, 1)).sum(where=causal)
                                                / (causal.sum() * scores.shape[0] * scores.shape[1]))
            x, _ = block(x)
            out[f"layer_{layer}"] = float(jnp.abs(x).mean())
    logits = head_logits(model.ln_f(x), model.output_embedding())
    out["logits"] = float(jnp.abs(logits).mean())
    return out


def measure(check: CheckConfig, width: int, depth: int) -> dict[str, np.ndarray]:
    """{quantity: float [seeds, steps]}: the activations after every step t = 1 .. check.steps,
    for each of ``check.seeds``."""
    batch = fixed_batch(check)
    config = model_config(check, width, depth)
    runs = [[activations(model, batch["inputs"])
             for model in trajectory(config, batch, check.steps, check.learning_rate, seed)]
            for seed in check.seeds]
    return {name: np.array([[row[name] for row in run] for run in runs]) for name in runs[0][0]}


def slope(xs, ys) -> float:
    """Least-squares slope of log(ys) against log(xs)."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


@dataclasses.dataclass
class Sweep:
    """Measured activations along one axis ("width" or "depth"): runs[quantity] float [sizes,
    seeds, steps], the value at sizes[i] for seed j after step t + 1.

    Seeds are combined by the geometric mean (the mean of the logs), so the slope of a quantity is
    the mean of its per-seed slopes and one seed's outlier cannot set it alone (benchmarks/
    RESULTS.md: after 5 steps at lr 1e-2, layer 1's attention logits vary 12x between seeds).
    """

    axis: str
    sizes: tuple[int, ...]
    runs: dict[str, np.ndarray]

    @property
    def steps(self) -> int:
        return next(iter(self.runs.values())).shape[2]

    def values_at(self, step: int) -> dict[str, list[float]]:
        """{quantity: [geometric mean over seeds at each size]} after step ``step`` (1-based)."""
        return {name: np.exp(np.log(run[:, :, step - 1]).mean(axis=1)).tolist()
                for name, run in self.runs.items()}

    @property
    def values(self) -> dict[str, list[float]]:
        """The values after the last step."""
        return self.values_at(self.steps)

    def slopes(self, step: int | None = None) -> dict[str, float]:
        """{quantity: log-log slope against size} after ``step`` (default the last)."""
        values = self.values_at(step or self.steps)
        return {name: slope(self.sizes, ys) for name, ys in values.items()}

    def seed_spread(self) -> dict[str, tuple[float, int]]:
        """{quantity: (largest max/min ratio over seeds after the last step, the size where)}."""
        spread = {}
        for name, run in self.runs.items():
            ratios = run[:, :, -1].max(axis=1) / run[:, :, -1].min(axis=1)
            spread[name] = (float(ratios.max()), self.sizes[int(ratios.argmax())])
        return spread

    def seed_slopes(self) -> dict[str, list[float]]:
        """{quantity: [slope of each seed alone]} after the last step: the seeds' spread."""
        return {name: [slope(self.sizes, run[:, j, -1]) for j in range(run.shape[1])]
                for name, run in self.runs.items()}


def width_sweep(check: CheckConfig) -> Sweep:
    rows = [measure(check, width, check.depth) for width in check.widths]
    return Sweep("width", check.widths, {name: np.stack([row[name] for row in rows]) for name in rows[0]})


def depth_sweep(check: CheckConfig) -> Sweep:
    """Depths at the base width; layers compared by relative position: the residual stream halfway
    and at the end (under CompleteP each block adds 1/depth of a branch, so a fixed layer's
    output is not depth-invariant, the stream at a fixed fraction of the depth is)."""
    values: dict[str, list[np.ndarray]] = {}
    for depth in check.depths:
        row = measure(check, check.base_width, depth)
        last = depth - 1
        picked = {"embedding": row["embedding"], "layer_middle": row[f"layer_{depth // 2 - 1}"],
                  "layer_last": row[f"layer_{last}"], "attn_logits_last": row[f"attn_logits_{last}"],
                  "logits": row["logits"]}
        for name, value in picked.items():
            values.setdefault(name, []).append(value)
    return Sweep("depth", check.depths, {name: np.stack(runs) for name, runs in values.items()})


def run_check(check: CheckConfig, depth: bool | None = None) -> list[Sweep]:
    """The width sweep, and the depth sweep too for completep (or when ``depth`` says so)."""
    sweeps = [width_sweep(check)]
    if depth if depth is not None else check.parametrization == "completep":
        sweeps.append(depth_sweep(check))
    return sweeps


def format_table(check: CheckConfig, sweeps: list[Sweep]) -> str:
    lines = [f"# Coordinate check: {check.parametrization}", "",
             f"Mean |activation| after each of {check.steps} AdamW steps at lr "
             f"{check.learning_rate:g} (base width {check.base_width}, base depth {check.base_depth}, "
             f"{check.num_heads} heads, batch {check.batch_size} x {check.seq_len}), geometric mean "
             f"over seeds {list(check.seeds)}.", ""]
    for sweep in sweeps:
        slopes, seed_slopes = sweep.slopes(), sweep.seed_slopes()
        where = f"(depth {check.depth})" if sweep.axis == "width" else f"(width {check.base_width})"
        lines += [f"## Against {sweep.axis} {where}, after step {sweep.steps}", "",
                  "| quantity | " + " | ".join(f"{sweep.axis} {s}" for s in sweep.sizes)
                  + " | slope | seeds' slopes |",
                  "|---|" + "---:|" * (len(sweep.sizes) + 2)]
        for name, ys in sweep.values.items():
            lines.append(f"| {name} | " + " | ".join(f"{y:.4g}" for y in ys) + f" | {slopes[name]:+.3f} "
                         f"| {min(seed_slopes[name]):+.2f} .. {max(seed_slopes[name]):+.2f} |")
        steps = range(1, sweep.steps + 1)
        per_step = [sweep.slopes(t) for t in steps]
        lines += ["", f"Slope against {sweep.axis} after each step:", "",
                  "| quantity | " + " | ".join(f"t={t}" for t in steps) + " |",
                  "|---|" + "---:|" * sweep.steps]
        for name in sweep.runs:
            lines.append(f"| {name} | " + " | ".join(f"{row[name]:+.2f}" for row in per_step) + " |")
        lines.append("")
    return "\n".join(lines)


def to_record(check: CheckConfig, sweeps: list[Sweep]) -> dict:
    """The check's settings and every measured value (JSON-ready)."""
    return {"check": dataclasses.asdict(check),
            "sweeps": [{"axis": sweep.axis, "sizes": list(sweep.sizes), "seeds": list(check.seeds),
                        "steps": list(range(1, sweep.steps + 1)),
                        "slopes": {name: [sweep.slopes(t)[name] for t in range(1, sweep.steps + 1)]
                                   for name in sweep.runs},
                        "seed_slopes": sweep.seed_slopes(),
                        "values": {name: run.tolist() for name, run in sweep.runs.items()},
                        "values_layout": "[size][seed][step]"} for sweep in sweeps]}


def plot(check: CheckConfig, sweeps: list[Sweep], path: pathlib.Path) -> None:
    """Yang et al. 2022, Figure 5: one panel per quantity, mean |coordinate| (log) against size
    (log2), one line per step t = 1 .. T (geometric mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(sweep.runs) for sweep in sweeps)
    fig, axes = plt.subplots(len(sweeps), columns, figsize=(2.6 * columns, 2.5 * len(sweeps)),
                             squeeze=False)
    for row, sweep in zip(axes, sweeps, strict=True):
        colors = plt.cm.viridis(np.linspace(0, 0.9, sweep.steps))
        for ax, name in zip(row, sweep.runs, strict=False):
            for t, color in zip(range(1, sweep.steps + 1), colors, strict=True):
                ax.plot(sweep.sizes, sweep.values_at(t)[name], marker=".", color=color, label=f"t={t}")
            ax.set_xscale("log", base=2)
            ax.set(yscale="log", xlabel=sweep.axis, title=name)
            ax.title.set_fontsize(9)
        row[0].set_ylabel("mean |coordinate|")
        row[0].legend(fontsize=6)
        for ax in row[len(sweep.runs):]:
            ax.set_visible(False)
    fig.suptitle(f"Coordinate check: {check.parametrization}, lr {check.learning_rate:g}, "
                 f"{len(check.seeds)} seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The CLI's flags: defined only when run as a program, so that importing this module as a
    library beside another CLI (neoscale.fit also has --out_dir) cannot collide."""
    flags.DEFINE_enum("parametrization", "mup", parametrization.PARAMETRIZATIONS, "sp, mup or completep")
    flags.DEFINE_string("out_dir", None, "where the table (.md) and figure (.png) are written")
    flags.DEFINE_list("widths", ["64", "128", "256", "512", "1024"], "widths of the width sweep")
    flags.DEFINE_list("depths", ["2", "4", "8", "16", "32"], "depths of the depth sweep (completep)")
    flags.DEFINE_integer("steps", 5, "AdamW steps before measuring")
    flags.DEFINE_float("learning_rate", CheckConfig.learning_rate, "the (base) learning rate")
    flags.DEFINE_integer("seeds", len(CheckConfig.seeds), "model seeds per point (geometric mean)")
    flags.DEFINE_bool("depth_sweep", None, "also sweep depth (default: for completep only)")


def _fail(message: str) -> None:
    print(f"neoscale.coord_check: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def check_inputs(widths: tuple[int, ...], depths: tuple[int, ...], seeds: int, steps: int,
                 out_dir: str) -> None:
    """Every flag the sweep would trip over, before the sweep (one-line ValueError)."""
    heads = CheckConfig.num_heads
    if len(set(widths)) < 2 or any(w < 1 or w % heads for w in widths):
        raise ValueError(f"--widths={','.join(map(str, widths))}: give two or more distinct "
                         f"widths, each a positive multiple of the {heads} heads, e.g. 64,128,256")
    if len(set(depths)) < 2 or any(d < 1 for d in depths):
        raise ValueError(f"--depths={','.join(map(str, depths))}: give two or more distinct "
                         "positive depths, e.g. 2,4,8")
    if seeds < 1:
        raise ValueError(f"--seeds={seeds}: the number of model seeds averaged, at least 1")
    if steps < 1:
        raise ValueError(f"--steps={steps}: the AdamW steps, measured after each: 1 or more")
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out_dir={out_dir} is a file; pass a directory (new or existing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"cannot write to --out_dir={out_dir} ({error.strerror or error}); "
                         "choose a writable directory") from None


def main(argv) -> None:
    del argv
    if not FLAGS.out_dir:
        _fail("--out_dir is required: the directory for the table and the figure")
    try:
        widths = tuple(int(w) for w in FLAGS.widths)
        depths = tuple(int(d) for d in FLAGS.depths)
    except ValueError as error:
        _fail(f"--widths and --depths take comma-separated integers ({error})")
    try:
        check_inputs(widths, depths, FLAGS.seeds, FLAGS.steps, FLAGS.out_dir)
    except ValueError as error:
        _fail(str(error))
    check = CheckConfig(parametrization=FLAGS.parametrization, widths=widths, depths=depths,
                        base_width=min(widths), base_depth=min(depths), steps=FLAGS.steps,
                        learning_rate=FLAGS.learning_rate, seeds=tuple(range(FLAGS.seeds)))
    sweeps = run_check(check, FLAGS.depth_sweep)
    out = pathlib.Path(FLAGS.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"coord_check_{check.parametrization}"
    stem.with_suffix(".md").write_text(format_table(check, sweeps))
    files.write_atomic(stem.with_suffix(".json"), files.to_json(to_record(check, sweeps), indent=1))
    plot(check, sweeps, stem.with_suffix(".png"))
    for sweep in sweeps:
        slopes = sweep.slopes()
        print(f"{check.parametrization}: log-log slope against {sweep.axis} "
              f"(max |slope| {max(abs(s) for s in slopes.values()):.3f})")
        for name, value in slopes.items():
            print(f"  {name:20s} {value:+.3f}")
        for name, (ratio, size) in sweep.seed_spread().items():
            if ratio > UNSTABLE_SPREAD:
                print(f"  warning: {name} varies {ratio:.1f}x between seeds at {sweep.axis} {size}: "
                      "a rate at the edge of stability, not a scaling; lower --learning_rate")
    print(f"wrote {stem}.md, {stem}.json and {stem}.png")


if __name__ == "__main__":
    define_flags()
    app.run(main)
