"""Run outputs: metrics.jsonl, TensorBoard event files and a console progress line with ETA.

Only process 0 writes; on other processes every method is a no-op. Paths go through
``etils.epath`` so a gs:// run directory works when gcsfs (or TensorFlow) is installed. Object
stores (gs://, s3://) cannot append: there the writer keeps the file's lines and rewrites the whole
object, at most every ``flush_seconds`` (GCS takes about one write per second to one object) and
on ``close``; a local file is appended to line by line.

On an object store every write (metrics object, TensorBoard events) happens on a background
thread, so the training loop never waits for an upload while the other hosts wait for it at their
next collective; ``close`` (also on preemption: the loop closes its writer on the way out) drains
the queue and flushes, so nothing logged is lost.
"""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import threading
import time
from typing import Any

from etils import epath

from neoscale.files import CorruptFileError, jsonable, write_atomic

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_FLUSH, _STOP = object(), object()  # the background writer's orders


_WARNED_CUT_OFF: set[str] = set()  # metrics files whose cut-off last line was reported


def read_metrics(run_dir: str | epath.Path) -> list[dict]:
    """All records of a run's metrics.jsonl (empty if none yet).

    A cut-off last line (what a kill or power loss in the middle of a write leaves) is dropped
    with a warning (once per file; a resumed run rewrites the file without it); any other line
    that is not JSON raises CorruptFileError naming the file and line.
    """
    path = epath.Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except ValueError as error:
            if number < len(lines):
                raise CorruptFileError(
                    f"{path} line {number} is not JSON ({error}): the file was edited or damaged; "
                    "delete that line (the run's other records are kept)") from None
            if str(path) not in _WARNED_CUT_OFF:
                _WARNED_CUT_OFF.add(str(path))
                print(f"warning: {path}: dropped a cut-off last line (a write interrupted by a kill "
                      "or power loss)", file=sys.stderr, flush=True)
    return records


def is_object_store(path: str | epath.Path) -> bool:
    """True for gs://, s3:// and other URL paths: objects are written whole, never appended to."""
    return "://" in os.fspath(path)


class MetricsWriter:
    """Appends one JSON object per logged step; mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: str | epath.Path, *, enabled: bool = True,
                 tensorboard: bool = True, total_steps: int | None = None,
                 flush_seconds: float = 5.0, background: bool | None = None):
        self.enabled = enabled
        self.path = epath.Path(run_dir) / METRICS_FILE
        self.total_steps = total_steps
        self.flush_seconds = flush_seconds
        # Object stores only: every line of the file, rewritten whole by flush() (None: not read yet).
        self._lines: list[str] | None = None
        self._unflushed = False
        self._last_flush = -math.inf
        self._tb = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(epath.Path(run_dir) / TENSORBOARD_DIR))
        self._start = time.monotonic()
        self._start_step: int | None = None
        # Object stores: records go through a queue to one thread that does all their I/O.
        self._queue: queue.Queue | None = None
        self._error: BaseException | None = None
        if enabled and (is_object_store(self.path) if background is None else background):
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._drain, name="metrics-writer", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self._error is None:
                    self.flush_now() if item is _FLUSH else self._write_now(*item)
            except Exception as error:  # noqa: BLE001 - raised on the training thread, at sync()
                self._error = error
            finally:
                self._queue.task_done()

    def sync(self) -> None:
        """Waits until every record written so far has been handled (background writer only);
        raises what the writer thread raised."""
        if self._queue is not None:
            self._queue.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing metrics to {self.path} failed: {error}") from error

    def truncate_after(self, step: int) -> None:
        """Drops records past ``step`` (written after the checkpoint a resumed run starts from)."""
        if not self.enabled:
            return
        self.flush()
        self.sync()
        self._lines = None  # read again after the rewrite below
        if not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path.parent) if r.get("step", 0) <= step]
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """One record {"step": step, **metrics} (None values are dropped)."""
        if not self.enabled:
            return
        record = {"step": int(step)}
        record.update({k: jsonable(v) for k, v in metrics.items() if v is not None})
        if self._queue is not None:
            if self._error is not None:
                self.sync()  # raises the writer thread's error
            self._queue.put((step, record))
        else:
            self._write_now(step, record)

    def _write_now(self, step: int, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        if is_object_store(self.path):
            if self._lines is None:
                self._lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
            self._lines.append(line)
            self._unflushed = True
        else:
            with self.path.open("a") as f:
                f.write(line)
        if self._tb is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(name, value, step)
        if "eval_loss" in record or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush_now()  # evaluation records (the study's results) are never held back

    def flush(self) -> None:
        """Writes what ``write`` holds back (on the writer thread, if any, after the records
        queued before): the whole metrics object, TensorBoard's events."""
        if self._queue is not None:
            self._queue.put(_FLUSH)
        else:
            self.flush_now()

    def flush_now(self) -> None:
        if self._unflushed:
            self.path.write_text("".join(self._lines))  # an object appears whole when uploaded
            self._unflushed = False
        if self._tb is not None:
            self._tb.flush()
        self._last_flush = time.monotonic()

    def progress(self, step: int, metrics: dict[str, Any]) -> None:
        """A console line: step, loss, learning rate, throughput, MFU and ETA."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self._start_step is None:
            self._start, self._start_step = now, step
        parts = [f"step {step}" + (f"/{self.total_steps}" if self.total_steps else "")]
        for name, fmt in (("loss", "{:.4f}"), ("eval_loss", "{:.4f}"), ("learning_rate", "{:.2e}"),
                          ("grad_norm", "{:.3f}"), ("tokens_per_sec", "{:,.0f}"),
                          ("mfu", "{:.1%}")):
            if metrics.get(name) is not None:
                label = {"learning_rate": "lr", "tokens_per_sec": "tok/s"}.get(name, name)
                parts.append(f"{label} {fmt.format(float(metrics[name]))}")
        done = step - self._start_step
        if self.total_steps and done > 0:
            remaining = (now - self._start) / done * (self.total_steps - step)
            parts.append(f"eta {_duration(remaining)}")
        print(" | ".join(parts), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            self.flush()
        if self._queue is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._queue = None
            self.sync()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
