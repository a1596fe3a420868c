"""benchmarks/confound_ladder.py's plan: the demo's ladder at equal steps (its --dry_run)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dry_run_scales_the_batch_so_the_smallest_trains_the_most_steps(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "confound_ladder.py"),
         f"--workdir={tmp_path}", "--dry_run"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("w")]
    assert [row[0] for row in rows] == ["w32d4h1", "w48d4h2", "w64d4h2", "w96d4h3", "w128d4h4"]
    batches, steps = [int(row[1]) for row in rows], [int(row[2]) for row in rows]
    assert batches == [1, 2, 3, 6, 9]  # the demo trains all at 8: 176 to 1,568 steps
    assert steps[0] == 1408 and steps[0] >= max(steps) and min(steps) >= 1200
    assert not list(tmp_path.iterdir())  # a dry run trains and writes nothing
