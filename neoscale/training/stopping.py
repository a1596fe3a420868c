"""Stopping a run cleanly: SIGTERM (a preemption notice) or Ctrl-C.

Inside ``stop_signals()`` neither signal raises: SIGTERM or a first Ctrl-C sets a ``StopSignal``
that the training loop reads after every step, then it saves a checkpoint and raises
``Preempted`` (or ``Interrupted`` for Ctrl-C); a second Ctrl-C raises ``KeyboardInterrupt`` at
once. A ``KeyboardInterrupt`` raised in the middle of JAX can be swallowed by a garbage-collector
callback or turned into another error, so the first Ctrl-C only asks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; rerunning the same command resumes.
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class Preempted(RuntimeError):
    """The run saved a checkpoint and stopped on a preemption signal; rerun to resume."""

    exit_code = PREEMPTED_EXIT_CODE


class Interrupted(Preempted):
    """The run saved a checkpoint and stopped on Ctrl-C; rerun to resume."""

    exit_code = INTERRUPTED_EXIT_CODE


class StopSignal(threading.Event):
    """Set by SIGTERM or a first Ctrl-C; ``signum`` says which."""

    signum: int | None = None

    def error(self, where: str) -> Preempted:
        """What to raise once stopped ``where`` (e.g. "at step 40: checkpoint saved to ...")."""
        if self.signum == signal.SIGINT:
            return Interrupted(f"interrupted {where}; rerun the same command to resume")
        return Preempted(f"preempted {where}; rerun the same command to resume")


_active: StopSignal | None = None


@contextlib.contextmanager
def stop_signals() -> Iterator[StopSignal]:
    """Yields the StopSignal that SIGTERM and a first Ctrl-C set; the handlers before are restored
    on exit. Nested uses share the outermost one. In a multi-process job (JAX's preemption sync
    point owns SIGTERM; Ctrl-C on one host stops the job) or off the main thread it is never set.
    """
    global _active
    import jax

    if _active is not None:
        yield _active
        return
    stop = StopSignal()
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_sigterm(signum: int, frame) -> None:
        stop.signum = signum
        stop.set()

    def on_sigint(signum: int, frame) -> None:
        on_sigterm(signum, frame)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.write(2, b"\nCtrl-C: stopping after this step with a checkpoint "
                    b"(Ctrl-C again stops at once)\n")  # os.write: print is not reentrant

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm),
                signal.SIGINT: signal.signal(signal.SIGINT, on_sigint)}
    _active = stop
    try:
        yield stop
    finally:
        _active = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)
