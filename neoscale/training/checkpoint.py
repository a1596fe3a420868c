"""Checkpoints with orbax: asynchronous, every N steps, every M minutes and at the end, keeping
the last K.

One checkpoint (``RUN/checkpoints/STEP/``) holds three items:

* ``state``: the TrainState (written collectively by every process, each its own shards);
* ``run``: JSON with the run's configuration, progress counters and ``data_position``: the data
  iterator's state, the global batches consumed (written by process 0).

Every process's iterator walks the same sequence of global batches and takes its own rows of
each, so the position is one number for all of them: a checkpoint restores onto any process
count, which then reads the same global batches in the same order, split into other rows.
(Checkpoints written before kept a ``data`` item per process, grain's handler; they restore
onto the same process count only.)

orbax writes a checkpoint into a temporary directory and renames it when complete, so a run
killed at any moment, even mid-save, finds only complete checkpoints on restart. A complete
checkpoint damaged later (a disk error, a file deleted or truncated by hand) is skipped by
``restore_newest_intact``: it is moved aside to ``damaged-STEP`` and the one before it restored.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import grain.checkpoint
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from neoscale.training.metrics import is_object_store
from neoscale.training.state import TrainState

DATA_POSITION = "data_position"  # the run JSON's entry for the data iterator's state


class DiskFullError(RuntimeError):
    """The disk filled while a checkpoint was written; the complete checkpoints are kept."""


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC, raised directly or reported by tensorstore (as RESOURCE_EXHAUSTED ... os_error_code
    28) from orbax's writer threads."""
    for link in (error, error.__cause__, error.__context__):
        if link is None:
            continue
        if getattr(link, "errno", None) == errno.ENOSPC:
            return True
        if "No space left on device" in str(link) or "os_error_code='28'" in str(link):
            return True
    return False


class _QuietDiskFull(logging.Filter):
    """Drops orbax's error logs of a full disk (one traceback per writer thread, ~30 per
    checkpoint): the Checkpointer raises one DiskFullError that says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        error = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        disk_full = (error is not None and is_disk_full(error)) or (
            "No space left on device" in text or "os_error_code='28'" in text)
        return not disk_full


_QUIET_DISK_FULL = _QuietDiskFull()


def absolute(directory: str | epath.Path) -> epath.Path:
    """The directory as orbax needs it: a relative local path (``python -m neoscale.run``'s default
    workdir, ``neoscale_runs/<study>``) made absolute; ``gs://`` and other URLs are left alone."""
    path = epath.Path(directory)
    return path if is_object_store(directory) else epath.Path(os.path.abspath(os.fspath(path)))


class Checkpointer:
    """A thin wrapper over ``ocp.CheckpointManager`` for this project's three items."""

    def __init__(self, directory: str | epath.Path, *, save_every: int, keep: int,
                 keep_period: int | None = None, async_save: bool = True,
                 read_only: bool = False, save_minutes: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if save_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {save_every}")
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
        options = ocp.CheckpointManagerOptions(  # read-only: what orbax would force, unwarned
            max_to_keep=None if read_only else keep, save_interval_steps=0 if read_only else 1,
            keep_period=keep_period, enable_async_checkpointing=async_save, create=not read_only,
            read_only=read_only)
        self.directory = absolute(directory)
        self.save_every = save_every
        self.save_minutes = save_minutes
        self._clock = clock
        self._last_save = clock()
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        logging.getLogger("absl").addFilter(_QUIET_DISK_FULL)  # once: filters are a set

    @contextlib.contextmanager
    def _disk_full_as_one_line(self):
        """Turns a full disk, however orbax reports it, into one DiskFullError naming what is
        kept (orbax writes into a temporary directory: the complete checkpoints are intact)."""
        try:
            yield
        except Exception as error:
            if not is_disk_full(error):
                raise
            kept = sorted(self.manager.all_steps())
            raise DiskFullError(
                f"disk full while writing a checkpoint to {self.directory} (No space left on "
                f"device); the complete checkpoints are kept ({', '.join(map(str, kept)) or 'none'}"
                "): free space (or lower --keep_checkpoints) and rerun to resume") from None

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def due(self, step: int, *, check_clock: bool = True) -> bool:
        """Whether step is a checkpoint step: a multiple of save_every, or (when ``check_clock``)
        save_minutes or more since the last save started. Every process must call it alike (with
        the same check_clock): process 0's clock decides for all, so that they save together."""
        if step % self.save_every == 0:
            return True
        if self.save_minutes is None or not check_clock:
            return False
        due = self._clock() - self._last_save >= 60 * self.save_minutes
        if jax.process_count() > 1:
            due = bool(multihost_utils.broadcast_one_to_all(np.bool_(due)))
        return due

    def save(self, step: int, state: TrainState, data_iterator: Any, run: dict,
             force: bool = False) -> bool:
        """Starts saving (asynchronously) if ``step`` is a multiple of save_every or ``force``."""
        if not force and step % self.save_every:
            return False
        self._last_save = self._clock()
        run = {**run, DATA_POSITION: data_iterator.get_state()}
        with self._disk_full_as_one_line():  # also an earlier asynchronous save's
            return self.manager.save(step, force=True, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(run)))

    def restore(self, step: int, target: TrainState,
                data_iterator: Any | None = None) -> tuple[TrainState, dict]:
        """Restores onto ``target``'s shardings (any mesh): (state, run JSON).

        target: TrainState of jax.ShapeDtypeStruct with shardings (``state.abstract_state``).
        data_iterator: set to the saved position (in place) when given.
        """
        items = {"state": ocp.args.StandardRestore(target), "run": ocp.args.JsonRestore()}
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        run = dict(restored["run"])
        position = run.pop(DATA_POSITION, None)
        if data_iterator is not None and position is not None:
            data_iterator.set_state(position)
        elif data_iterator is not None:  # an older checkpoint: grain's per-process files
            self.manager.restore(step, args=ocp.args.Composite(
                data=grain.checkpoint.CheckpointRestore(data_iterator)))
        return restored["state"], run

    def restore_newest_intact(self, target: TrainState, data_iterator: Any | None = None,
                              ) -> tuple[int, TrainState, dict] | None:
        """(step, state, run JSON) of the newest checkpoint that restores, or None when there is
        none. When a newer one fails (damaged files), each newer one is moved aside to
        ``damaged-STEP`` (a resumed run saves those steps again) with a warning; when none
        restores, nothing is moved and a one-line ValueError names the directory."""
        steps = sorted(self.all_steps(), reverse=True)
        damaged: list[tuple[int, str]] = []
        for step in steps:
            try:
                state, run = self.restore(step, target, data_iterator)
            except Exception as error:  # noqa: BLE001 - any storage or format error: try older
                damaged.append((step, " ".join(str(error).split())[:300] or type(error).__name__))
                continue
            for bad_step, reason in damaged:
                self._set_aside(bad_step)
                print(f"warning: checkpoint {bad_step} in {self.directory} is damaged ({reason}); "
                      f"moved it to damaged-{bad_step} and resumed from step {step}",
                      file=sys.stderr, flush=True)
            return step, state, run
        if damaged:
            step, reason = damaged[0]
            raise ValueError(f"no checkpoint in {self.directory} restores (the newest, {step}: "
                             f"{reason}); delete {self.directory} to train the run from the start")
        return None

    def _set_aside(self, step: int) -> None:
        """Moves checkpoint ``step`` to ``damaged-STEP`` (process 0; every process then rereads
        the directory)."""
        if jax.process_index() == 0:
            source = self.directory / str(step)
            target = self.directory / f"damaged-{step}"
            if target.exists():
                target.rmtree()
            source.rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint set aside {step}")
        self.manager.reload()

    def restore_run(self, step: int) -> dict:
        """Only the run JSON of checkpoint ``step``."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            run=ocp.args.JsonRestore()))
        return {k: v for k, v in restored["run"].items() if k != DATA_POSITION}

    def reached_preemption(self, step: int) -> bool:
        """JAX's preemption sync point (multi-process runs after jax.distributed.initialize)."""
        if jax.process_count() == 1:
            return False
        return self.manager.reached_preemption(step)

    def wait(self) -> None:
        """Blocks until an asynchronous save has finished."""
        with self._disk_full_as_one_line():
            self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()
