r"""The study runner: trains a family of sizes, records results, fits the laws, draws and reports.

    python -m neoscale.run                                   # the CPU demo (experiments/cpu_demo.py)
    python -m neoscale.run --sizes=125M,350M,1.3B --dry_run  # the GPT-Neo study (experiments/gpt_neo.py)
    python -m neoscale.run --sizes=125M,350M,1.3B --workdir=gs://BUCKET/gpt_neo --distributed
    python -m neoscale.run --config=experiments/isoflop.py --dry_run
    python -m neoscale.run --cooldowns=0.25,0.5,1.0          # WSD cooldown branches

Without --config, the study is chosen from the sizes: any GPT-Neo preset among --sizes (125M, 350M,
760M, 1.3B, 2.7B, or one with experts such as 125M-e8k2) selects experiments/gpt_neo.py (vocabulary
50257, GPT-2 tokenizer, sequence length 2048, 20 tokens per parameter, GPT-3 batch and learning
rate, bfloat16); otherwise experiments/cpu_demo.py (the CPU demo and its small ladder).

Budgets (one): --tokens_per_param=K (default 20), --tokens=D, --flops=C[,C2,..], --steps=S.
--forecast_sizes=A,B plans sizes without training them: the fit forecasts their loss and the study's
ledger (WORKDIR/forecasts.jsonl) keeps the forecasts; train them later (--sizes=...,A) to score them.
Any study field can be overridden: --config.train.batch_size=64 --config.data.seq_len=512.
Bad input ends with one line on stderr and exit status 2, and so does a workdir that another
process is writing (one line naming it); failed runs with status 1; a preempted
study (SIGTERM) with status 75, an interrupted one (Ctrl-C) with 130: rerun the same command to
resume. The first Ctrl-C while training stops after the current step with a checkpoint; a second
stops at once.
"""

from __future__ import annotations

import os
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from neoscale import multihost

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS_DIR = os.path.join(REPO_ROOT, "experiments")
DEFAULT_CONFIG = os.path.join(EXPERIMENTS_DIR, "cpu_demo.py")
GPT_NEO_CONFIG = os.path.join(EXPERIMENTS_DIR, "gpt_neo.py")
CPU_DAY_SECONDS = 86400.0  # refuse CPU plans longer than this without --allow_slow
CPU_MODEL_EFFICIENCY = 0.4  # training FLOP/s as a fraction of the matmul probe (measured: 0.36-0.54)
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
_SEEDS = flags.DEFINE_integer("seeds", None, "Model seeds per size (replicates: run "
                              "<size>-seed<i>_<budget>, model seed train.seed + i; default: the "
                              "config's seeds, 1); config.replicates='size:K,...' for some sizes.")
_COOLDOWNS = flags.DEFINE_string("cooldowns", None, "Fork WSD cooldown branches ending at these "
                                 "fractions of each run, e.g. 0.25,0.5,1.0.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan and total FLOPs, then exit.")
_DATA = flags.DEFINE_string("data", None, "Data source: builtin | text:GLOB | tfds:NAME[:VERSION] | "
                            "hf:NAME[:CONFIG] | prepared:DIR (see neoscale.data).")
_MESH = flags.DEFINE_string("mesh", None, "Device mesh, e.g. data:2,fsdp:-1 (default: all fsdp).")
_ACCELERATOR = flags.DEFINE_string(
    "accelerator", None, "Plan for these devices, e.g. v4-32, v5e-64, v5p-128, v6e-64, h100, h100x8 "
    "(default: the devices here). The plan picks micro-batches and remat to fit their memory; with "
    "--dry_run any target can be planned from a laptop.")
_COMPILE = flags.DEFINE_bool(
    "compile", False, "Check every planned run with the target's own compiler (neoscale.aot: TPU "
    "topologies through libtpu, GPUs through the CUDA plugin; no chip needed): the plan takes the "
    "cheapest remat x micro-batches it accepts and prints its bytes per device.")
_ALLOW_SLOW = flags.DEFINE_bool("allow_slow", False, "Train on a CPU-only host even when the plan "
                                "would take more than a day at this machine's measured speed.")
_ALLOW_REPETITION = flags.DEFINE_bool("allow_repetition", None, "Allow runs that read the corpus more "
                                      "than data.max_epochs (default 4) times.")
_FORECAST_SIZES = flags.DEFINE_list(
    "forecast_sizes", [], "Sizes to forecast, not train: planned at the study's budget (N, D, C), "
    "their loss forecast by the fit and appended to WORKDIR/forecasts.jsonl; a later invocation "
    "that trains them scores the forecasts in the report.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first "
                                 "(every process of a TPU pod runs the same command).")


class UsageError(ValueError):
    """Bad command-line input (reported in one line, exit status 2)."""


def _fail(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def default_config_for(argv: list[str]) -> str:
    """experiments/gpt_neo.py when --sizes names a GPT-Neo preset, else experiments/cpu_demo.py."""
    from neoscale.presets import GPT_NEO_PRESETS

    sizes = ""
    for i, arg in enumerate(argv):
        if arg.startswith("--sizes="):
            sizes = arg.split("=", 1)[1]
        elif arg == "--sizes" and i + 1 < len(argv):
            sizes = argv[i + 1]
    names = [name.strip() for name in sizes.split(",")]
    if any(name.split("-e")[0] in GPT_NEO_PRESETS for name in names):
        return GPT_NEO_CONFIG
    return DEFAULT_CONFIG


def define_config_flag(argv: list[str] | None = None) -> None:
    """Defines --config (default chosen by ``default_config_for``); ml_collections applies the
    --config.X overrides of sys.argv right here."""
    global _CONFIG
    if _CONFIG is None:
        default = default_config_for(sys.argv if argv is None else argv)
        try:
            _CONFIG = config_flags.DEFINE_config_file(
                "config", default, "Study config file (experiments/NAME.py). Default: "
                "experiments/gpt_neo.py when --sizes names a GPT-Neo preset (125M ... 2.7B), else "
                "experiments/cpu_demo.py. Override fields with --config.FIELD=VALUE.",
                lock_config=True)
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
        _keep_replicates_of(config)
    if _COOLDOWNS.value is not None:
        config.cooldowns = _COOLDOWNS.value
    if _SEEDS.value is not None:
        config.seeds = _SEEDS.value
    if _DATA.value is not None:
        config.data.data = _DATA.value
    if _MESH.value is not None:
        config.mesh = _MESH.value
    if _ALLOW_REPETITION.value is not None:
        config.data.allow_repetition = _ALLOW_REPETITION.value
    return config


def resolve_budget(config):
    from neoscale.runner.plan import parse_budget

    cli = {"tokens_per_param": _TOKENS_PER_PARAM.value, "tokens": _TOKENS.value,
           "flops": _FLOPS.value, "steps": _STEPS.value}
    if any(value is not None for value in cli.values()):
        return parse_budget(**cli)
    return parse_budget(**{key: config.budget[key] for key in cli})


def check_workdir(workdir: str) -> None:
    from etils import epath

    path = epath.Path(workdir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"workdir {workdir!r} is a file, not a directory; pass --workdir=DIR "
                         "(a new or existing directory, local or gs://)")


def default_cache_dir(config, workdir: str) -> str:
    """config.data.cache_dir, else WORKDIR/cache: on gs:// for a pod, so that its hosts prepare the
    corpus together, once, and a recreated (preempted) pod reuses it."""
    return config.data.cache_dir or os.path.join(workdir, "cache")


def main(argv: list[str]) -> int:
    from neoscale.workdir_lock import WorkdirLocked

    try:
        return _main(argv)
    except (ValueError, FileNotFoundError, WorkdirLocked) as error:
        _fail(str(error))
    return 2


def _keep_replicates_of(config: ml_collections.ConfigDict) -> None:
    """--sizes replaced the config's sizes: its replicates of sizes no longer studied are dropped,
    said in one line (an explicit --config.replicates naming them still fails in the plan)."""
    sizes = {name.strip() for name in str(config.sizes).split(",")}
    entries = [e.strip() for e in str(config.get("replicates") or "").split(",") if e.strip()]
    dropped = [e for e in entries if e.rpartition(":")[0].strip() not in sizes]
    if dropped and not any(arg.startswith("--config.replicates") for arg in sys.argv):
        config.replicates = ",".join(e for e in entries if e not in dropped)
        print(f"note: the config's replicates {','.join(dropped)} dropped: not among --sizes")


def _main(argv: list[str]) -> int:
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # progress lines only; --verbosity=0 for INFO logs
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])!r}; flags look like --name=value")
    config = load_config()
    from neoscale import data as data_lib
    from neoscale import hardware, presets
    from neoscale.data import tokenizer
    from neoscale.runner import config as runner_config
    from neoscale.runner import plan as plan_lib
    from neoscale.runner import study, tune

    sizes = presets.parse_sizes(str(config.sizes))
    runner_config.check_fit_settings(config.fit)
    runner_config.check_eval_settings(config)
    budget = resolve_budget(config)
    cooldowns = plan_lib.parse_cooldowns(config.cooldowns)
    replicates = plan_lib.parse_replicates(config.get("replicates"), sizes, config.get("seeds", 1))
    workdir = _WORKDIR.value or os.path.join(DEFAULT_WORKDIR_ROOT, str(config.name))
    if not workdir.strip():
        raise UsageError("empty --workdir; pass --workdir=DIR (local or gs://)")
    cache_dir = default_cache_dir(config, workdir)
    unreadable = unreadable_store(workdir, cache_dir)  # gs:// without the gcs extra or credentials
    if unreadable and not _DRY_RUN.value:
        raise UsageError(f"{unreadable[0]}; {unreadable[1]}")
    if not unreadable:
        check_workdir(workdir)
    data = study.study_data_config(config, cache_dir)
    if data.source().kind == "prepared" and (why := unreadable_store(data.source().pattern)):
        raise UsageError(f"{why[0]}; {why[1]}")  # its manifest sizes the plan: it must be read
    if not _DRY_RUN.value:  # (a dry run writes nothing: it plans from anywhere)
        if config.data.cache_dir and data.source().kind != "prepared":
            data_lib.pipeline.check_writable_dir(config.data.cache_dir, "--config.data.cache_dir")
        data_lib.pipeline.check_writable_dir(workdir, "--workdir")
    vocab_size = tokenizer.vocab_size_of(data.tokenizer)
    corpus, unchecked = corpus_of(data, config.data.corpus_tokens, read_cache=not unreadable)

    import jax

    if _DRY_RUN.value and "JAX_PLATFORMS" not in os.environ:
        # A dry run needs no accelerator (--compile builds compile-only devices from the target's
        # description); initialising a local CUDA plugin without a GPU would hide the cuda
        # platform that compiling for a GPU target needs.
        jax.config.update("jax_platforms", "cpu")
    if _DISTRIBUTED.value:
        multihost.initialize()  # and, with fail_fast, one failed process stops them all
    primary = jax.process_index() == 0
    target = hardware.parse_target(_ACCELERATOR.value or "local")
    if target.name != "local" and not _DRY_RUN.value:
        check_target_is_here(target)
    # A dry run on a laptop plans a pod study: memory is only checked against a named target
    # (--accelerator) or local accelerators, never against this host's RAM.
    fit_memory = target.kind.peak_flops > 0 or not _DRY_RUN.value
    if _COMPILE.value and not fit_memory:
        raise UsageError("--compile needs a target: name one with --accelerator=v4-32, v5e-64, "
                         "h100x8, ... (or run where the accelerators are)")

    forecast_sizes = presets.parse_sizes(",".join(_FORECAST_SIZES.value)) if _FORECAST_SIZES.value else []
    trained_too = sorted(set(forecast_sizes) & set(sizes))
    if trained_too:
        raise UsageError(f"--forecast_sizes {','.join(trained_too)} are also in --sizes: forecast a "
                         "size in one invocation (without it in --sizes) and train it in a later one, "
                         "so the forecast is made before its run exists")

    def make_plan(vocab: int, corpus_tokens: int | None, tuned: dict | None = None,
                  plan_sizes: list[str] | None = None):
        """The plan (of ``plan_sizes``, default the study's: sizes to forecast, not train, whose
        memory is not fitted to the devices); ``tuned``: the learning-rate sweep's choice
        (``tune.transfer``), applied to every size as ``train.learning_rate`` and μP's base
        multipliers as model overrides."""
        tuned = dict(tuned or {})
        train = config.train
        if "learning_rate" in tuned:
            train = ml_collections.ConfigDict({**config.train.to_dict(),
                                               "learning_rate": tuned.pop("learning_rate")})
        return plan_lib.make_plan(
            plan_sizes or sizes, budget, vocab_size=vocab, seq_len=int(config.data.seq_len), train=train,
            model_overrides={**dict(config.model), **tuned},
            size_overrides=config.size_overrides.to_dict(),
            cooldowns=cooldowns, num_devices=target.devices, mesh=str(config.mesh),
            process_count=target.hosts, target=target if fit_memory and not plan_sizes else None,
            corpus_tokens=corpus_tokens,
            max_epochs=float(config.data.max_epochs),
            allow_repetition=bool(config.data.allow_repetition),
            compile_check=_COMPILE.value and not plan_sizes, replicates=replicates)

    plan = make_plan(vocab_size, corpus.train_tokens if corpus else None)
    if forecast_sizes:  # planned as they would train, checked here: a bad name fails before training
        make_plan(vocab_size, None, plan_sizes=forecast_sizes)
    if _DRY_RUN.value:
        if primary:
            size = (f"{corpus.train_tokens:,} training tokens, "
                    f"{'measured' if corpus.exact else 'estimated'}" if corpus else "size unknown")
            print(f"study {config.name}: {len(plan)} runs, budget {budget.describe()}, data "
                  f"{config.data.data} ({size}), tokenizer {data.tokenizer} (vocab {vocab_size}), "
                  f"seq_len {config.data.seq_len}")
            print(f"devices: {target.describe()}" + ("" if fit_memory else "; memory not checked: "
                  "plan for the devices you will use with --accelerator=v4-32, v5e-64, h100, ..."))
            print(plan_lib.format_table(plan))
            from neoscale.data import host_io_plan

            corpus_tokens = corpus.train_tokens if corpus else None
            print(host_io_plan(data, plan, target.hosts, corpus_tokens))
            if unreadable:
                print(f"note: {unreadable[0]}: planned as a fresh study ({unreadable[1]} to plan "
                      "with what it holds)")
            if tune.enabled(config) and not unreadable:  # (it reads the workdir's sweep record)
                print(tune.describe(config, plan, workdir, data.cache_dir))
            if target.name == "local" and not target.kind.peak_flops:
                from neoscale.runner.study import format_duration

                seconds, rate = cpu_time_estimate(plan)
                print(f"estimated training time on this host: {format_duration(seconds)} at "
                      f"{CPU_MODEL_EFFICIENCY:.0%} of its matmul probe "
                      f"({rate / CPU_MODEL_EFFICIENCY / 1e9:.0f} GFLOP/s now): a lower bound for "
                      "tiny or routed models, whose steps cost overhead and dispatch "
                      "(benchmarks/RESULTS.md), and without compilation")
            for line in plan_lib.fit_warnings(plan) + plan_lib.headroom_warnings(plan, target.usable_memory):
                print(f"warning: {line}")
            if unchecked:
                print(f"warning: {unchecked}")
            if disk := disk_warning(data, plan, target, corpus_tokens):
                print(f"warning: {disk}")
        return 0
    check_cpu_time(plan, target)
    if unchecked:
        data_lib.check_source(data)  # raises the one-line reason the dry run only warned about
    return _execute(config, plan, workdir, data, make_plan, primary, forecast_sizes)


def unreadable_store(*paths: str) -> tuple[str, str] | None:
    """(why, fix) when a gs:// (or other remote) workdir or cache cannot be read from here, else
    None: the dry run then plans a fresh study; a real run stops on it."""
    from etils import epath

    for path in dict.fromkeys(p for p in paths if "://" in p):
        try:
            epath.Path(path).exists()
        except ImportError as error:
            return (f"cannot read {path} here ({error})",
                    "install the gcs extra: pip install 'neoscale[gcs]'")
        except Exception as error:  # noqa: BLE001 - e.g. no credentials for the bucket
            return (f"cannot read {path} here ({type(error).__name__}: {' '.join(str(error).split())})",
                    "check the bucket name and your credentials (gcloud auth application-default login)")
    return None


def disk_warning(data, plan, target, corpus_tokens: float | None) -> str | None:
    """One line when a host's shards would not fit its disk (the target's, or free space here)."""
    from neoscale.data import hostio

    if target.name == "local" and "://" not in data.cache_dir:
        disk, where = hostio.local_free_bytes(data.cache_dir), "the free space on this host's disk"
    else:
        disk, where = target.kind.host_disk, f"a {target.name} host's disk"
    return hostio.disk_warning(data, plan, target.hosts, corpus_tokens, disk, where)


def corpus_of(data, known_tokens: float | None, *, read_cache: bool = True):
    """(CorpusSize or None, why the source could not be checked or None).

    A source that fails its cheap check (a missing glob, an unknown tfds name, a bad prepared
    directory) is a one-line error; a Hugging Face dataset that cannot be reached from here (no
    network, no ``datasets`` package) is planned with the study's ``data.corpus_tokens`` and the
    reason is returned, so that a dry run works on a laptop and a real run still stops on it.
    """
    from neoscale import data as data_lib

    try:
        data_lib.check_source(data)
        return data_lib.corpus_size(data, read_cache=read_cache), None
    except (ValueError, FileNotFoundError) as error:
        if data.source().kind != "hf":
            raise
        reason = f"{data.data} not checked here ({error})"
    if known_tokens:
        return data_lib.CorpusSize(int(known_tokens), False, None, data.data), reason
    return None, reason


def check_target_is_here(target) -> None:
    """A named --accelerator must be what this job runs on (it is for planning elsewhere with
    --dry_run); a mismatch is one line."""
    from neoscale import hardware

    here = hardware.local_target()
    if here.kind.name != target.kind.name or here.devices != target.devices:
        raise UsageError(f"--accelerator={target.name} plans for {target.devices} x "
                         f"{target.kind.name}, but this job has {here.devices} x {here.kind.name}; "
                         "drop --accelerator (the devices here are used) or add --dry_run")


def cpu_time_estimate(plan) -> tuple[float, float]:
    """(seconds, FLOP/s): the plan's training time on this CPU at CPU_MODEL_EFFICIENCY of the
    matmul probe: a lower bound for tiny models and routed layers, whose steps cost their
    overheads and dispatch rather than their FLOPs (benchmarks/RESULTS.md)."""
    from neoscale.benchmarking.probe import matmul_flops_per_second
    from neoscale.runner.plan import total_flops

    rate = matmul_flops_per_second(1024, "float32") * CPU_MODEL_EFFICIENCY
    return total_flops(plan) / rate, rate


def check_cpu_time(plan, target) -> None:
    """On a host without accelerators, refuse a plan longer than a day (unless --allow_slow)."""
    if target.kind.peak_flops or _ALLOW_SLOW.value:
        return
    from neoscale.runner.plan import total_flops
    from neoscale.runner.study import format_duration

    seconds, rate = cpu_time_estimate(plan)
    if seconds > CPU_DAY_SECONDS:
        raise UsageError(
            f"this plan needs {total_flops(plan):.3g} FLOPs, about {format_duration(seconds)} on this "
            f"CPU-only host (~{rate / 1e9:.0f} GFLOP/s measured); plan it with --dry_run "
            "(--accelerator=v4-32 ...), pick smaller sizes (e.g. --sizes=cpu-100k,cpu-400k), or run "
            "on a TPU/GPU; --allow_slow trains here anyway")


def _execute(config, plan, workdir, data, make_plan, primary, forecast_sizes=()) -> int:
    from neoscale import workdir_lock
    from neoscale.training.loop import prepare_run_dir

    prepare_run_dir(workdir)
    # One writer per study: a local workdir is locked whole; on an object store slices may share
    # a workdir (each its own sizes), so there each run directory is locked while it trains.
    with workdir_lock.hold(workdir, enabled=primary and not workdir_lock.is_object_store(workdir)):
        return _execute_holding_lock(config, plan, workdir, data, make_plan, primary, forecast_sizes)


def _execute_holding_lock(config, plan, workdir, data, make_plan, primary, forecast_sizes=()) -> int:
    from neoscale.data import hostio, prepare, tokens_to_prepare
    from neoscale.runner import forecasts, study, tune
    from neoscale.training.stopping import Preempted

    # once, up front (every size shares the shards), and only what the largest run reads
    prepared = prepare(data, max_train_tokens=tokens_to_prepare(data, hostio.largest_run_tokens(plan)))
    plan = make_plan(prepared.vocab_size, prepared.train_tokens)  # measured, not estimated
    try:
        tuned = tune.transfer(config, plan, workdir, data.cache_dir)  # tune at a base size (if set)
        if tuned:
            plan = make_plan(prepared.vocab_size, prepared.train_tokens, tuned)
        # the sizes to forecast: N, D, C as they would train (their epochs are not checked)
        targets = forecasts.targets_of(make_plan(prepared.vocab_size, None, tuned, list(forecast_sizes))
                                       ) if forecast_sizes else []
        outcome = study.run_study(plan, config, workdir, cache_dir=data.cache_dir, data=prepared,
                                  forecast_targets=targets)
    except Preempted as error:  # a checkpoint was saved and results.csv written
        print(f"{PROG}: {error}", file=sys.stderr)
        return error.exit_code  # 75 after SIGTERM, 130 after Ctrl-C
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
    try:
        app.run(multihost.fail_fast(main), flags_parser=parse_flags)
    except KeyboardInterrupt:  # outside training, or a second Ctrl-C: checkpoints were closed and
        # results written as it unwound; exit_now skips a teardown that XLA can crash or hang
        print(f"{PROG}: interrupted; finished runs, checkpoints and results.csv are kept: rerun the "
              "same command to resume", file=sys.stderr)
        from neoscale.training.stopping import INTERRUPTED_EXIT_CODE

        multihost.exit_now(INTERRUPTED_EXIT_CODE)


if __name__ == "__main__":
    entrypoint()
