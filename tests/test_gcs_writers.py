"""Writers on gs:// (a fake GCS that, like the real one, cannot append), through etils.epath."""

import json
import threading
import time

import pytest
from etils import epath
from fake_gcs import install

from neoscale import files
from neoscale.runner import results
from neoscale.training import metrics


@pytest.fixture
def gcs(monkeypatch):
    return install(monkeypatch)


def test_the_fake_is_reached_through_epath_and_cannot_append(gcs):
    path = epath.Path("gs://bucket/run/log.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("first\n")
    with path.open("a") as f:  # what gcsfs does with append: a new object
        f.write("second\n")
    assert path.read_text() == "second\n"
    assert gcs.cat("gs://bucket/run/log.txt") == b"second\n"  # the fake's own object


@pytest.mark.parametrize("flush_seconds", [0.0, 3600.0])
def test_metrics_on_gcs_keep_every_record(gcs, flush_seconds):
    run_dir = "gs://bucket/study/runs/a"
    writer = metrics.MetricsWriter(run_dir, tensorboard=False, flush_seconds=flush_seconds)
    for step in range(1, 6):
        writer.write(step, {"loss": 10.0 - step, "eval_loss": 9.5 if step == 5 else None})
    writer.close()
    records = metrics.read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in records] == [9.0, 8.0, 7.0, 6.0, 5.0]
    assert records[-1]["eval_loss"] == 9.5 and "eval_loss" not in records[0]


def test_metrics_on_gcs_hold_back_only_until_flush_and_never_evaluations(gcs):
    run_dir = "gs://bucket/run"
    writer = metrics.MetricsWriter(run_dir, tensorboard=False, flush_seconds=3600.0)
    writer.write(1, {"loss": 3.0})  # the first write flushes (nothing was written yet)
    writer.write(2, {"loss": 2.5})  # held back: within flush_seconds
    writer.sync()  # (the background writer has handled both)
    assert [r["step"] for r in metrics.read_metrics(run_dir)] == [1]
    writer.write(3, {"loss": 2.0, "eval_loss": 2.2})  # an evaluation: written at once, with step 2
    writer.sync()
    assert [r["step"] for r in metrics.read_metrics(run_dir)] == [1, 2, 3]
    writer.write(4, {"loss": 1.9})
    writer.flush()
    writer.sync()
    assert [r["step"] for r in metrics.read_metrics(run_dir)] == [1, 2, 3, 4]
    writer.close()


def test_metrics_on_gcs_are_uploaded_off_the_training_thread(gcs, monkeypatch):
    """Each upload takes 0.2 s; 50 logged steps (one evaluation) return at once, the object is
    written a few times (not once per step) by the writer thread, and close loses nothing."""
    uploads, training_thread = [], threading.current_thread()
    original = type(gcs)._open

    def slow_open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            uploads.append(threading.current_thread())
            time.sleep(0.2)
        return original(self, path, mode, **kwargs)

    monkeypatch.setattr(type(gcs), "_open", slow_open)
    run_dir = "gs://bucket/run"
    writer = metrics.MetricsWriter(run_dir, tensorboard=False, flush_seconds=3600.0)
    start = time.perf_counter()
    for step in range(1, 51):
        writer.write(step, {"loss": 1.0 / step, "eval_loss": 2.0 if step == 25 else None})
    assert time.perf_counter() - start < 0.2  # not one upload's time
    writer.close()
    assert 1 <= len(uploads) <= 4  # first write, the evaluation, close (not 50)
    assert training_thread not in uploads
    assert [r["step"] for r in metrics.read_metrics(run_dir)] == list(range(1, 51))


def test_a_failed_upload_is_raised_on_the_training_thread(gcs, monkeypatch):
    def broken_open(self, path, mode="rb", **kwargs):
        raise OSError("bucket gone")

    monkeypatch.setattr(type(gcs), "_open", broken_open)
    writer = metrics.MetricsWriter("gs://bucket/run", tensorboard=False)
    writer.write(1, {"loss": 1.0})
    with pytest.raises(RuntimeError, match="writing metrics to gs://bucket/run/metrics.jsonl failed"):
        writer.close()


def test_resumed_metrics_on_gcs_drop_records_past_the_checkpoint_and_append(gcs):
    run_dir = "gs://bucket/run"
    first = metrics.MetricsWriter(run_dir, tensorboard=False)
    for step in range(1, 7):
        first.write(step, {"loss": float(step)})
    first.close()
    resumed = metrics.MetricsWriter(run_dir, tensorboard=False)  # a new process, same run
    resumed.truncate_after(4)  # the checkpoint it restores is step 4
    for step in (5, 6, 7):
        resumed.write(step, {"loss": step + 0.5})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in metrics.read_metrics(run_dir)] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.5), (6, 6.5), (7, 7.5)]


def test_local_metrics_are_appended_line_by_line(tmp_path):
    writer = metrics.MetricsWriter(tmp_path, tensorboard=False, flush_seconds=3600.0)
    writer.write(1, {"loss": 3.0})
    writer.write(2, {"loss": 2.5})  # a local file is appended to at once, whatever flush_seconds
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
            ] == [1, 2]
    writer.close()


def test_atomic_writes_and_results_csv_on_gcs(gcs):
    workdir = epath.Path("gs://bucket/study")
    files.write_atomic(workdir / "config.json", '{"a": 1}')
    files.write_atomic(workdir / "config.json", '{"a": 2}')  # overwrites
    assert json.loads((workdir / "config.json").read_text()) == {"a": 2}
    row = {"run": "r", "size": "w32d2h2", "step": 4, "tokens": 512, "flops": 1e9, "eval_loss": 3.25,
           "status": "done", "final": True}
    results.write_results(workdir, [row])
    results.write_results(workdir, [row, dict(row, run="s", eval_loss=3.5)])
    frame = results.read_results(workdir)
    assert list(frame["run"]) == ["r", "s"] and list(frame["eval_loss"]) == [3.25, 3.5]
    assert sorted(p.name for p in workdir.iterdir()) == ["config.json", "results.csv"]  # no tmp left


def test_fit_cli_refits_a_study_on_gcs(gcs, tmp_path, capsys):
    """python -m neoscale.fit --workdir=gs://...: reads and writes the bucket (not a local gs: dir)."""
    from neoscale import fit
    from neoscale.scaling.synthetic import synthetic_study, write_workdir

    table, curves = synthetic_study(budgets=(1e16, 1e17), sizes_per_budget=4, moe_experts=())
    write_workdir(tmp_path, table, curves)
    bucket = epath.Path("gs://bucket/study")
    for local in tmp_path.rglob("*"):
        if local.is_file():
            remote = bucket / local.relative_to(tmp_path).as_posix()
            remote.parent.mkdir(parents=True, exist_ok=True)
            remote.write_text(local.read_text())
    fit.FLAGS(["neoscale.fit", f"--workdir={bucket}", "--n_bootstrap=5"])
    try:
        fit.main(["neoscale.fit"])
    finally:
        fit.FLAGS.unparse_flags()
    summary = json.loads(capsys.readouterr().out)
    assert summary["fit"] == "gs://bucket/study/fit.json"
    assert json.loads((bucket / "fit.json").read_text())["n_bootstrap"] == 5
    assert (bucket / "plots" / "loss_vs_compute.png").is_file()
    assert not epath.Path("gs:").exists()  # nothing written to a local directory named gs:
