"""Multi-process runs (a TPU pod, or several CPU processes): start them, and stop them all at once.

When one process of a multi-process JAX job raises (bad data on one host, an out-of-memory error, a
bug), the others are blocked in a collective that never completes (TPU collectives have no timeout),
and a normal Python exit of the failing process first waits up to the shutdown timeout at jax's
shutdown barrier: the pod hangs, billing, for minutes, and then dies with a C++ fatal error instead
of the real one. Here, a process whose ``main`` fails publishes the failure in the coordination
service's key-value store and exits at once; every other process watches that key from a daemon
thread and exits with the same status and a line naming the failed process. A process that vanishes
without a word (killed, host lost) is caught by the coordination service's heartbeat timeout.

    app.run(multihost.fail_fast(main))      # the CLI entry point
    multihost.initialize()                   # in main, instead of jax.distributed.initialize()
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

FAILURE_KEY = "neoscale/failed"
# A process that vanishes without a word (killed, host lost) ends the job after this many seconds.
HEARTBEAT_TIMEOUT_SECONDS = 100
# At a normal end the other processes wait at jax's shutdown barrier while process 0 alone fits,
# plots and writes the report; jax's default (300 s) would abort them if that takes longer.
SHUTDOWN_TIMEOUT_SECONDS = 1800
# The failing process waits this long before exiting so that the others read its failure first;
# process 0 waits a second more, since it hosts the coordination service the others talk to.
GRACE_SECONDS = 2.0
# One blocking read of FAILURE_KEY; the watcher loops over them, and a normal exit waits for the
# current one to end (a thread inside jax's client while the interpreter finalizes aborts it).
_WATCH_TIMEOUT_MS = 1000

_T = TypeVar("_T")


class _State:
    process_id: int = 0
    num_processes: int = 1
    client: Any = None  # jax's DistributedRuntimeClient while a multi-process job runs
    failing = False  # this process is already stopping the job
    peer_failure: dict | None = None  # another process's failure, read from FAILURE_KEY
    exiting = False  # a normal interpreter exit has begun
    watcher: threading.Thread | None = None


_state = _State()


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """``jax.distributed.initialize`` (arguments left None are detected, as on Cloud TPU) with the
    timeouts above and gloo CPU collectives, then watches for a failure of another process."""
    import jax
    from jax._src import distributed

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only; no effect on TPU
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_SECONDS,
                               shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_SECONDS)
    state = distributed.global_state
    if state.num_processes < 2:
        return
    _state.process_id, _state.num_processes, _state.client = (state.process_id, state.num_processes,
                                                              state.client)
    _state.watcher = threading.Thread(target=_watch, name="neoscale-failure-watch", daemon=True)
    _state.watcher.start()
    # Registered after jax's own exit handler, so it runs first (atexit is last in, first out).
    atexit.register(_stop_watching)


def fail_fast(main: Callable[..., _T]) -> Callable[..., _T]:
    """``main``, made to stop every process of a multi-process job when it fails on this one: any
    exception, ``sys.exit`` with a non-zero status, or a non-zero int returned (an exit status).
    Single-process runs are unaffected."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> _T:
        try:
            status = main(*args, **kwargs)
        except SystemExit as error:
            if _state.client is not None and error.code not in (None, 0):
                _stop_job(error.code if isinstance(error.code, int) else 1,
                          f"exit status {error.code}")
            raise
        except BaseException as error:
            if _state.client is not None:
                if _state.peer_failure is None:  # else it is the fallout of the other's failure
                    traceback.print_exception(error)
                _stop_job(1, f"{type(error).__name__}: {error}")
            raise
        if _state.client is not None and isinstance(status, int) and status != 0:
            _stop_job(status, f"exit status {status}")
        return status

    return wrapped


def _stop_job(code: int, detail: str) -> NoReturn:
    """Tells the other processes that this one failed, then exits with ``code`` at once."""
    me = _state.process_id
    if _state.peer_failure is not None:  # another process failed first: the watcher is exiting
        exit_now(int(_state.peer_failure["code"]), _peer_exit_delay())
    _state.failing = True
    print(f"neoscale: process {me} of {_state.num_processes} failed ({_shorten(detail)}); stopping "
          "every process of the job", file=sys.stderr, flush=True)
    with contextlib.suppress(Exception):  # the service may be gone (process 0 died): heartbeats tell
        _state.client.key_value_set(FAILURE_KEY, json.dumps(
            {"process": me, "code": code, "detail": _shorten(detail)}), allow_overwrite=True)
    exit_now(code, GRACE_SECONDS + (1.0 if me == 0 else 0.0))


def _watch() -> None:
    """Daemon thread: exits this process when another one reports a failure under FAILURE_KEY."""
    while not _state.exiting:
        try:
            value = _state.client.blocking_key_value_get(FAILURE_KEY, _WATCH_TIMEOUT_MS)
        except Exception:  # noqa: BLE001 - a timeout: nobody failed yet
            continue
        if _state.failing:
            return  # this process is the one stopping the job
        failure = _state.peer_failure = json.loads(value)
        print(f"neoscale: error: process {failure['process']} of {_state.num_processes} failed "
              f"({failure['detail']}); stopping process {_state.process_id} too", file=sys.stderr,
              flush=True)
        exit_now(int(failure["code"]), _peer_exit_delay())


def _peer_exit_delay() -> float:
    """Process 0 hosts the coordination service: it leaves after the failing process."""
    return GRACE_SECONDS + 1.0 if _state.process_id == 0 else 0.0


def exit_now(code: int, delay: float = 0.0) -> NoReturn:
    """Flushes the standard streams, waits ``delay`` seconds, then ends the process without running
    exit handlers or interpreter teardown (jax's handler would wait at the shutdown barrier for
    processes that never come; after Ctrl-C, XLA's and grain's threads can crash or hang it)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream must not keep the process alive
            stream.flush()
    time.sleep(delay)
    os._exit(code)


def _stop_watching() -> None:
    """At a normal exit: ends the watcher before jax shuts its client down."""
    _state.exiting = True
    if _state.watcher is not None:
        _state.watcher.join(timeout=2 * _WATCH_TIMEOUT_MS / 1000)


def _shorten(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
