r"""The study runner: trains a family of sizes, records results, fits the laws, draws and reports.

    python -m neoscale.run                                   # the CPU demo (experiments/cpu_demo.py)
    python -m neoscale.run --sizes=125M,350M,1.3B --workdir=DIR --config=experiments/gpt_neo.py
    python -m neoscale.run --config=experiments/isoflop.py --dry_run
    python -m neoscale.run --cooldowns=0.25,0.5,1.0          # WSD cooldown branches

Budgets (one): --tokens_per_param=K (default 20), --tokens=D, --flops=C[,C2,..], --steps=S.
Any study field can be overridden: --config.train.batch_size=64 --config.data.seq_len=512.
Bad input ends with one line on stderr and exit status 2; failed runs with status 1; a preempted
study with status 75 (rerun the same command to resume).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS_DIR = os.path.join(REPO_ROOT, "experiments")
DEFAULT_CONFIG = os.path.join(EXPERIMENTS_DIR, "cpu_demo.py")
DEFAULT_WORKDIR_ROOT = "neoscale_runs"
PROG = "neoscale.run"

_CONFIG: flags.FlagHolder | None = None  # defined by define_config_flag() (it reads sys.argv)
_SIZES = flags.DEFINE_string("sizes", None, "Comma-separated sizes (default: the config's), e.g. "
                             "125M,350M,1.3B, cpu-100k, w256d4h4, 125M-e8k2.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory, local or gs:// (default: "
                               f"./{DEFAULT_WORKDIR_ROOT}/<config name>).")
_TOKENS_PER_PARAM = flags.DEFINE_float("tokens_per_param", None, "Budget: tokens = K x active params "
                                       "(default 20, Chinchilla).")
_TOKENS = flags.DEFINE_float("tokens", None, "Budget: the same number of training tokens per size.")
_FLOPS = flags.DEFINE_string("flops", None, "Budget: training FLOPs per size (an IsoFLOP slice); "
                             "several comma-separated budgets make a Chinchilla Approach-2 grid.")
_STEPS = flags.DEFINE_integer("steps", None, "Budget: the same number of optimizer steps per size.")
_COOLDOWNS = flags.DEFINE_string("cooldowns", None, "Fork WSD cooldown branches ending at these "
                                 "fractions of each run, e.g. 0.25,0.5,1.0.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan and total FLOPs, then exit.")
_DATA = flags.DEFINE_string("data", None, "Data source: builtin | text:GLOB | tfds:NAME[:VERSION].")
_MESH = flags.DEFINE_string("mesh", None, "Device mesh, e.g. data:2,fsdp:-1 (default: all fsdp).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first "
                                 "(every process of a TPU pod runs the same command).")


class UsageError(ValueError):
    """Bad command-line input (reported in one line, exit status 2)."""


def _fail(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def define_config_flag() -> None:
    """Defines --config; ml_collections applies the --config.X overrides of sys.argv right here."""
    global _CONFIG
    if _CONFIG is None:
        try:
            _CONFIG = config_flags.DEFINE_config_file(
                "config", DEFAULT_CONFIG, "Study config file (experiments/NAME.py); override "
                "fields with --config.FIELD=VALUE.", lock_config=True)
        except Exception as error:  # noqa: BLE001 - e.g. an override of a field that does not exist
            if isinstance(error, AttributeError | KeyError):
                error = (f"unknown config field {error} in a --config.FIELD=VALUE override; "
                         "see the fields of the --config file")
            _fail(f"bad flag: {error}")


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with every parsing error turned into one line on stderr."""
    try:
        return flags.FLAGS(argv)
    except Exception as error:  # noqa: BLE001 - flags.Error, or AttributeError for a bad --config.X
        if isinstance(error, AttributeError | KeyError) and "get_config" not in str(error):
            error = f"unknown config field in an override {error}; see the fields of the --config file"
        _fail(f"bad flag: {error}")
    return []


def load_config():
    """The study config with the command-line overrides applied (one-line errors)."""
    path = flags.FLAGS["config"].config_filename
    if not os.path.isfile(path):
        names = sorted(f for f in os.listdir(EXPERIMENTS_DIR) if f.endswith(".py")) if os.path.isdir(
            EXPERIMENTS_DIR) else []
        raise UsageError(f"unknown config file {path!r}; valid: a file defining get_config(), e.g. "
                         + ", ".join(f"experiments/{n}" for n in names))
    config = _CONFIG.value
    try:
        config.name  # noqa: B018 - a config that failed to load raises here
    except OSError as error:
        raise UsageError(f"cannot load config {path!r}: {error.__cause__ or error}") from None
    config.unlock()
    if _SIZES.value is not None:
        config.sizes = _SIZES.value
    if _COOLDOWNS.value is not None:
        config.cooldowns = _COOLDOWNS.value
    if _DATA.value is not None:
        config.data.data = _DATA.value
    if _MESH.value is not None:
        config.mesh = _MESH.value
    return config


def resolve_budget(config):
    from neoscale.runner.plan import parse_budget

    cli = {"tokens_per_param": _TOKENS_PER_PARAM.value, "tokens": _TOKENS.value,
           "flops": _FLOPS.value, "steps": _STEPS.value}
    if any(value is not None for value in cli.values()):
        return parse_budget(**cli)
    return parse_budget(**{key: config.budget[key] for key in cli})


def vocab_size_of(tokenizer_setting: str) -> int:
    """The vocabulary a tokenizer setting gives (trained: its size; a file: read from it)."""
    from neoscale.data import tokenizer

    spec = tokenizer.parse(tokenizer_setting)
    if spec.path:
        return tokenizer.load(spec.path).vocab_size()
    return spec.vocab_size


def check_workdir(workdir: str) -> None:
    from etils import epath

    path = epath.Path(workdir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"workdir {workdir!r} is a file, not a directory; pass --workdir=DIR "
                         "(a new or existing directory, local or gs://)")


def data_config(config, cache_dir: str):
    from neoscale.data import DataConfig

    d = config.data
    return DataConfig(data=d.data, tokenizer=d.tokenizer, seq_len=d.seq_len,
                      heldout_tokens=d.heldout_tokens, seed=d.seed, cache_dir=cache_dir,
                      tfds_data_dir=d.tfds_data_dir)


def default_cache_dir(config, workdir: str) -> str:
    """config.data.cache_dir, else WORKDIR/cache for a local workdir, else ~/.cache/neoscale."""
    if config.data.cache_dir:
        return config.data.cache_dir
    if "://" in workdir:
        return os.path.expanduser("~/.cache/neoscale")
    return os.path.join(workdir, "cache")


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    return 2


def _main(argv: list[str]) -> int:
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # progress lines only; --verbosity=0 for INFO logs
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])!r}; flags look like --name=value")
    config = load_config()
    from neoscale import presets
    from neoscale.runner import plan as plan_lib

    sizes = presets.parse_sizes(str(config.sizes))
    budget = resolve_budget(config)
    cooldowns = plan_lib.parse_cooldowns(config.cooldowns)
    workdir = _WORKDIR.value or os.path.join(DEFAULT_WORKDIR_ROOT, str(config.name))
    if not workdir.strip():
        raise UsageError("empty --workdir; pass --workdir=DIR (local or gs://)")
    check_workdir(workdir)
    cache_dir = default_cache_dir(config, workdir)
    data = data_config(config, cache_dir)
    data.source()  # validates the data setting (one-line ValueError)
    vocab_size = vocab_size_of(config.data.tokenizer)

    import jax

    if _DISTRIBUTED.value:
        jax.distributed.initialize()

    def make_plan(vocab: int):
        return plan_lib.make_plan(
            sizes, budget, vocab_size=vocab, seq_len=int(config.data.seq_len), train=config.train,
            model_overrides=dict(config.model), size_overrides=config.size_overrides.to_dict(),
            cooldowns=cooldowns, num_devices=jax.device_count(), mesh=str(config.mesh),
            process_count=jax.process_count())

    plan = make_plan(vocab_size)
    primary = jax.process_index() == 0
    if _DRY_RUN.value:
        if primary:
            print(f"study {config.name}: {len(plan)} runs, budget {budget.describe()}, "
                  f"{jax.device_count()} device(s), data {config.data.data}, "
                  f"seq_len {config.data.seq_len}, vocab {vocab_size}")
            print(plan_lib.format_table(plan))
        return 0
    return _execute(config, plan, workdir, data, make_plan, primary)


def _execute(config, plan, workdir, data, make_plan, primary) -> int:
    from neoscale.data import prepare
    from neoscale.runner import study
    from neoscale.runner.plan import format_table
    from neoscale.training.loop import PREEMPTED_EXIT_CODE, Preempted, prepare_run_dir

    prepare_run_dir(workdir)
    prepared = prepare(data)  # once, up front: every size shares the cache
    if prepared.vocab_size != plan[0].model.vocab_size:
        plan = make_plan(prepared.vocab_size)
    if primary:
        print(f"[study] {config.name}: {len(plan)} runs into {workdir}", file=sys.stderr)
        print(format_table(plan), file=sys.stderr, flush=True)
    try:
        outcome = study.run_study(plan, config, workdir, cache_dir=data.cache_dir)
    except Preempted as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    if primary:
        print(f"[study] trained {len(outcome.trained)}, skipped {len(outcome.skipped)} finished; "
              f"report: {os.path.join(workdir, 'report.md')}", file=sys.stderr)
        for path in outcome.outputs:
            print(path)
    if outcome.failures:
        print(f"{PROG}: failed ({len(outcome.failures)}): " + "; ".join(
            f"{name}: {reason}" for name, reason in outcome.failures.items()), file=sys.stderr)
        return 1
    return 0


def entrypoint() -> None:
    define_config_flag()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    entrypoint()
