"""Ctrl-C and SIGTERM inside ``stop_signals``: the first asks the loop to stop, a second Ctrl-C
raises at once, and the handlers before are restored."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from subprocess_env import cpu_env

from neoscale.training import stopping

REPO = Path(__file__).resolve().parents[1]


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)  # Python runs the handler before the next bytecode


def test_first_ctrl_c_asks_second_raises_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stopping.stop_signals() as stop:
        assert not stop.is_set()
        _deliver(signal.SIGINT)
        assert stop.is_set() and stop.signum == signal.SIGINT
        error = stop.error("at step 7: checkpoint saved to /ckpt")
        assert isinstance(error, stopping.Interrupted)
        assert str(error) == ("interrupted at step 7: checkpoint saved to /ckpt; rerun the same "
                              "command to resume")
        with pytest.raises(KeyboardInterrupt):
            _deliver(signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_sigterm_is_a_preemption_and_nested_uses_share_one_signal():
    with stopping.stop_signals() as outer:
        with stopping.stop_signals() as inner:
            assert inner is outer
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the inner kept it
        _deliver(signal.SIGTERM)
        assert outer.is_set()
        error = outer.error("before w64: the finished runs are kept")
        assert type(error) is stopping.Preempted
        assert str(error).startswith("preempted before w64")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_ctrl_c_outside_training_exits_130_in_one_line():
    """KeyboardInterrupt that reaches ``neoscale.run`` (data preparation, the fit, a second Ctrl-C):
    one line and 130, without the interpreter teardown that XLA's threads can crash."""
    script = ("import sys; from neoscale import run\n"
              "def main(argv): raise KeyboardInterrupt\n"
              "run.main = main; sys.argv = ['neoscale.run']; run.entrypoint()\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=cpu_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == stopping.INTERRUPTED_EXIT_CODE, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "neoscale.run: interrupted; finished runs, checkpoints and results.csv are kept: rerun the "
        "same command to resume"]
