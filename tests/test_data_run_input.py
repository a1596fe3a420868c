"""python -m neoscale.run with a bad data cache or an empty corpus: one line, exit 2, nothing written."""

import os
import subprocess
import sys

from subprocess_env import cpu_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neoscale.run", *flags], capture_output=True,
                          text=True, env=cpu_env(), timeout=180, cwd=REPO)


def test_a_cache_dir_that_is_a_file_and_an_empty_corpus_are_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    bad_cache = run(f"--workdir={tmp_path / 'study'}", f"--config.data.cache_dir={tmp_path / 'file'}")
    assert bad_cache.returncode == 2 and bad_cache.stderr.count("\n") == 1, bad_cache.stderr
    assert bad_cache.stderr.startswith(f"neoscale.run: error: --config.data.cache_dir={tmp_path / 'file'} "
                                       "cannot be a directory")
    (tmp_path / "blank.txt").write_text("\n  \n")
    empty = run("--dry_run", f"--data=text:{tmp_path}/*.txt", f"--workdir={tmp_path / 'study'}")
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1, empty.stderr
    assert "is empty (1 file(s), no non-blank documents)" in empty.stderr
    assert "training tokens" not in empty.stdout
    assert not (tmp_path / "study").exists()
