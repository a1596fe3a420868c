"""The forecast ledger (neoscale.runner.forecasts): forecasts appended, never rewritten, deduplicated;
a size forecast before it was trained is scored in fit.json and the report once it is."""

import json
import pathlib

import numpy as np
import pytest

from neoscale import plots
from neoscale.runner import config as runner_config
from neoscale.runner import forecasts
from neoscale.runner import study as study_lib
from neoscale.scaling.synthetic import synthetic_study

H = 6.2


def floored(compute):
    """A ladder whose loss tends to E = 2 (the M4 form)."""
    return 2.0 + 1.0 / (1.0 / (H - 2.0) + np.asarray(compute, np.float64) ** 0.3 / 2.5e4)


def _ladder(n_sizes: int):
    results, _ = synthetic_study(budgets=(), moe_experts=(1,), n_evals=1,
                                 moe_sizes=tuple(1e5 * 2.0 ** np.arange(n_sizes)), noise=0.0)
    noise = np.exp(0.002 * np.random.default_rng(0).standard_normal(len(results)))
    results["eval_loss"] = floored(results["flops"]) * noise
    return results


def _study_config():
    config = runner_config.base_config()
    config.fit.n_bootstrap, config.fit.context_free_loss = 30, H
    return config


def _finish(workdir) -> dict:
    failures: dict[str, str] = {}
    study_lib.finish_study(workdir, _study_config(), [], failures)
    assert not failures, failures
    return json.loads((workdir / study_lib.FIT_FILE).read_text())


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr(plots, "draw_study", lambda *args, **kwargs: [])


def test_a_size_forecast_before_training_is_scored_once_trained(tmp_path, no_plots):
    full = _ladder(7)
    largest = full[full["params_active"] == full["params_active"].max()].iloc[0]
    target = {"run": largest["run"], "size": largest["size"], "N": float(largest["params_active"]),
              "D": float(largest["tokens"]), "C": float(largest["flops"])}
    (tmp_path / "plan.json").write_text(json.dumps({"forecast_targets": [target]}))
    full[full["run"] != target["run"]].to_csv(tmp_path / "results.csv", index=False)

    fit = _finish(tmp_path)
    assert fit["forecasts_scored"] == []
    ledger = forecasts.read(tmp_path)
    named = [r for r in ledger if r["target"]["kind"] == "size"]
    assert {r["form"] for r in named} == {"pure", "floor", "power_law"}
    for r in named:
        assert r["target"]["C"] == pytest.approx(target["C"]) and r["target"]["N"] == target["N"]
        assert target["run"] not in r["inputs"]["runs"] and len(r["inputs"]["hash"]) == 16
        assert r["commit"] != "" and r["time_utc"].endswith("+00:00")
        assert r["interval"][0] < r["loss"] < r["interval"][1]
    assert sum(r["read"] for r in named) == 1  # the form the report told its reader to use
    read = next(r for r in named if r["read"])
    assert (f"- {read['form']}: forecast for size {target['size']} (N = {target['N']:.3g}"
            in (tmp_path / "report.md").read_text())
    text = (tmp_path / forecasts.LEDGER_FILE).read_text()

    _finish(tmp_path)  # an unchanged refit makes the same forecasts: nothing appended
    assert (tmp_path / forecasts.LEDGER_FILE).read_text() == text

    full.to_csv(tmp_path / "results.csv", index=False)  # the size is trained now
    fit = _finish(tmp_path)
    after = (tmp_path / forecasts.LEDGER_FILE).read_text()
    assert after.startswith(text) and len(after) > len(text)  # appended, never rewritten
    scored = [s for s in fit["forecasts_scored"] if s["target"]["kind"] == "size"]
    assert {s["form"] for s in scored} == {"pure", "floor", "power_law"}
    actual = float(largest["eval_loss"])
    for s in scored:
        assert s["actual"] == pytest.approx(actual) and s["scored_on"] == [target["run"]]
        assert s["signed_error"] == pytest.approx((s["loss"] - actual) / actual)
        assert s["inside"] == (s["interval"][0] <= actual <= s["interval"][1])
    # the pure law has no floor: on a floored ladder it is too optimistic; the floor form is not
    by_form = {s["form"]: s for s in scored}
    assert by_form["pure"]["signed_error"] < -0.02 and abs(by_form["floor"]["signed_error"]) < 0.01
    # forecasts made after the size was trained include it in their inputs: never scored
    assert all(target["run"] not in s.get("inputs", {}).get("runs", []) for s in scored)
    report = (tmp_path / "report.md").read_text()
    assert "### Forecasts scored" in report and "**Law to read: ladder_law" in report
    assert f"{100 * by_form['pure']['signed_error']:+.2f}%" in report
    # the trained size is no longer forecast
    assert not [r for r in forecasts.read(tmp_path)[len(ledger):] if r["target"]["kind"] == "size"]


def test_append_dedupes_by_law_form_target_and_inputs(tmp_path):
    record = {"law": "ladder_law", "form": "pure", "target": {"kind": "compute", "C": 1e15, "factor": 10},
              "inputs": {"runs": ["a"], "hash": "0" * 16}, "loss": 3.0, "interval": [2.9, 3.1]}
    assert forecasts.append(tmp_path, [record, dict(record)]) == 1
    assert forecasts.append(tmp_path, [record]) == 0
    other = {**record, "inputs": {"runs": ["a", "b"], "hash": "1" * 16}}
    assert forecasts.append(tmp_path, [other]) == 1
    (tmp_path / forecasts.LEDGER_FILE).open("a").write('{"cut off')  # a line a crash cut short
    assert [r["inputs"]["hash"] for r in forecasts.read(tmp_path)] == ["0" * 16, "1" * 16]


def test_score_matches_compute_within_tolerance_and_tokens_per_parameter():
    runs = _ladder(5)
    runs = runs[runs["final"]]
    row = runs.iloc[-1]
    ratio = float(row["tokens"] / row["params_active"])
    record = {"law": "ladder_law", "form": "pure", "loss": 2.0, "interval": [1.9, 2.1], "read": True,
              "commit": "abc", "time_utc": "2026-01-01T00:00:00+00:00", "tokens_per_param": ratio,
              "target": {"kind": "compute", "C": row["flops"] * 1.04, "factor": 10.0},
              "inputs": {"runs": list(runs["run"].iloc[:-1]), "hash": "x"}}
    (scored,) = forecasts.score([record], runs)
    assert scored["scored_on"] == [row["run"]] and scored["inside"] == (1.9 <= row["eval_loss"] <= 2.1)
    assert forecasts.score([{**record, "target": {**record["target"], "C": row["flops"] * 1.2}}], runs) == []
    assert forecasts.score([{**record, "tokens_per_param": 2 * ratio}], runs) == []
    assert forecasts.score([{**record, "inputs": {"runs": list(runs["run"]), "hash": "y"}}], runs) == []


def _ladder_study(workdir, sizes=("w32d2h2", "w48d2h2")):
    """plan.json of a tiny one-ratio ladder, as run_study writes it (config, plan)."""
    import importlib.util

    from neoscale.files import to_json
    from neoscale.runner import plan as plan_lib

    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "cpu_demo.py"
    spec = importlib.util.spec_from_file_location("cpu_demo", path)  # experiments/ is no package
    cpu_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu_demo)
    config = cpu_demo.get_config()
    config.data.seq_len = 32
    plan = plan_lib.make_plan(list(sizes), plan_lib.parse_budget(tokens_per_param=6), vocab_size=512,
                              seq_len=32, train=config.train, model_overrides=dict(config.model))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "plan.json").write_text(to_json({"study": config.to_dict(),
                                                "runs": [r.to_dict() for r in plan],
                                                "measured": {"context_free_loss": H}}, indent=1))
    return config, plan


def test_fit_forecast_sizes_plans_them_at_the_studys_tokens_per_parameter(tmp_path):
    from neoscale.runner import plan as plan_lib

    config, plan = _ladder_study(tmp_path)
    forecasts.record_targets(tmp_path, config, plan, ["w64d2h2"])
    (target,) = forecasts.load_targets(tmp_path)
    (expected,) = plan_lib.make_plan(["w64d2h2"], plan_lib.parse_budget(tokens_per_param=6),
                                     vocab_size=512, seq_len=32, train=config.train,
                                     model_overrides=dict(config.model))
    assert target == {"run": expected.name, "size": "w64d2h2", "N": expected.params_active,
                      "D": expected.tokens, "C": expected.flops}
    assert target["D"] / target["N"] == pytest.approx(6, rel=0.05)
    assert target["N"] > max(run.params_active for run in plan)


def _cli(module, *args):
    import subprocess
    import sys

    from subprocess_env import cpu_env

    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=300, env=cpu_env())


def test_forecast_sizes_bad_uses_are_one_line_errors(tmp_path):
    _ladder_study(tmp_path)
    refit = _cli("neoscale.fit", f"--workdir={tmp_path}", "--seed=3", "--forecast_sizes=w64d2h2")
    assert refit.returncode == 2 and refit.stderr.strip().splitlines()[-1].startswith(
        "neoscale.fit: error: --forecast_sizes writes the study's forecast ledger")
    assert not (tmp_path / forecasts.LEDGER_FILE).exists()
    both = _cli("neoscale.run", "--sizes=w32d2h2,w48d2h2", "--forecast_sizes=w48d2h2", "--dry_run",
                f"--workdir={tmp_path / 'run'}")
    assert both.returncode == 2 and "--forecast_sizes w48d2h2 are also in --sizes" in both.stderr
    assert "Traceback" not in both.stderr + refit.stderr
