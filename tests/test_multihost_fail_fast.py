"""neoscale.multihost: when one process of a two-process job fails, both stop promptly.

Two real processes (gloo CPU collectives): process 1 fails while process 0 waits in a collective
that process 1 never joins. Without fail_fast, process 0 waits there and process 1 at jax's
shutdown barrier until the heartbeat timeout (100 s) ends both with a C++ abort.
"""

import subprocess
import sys

import pytest
from subprocess_env import cpu_env
from test_multihost import _free_port

WORKER = """
import sys
from neoscale import multihost

@multihost.fail_fast
def main(mode, process_id, port):
    multihost.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    import numpy as np
    from jax.experimental import multihost_utils

    multihost_utils.process_allgather(np.arange(2))  # both processes reach this collective
    if process_id == 1 and mode == "raise":
        raise RuntimeError("bad shard on host 1")
    if process_id == 1 and mode == "exit":
        print("error: bad input on host 1", file=sys.stderr)
        sys.exit(2)  # what the CLIs do with a ValueError
    if process_id == 1 and mode == "return":
        return 2  # an exit status returned, as by neoscale.prepare's main
    total = multihost_utils.process_allgather(np.arange(3)).sum()  # process 1 joins only if ok
    print(f"process {process_id} total {total}")

sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""

BOUND_SECONDS = 60  # far below the 100 s heartbeat timeout and the 300 s shutdown barrier


def run_pair(mode: str) -> list[tuple[int, str, str]]:
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, mode, str(i), str(port)],
                              env=cpu_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=BOUND_SECONDS) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"mode {mode}: the processes were still running after {BOUND_SECONDS} s")
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]


@pytest.mark.slow
def test_an_exception_on_one_process_stops_both():
    (code0, out0, err0), (code1, _, err1) = run_pair("raise")
    assert code1 == 1, err1[-2000:]
    assert "RuntimeError: bad shard on host 1" in err1  # its traceback
    assert code0 == 1, err0[-2000:]
    assert ("process 1 of 2 failed (RuntimeError: bad shard on host 1); stopping process 0 too"
            in err0), err0[-2000:]
    assert "total" not in out0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exit", "return"])
def test_a_nonzero_exit_status_on_one_process_stops_both_with_it(mode):
    (code0, _, err0), (code1, _, err1) = run_pair(mode)
    assert code1 == 2 and "process 1 of 2 failed (exit status 2)" in err1, err1[-2000:]
    assert code0 == 2 and "process 1 of 2 failed (exit status 2); stopping process 0 too" in err0, \
        err0[-2000:]


@pytest.mark.slow
def test_a_run_that_succeeds_exits_cleanly_on_both():
    results = run_pair("ok")
    for i, (code, out, err) in enumerate(results):
        assert code == 0, err[-2000:]
        assert out.splitlines()[-1] == f"process {i} total 6"  # 2 processes x arange(3): 2 * 3


@pytest.mark.slow
def test_train_cli_with_bad_data_on_one_host_stops_both(tmp_path):
    """python -m neoscale.train --distributed: host 1's data glob matches nothing."""
    port = _free_port()
    common = ["--size=w32d2h2", "--batch_size=8", "--seq_len=16", "--steps=4", "--distributed",
              f"--coordinator=127.0.0.1:{port}", "--num_processes=2", f"--workdir={tmp_path}",
              '--model_overrides={"max_positions": 16}']
    data = [["--data=synthetic", "--vocab_size=64"], [f"--data=text:{tmp_path}/missing/*.txt"]]
    procs = [subprocess.Popen([sys.executable, "-m", "neoscale.train", *common, *data[i],
                               f"--process_id={i}"], env=cpu_env(device_count=2),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        (_, err0), (_, err1) = [p.communicate(timeout=BOUND_SECONDS) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the processes were still running after {BOUND_SECONDS} s")
    assert procs[1].returncode == 1 and "no files match --data=text:" in err1, err1[-2000:]
    assert procs[0].returncode == 1, err0[-2000:]
    assert "process 1 of 2 failed (exit status 1); stopping process 0 too" in err0, err0[-2000:]
