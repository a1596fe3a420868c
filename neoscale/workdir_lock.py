"""One writer per directory: a lock that a second ``neoscale.run``, ``neoscale.train`` or
``neoscale.fit`` on the same study or run directory meets with one line naming the holder.

    with workdir_lock.hold(workdir):
        ...  # the only process writing into workdir

The lock is the file ``DIR/.neoscale.lock`` holding the holder's host, pid, command and start
time. Two mechanisms, the ones users of orbax, grain and GCS already rely on:

* **Local (and NFS) directories: ``fcntl.flock``** on that file, as pip, conda, Hugging Face's
  ``filelock`` and JAX's compilation cache do. The kernel releases it when its process exits,
  however it exits (SIGKILL, power loss, OOM killer), so a stale lock cannot exist and needs no
  takeover: the next process simply gets it and overwrites the holder description.
* **Object stores (``gs://``, ``s3://``): an object created only if absent, with a lease.** An
  object store has no flock; what it has is a conditional create (fsspec's
  ``pipe_file(mode="create")``; gcsfs sends it as an upload with the precondition
  ``ifGenerationMatch=0``, which exactly one of several racing writers wins), the same primitive
  orbax's and tensorstore's GCS writers use for their commit markers. The holder rewrites the
  object's heartbeat every ``lease_seconds / 5`` on a background thread; a lock whose heartbeat is
  older than its lease (its machine was preempted or powered off), or whose process is gone on
  this host, is taken over: deleted and created again conditionally, so that of two processes
  taking over at once only one wins the create (left open: a taker that deletes the winner's
  fresh object in the milliseconds between its own staleness check and its delete; a
  generation-matched delete would close it, which fsspec does not expose). A holder whose object
  was taken over stops renewing it.

Only process 0 of a multi-process job takes a lock (the others write no study files).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

LOCK_FILE = ".neoscale.lock"
LEASE_SECONDS = 300.0  # object stores: a holder not heard from for this long is presumed dead
LOCKED_EXIT_CODE = 2


class WorkdirLocked(RuntimeError):
    """Another process holds the directory's lock (one line naming it; exit status 2)."""

    exit_code = LOCKED_EXIT_CODE


def is_object_store(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def running_command() -> str:
    """This process's command as a user typed it: "neoscale.run", "pytest", ..."""
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    parent, name = os.path.split(script)
    stem = os.path.splitext(name)[0]
    return f"neoscale.{stem}" if os.path.basename(parent) == "neoscale" else stem


def _holder(command: str, lease_seconds: float) -> dict[str, Any]:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "command": command,
            "since": datetime.datetime.fromtimestamp(now, datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
            "heartbeat": now, "lease_seconds": lease_seconds, "token": uuid.uuid4().hex}


def describe_holder(holder: dict[str, Any] | None) -> str:
    """"neoscale.run (host h, pid 12, since 2026-12-06T03:58:00Z)", or a placeholder."""
    if not holder:
        return "another process (it has not written its name yet)"
    return (f"{holder.get('command', 'another process')} (host {holder.get('host', '?')}, pid "
            f"{holder.get('pid', '?')}, since {holder.get('since', '?')})")


def _locked_error(directory: str, holder: dict | None, extra: str = "") -> WorkdirLocked:
    return WorkdirLocked(
        f"{directory} is in use by {describe_holder(holder)}{extra}: one writer per directory "
        "(two would mix their records); wait for it to finish or stop it, or use another "
        "--workdir")


def _parse(text: str) -> dict | None:
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def is_stale(holder: dict | None, now: float | None = None) -> bool:
    """An object-store lock to take over: unreadable, its process gone on this host, or its
    heartbeat older than its lease."""
    if holder is None:
        return True
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _process_alive(
            pid):
        return True
    now = time.time() if now is None else now
    try:
        return now - float(holder["heartbeat"]) > float(holder["lease_seconds"])
    except (KeyError, TypeError, ValueError):
        return True


@contextlib.contextmanager
def _hold_local(directory: str, command: str) -> Iterator[None]:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with open(path) as f:
                raise _locked_error(directory, _parse(f.read())) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder(command, 0.0)).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock; the file stays (deleting it would race a new holder)


@contextlib.contextmanager
def _hold_object(directory: str, command: str, lease_seconds: float) -> Iterator[None]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(directory)
    path = f"{root.rstrip('/')}/{LOCK_FILE}"
    holder = _holder(command, lease_seconds)

    def create() -> bool:
        try:
            fs.pipe_file(path, json.dumps(holder).encode(), mode="create")
            return True
        except FileExistsError:
            return False

    def current() -> dict | None:
        try:
            return _parse(fs.cat_file(path).decode())
        except FileNotFoundError:
            return {}

    if not create():
        found = current()
        if found and not is_stale(found):
            age = time.time() - float(found["heartbeat"])
            raise _locked_error(directory, found, f", heard from {age:.0f} s ago; its lease of "
                                f"{float(found['lease_seconds']):.0f} s expires unless renewed")
        with contextlib.suppress(FileNotFoundError):  # stale (or just released): take it over
            fs.rm_file(path)
        if not create():  # another process took it over first
            raise _locked_error(directory, current())
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease_seconds / 5):
            with contextlib.suppress(Exception):  # a missed beat is retried; the lease is 5 beats
                if (current() or {}).get("token") != holder["token"]:
                    return  # taken over (we were silent past the lease): leave it to the new holder
                holder["heartbeat"] = time.time()
                fs.pipe_file(path, json.dumps(holder).encode())

    thread = threading.Thread(target=beat, name="workdir-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):
            if (current() or {}).get("token") == holder["token"]:
                fs.rm_file(path)


@contextlib.contextmanager
def hold(directory: str | os.PathLike, *, command: str | None = None, enabled: bool = True,
         lease_seconds: float = LEASE_SECONDS) -> Iterator[None]:
    """Holds DIR's lock for the ``with`` block; raises WorkdirLocked (one line naming the holder)
    if another process holds it. ``command`` names this process in that line (default: the
    running ``neoscale.X`` module). ``enabled=False`` (processes other than 0) takes none."""
    if not enabled:
        yield
        return
    directory = os.fspath(directory)
    command = command or running_command()
    if is_object_store(directory):
        with _hold_object(directory, command, lease_seconds):
            yield
    else:
        with _hold_local(directory, command):
            yield


def read_holder(directory: str | os.PathLike) -> dict | None:
    """The holder description in DIR's lock file (None if there is none or it is unreadable); on
    a local directory it names the last holder, which may have exited."""
    directory = os.fspath(directory)
    try:
        if is_object_store(directory):
            import fsspec

            fs, root = fsspec.core.url_to_fs(directory)
            return _parse(fs.cat_file(f"{root.rstrip('/')}/{LOCK_FILE}").decode())
        with open(os.path.join(directory, LOCK_FILE)) as f:
            return _parse(f.read())
    except FileNotFoundError:
        return None
