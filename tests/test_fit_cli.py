"""python -m neoscale.fit: refit and redraw from a workdir or any CSV; bad input is one line."""

import json
import pathlib
import subprocess
import sys

import pytest

from neoscale.scaling.synthetic import synthetic_study, write_workdir

DATA = pathlib.Path(__file__).parent / "data" / "chinchilla_fig4_epoch_extracted.csv"


def run_fit(*args):
    return subprocess.run([sys.executable, "-m", "neoscale.fit", *args], capture_output=True,
                          text=True, timeout=300)


def test_refits_and_redraws_a_workdir(tmp_path):
    results, curves = synthetic_study(budgets=(1e16, 1e17), sizes_per_budget=4, moe_experts=())
    write_workdir(tmp_path, results, curves)
    done = run_fit(f"--workdir={tmp_path}", "--n_bootstrap=5")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["laws"]["isoflop_approach2"] == "fitted"
    assert summary["laws"]["envelope_approach1"] == "fitted"
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["n_bootstrap"] == 5
    # 4 sizes per budget: no IsoFLOP interval, and fit.json says why.
    iso = fit["laws"]["isoflop_approach2"]
    assert iso["intervals"] is None and "only 4 distinct sizes at most" in iso["interval_note"]
    assert iso["bootstrap"]["requested"] == 5
    assert (tmp_path / "plots" / "isoflop.svg").is_file()
    assert (tmp_path / "plots" / "loss_vs_compute.png").is_file()


def test_fits_any_csv_with_named_columns(tmp_path):
    results, _ = synthetic_study(budgets=(1e16, 1e17), sizes_per_budget=4, moe_experts=())
    final = results[results.final]
    table = final.rename(columns={"params_active": "Model Size", "tokens": "Tokens",
                                  "eval_loss": "Loss", "budget_flops": "Budget"})
    path = tmp_path / "published.csv"
    table[["Model Size", "Tokens", "Loss", "Budget"]].to_csv(path, index=False)
    done = run_fit(f"--results={path}", "--params_column=Model Size", "--tokens_column=Tokens",
                   "--loss_column=Loss", "--budget_column=Budget", "--n_bootstrap=0",
                   "--noplots")
    assert done.returncode == 0, done.stderr
    fit = json.loads((tmp_path / "fit.json").read_text())  # next to the CSV by default
    assert fit["laws"]["chinchilla_approach3"]["points"] == len(final)
    assert fit["laws"]["isoflop_approach2"]["status"] == "fitted"
    assert fit["laws"]["isoflop_approach2"]["budgets"] == [1e16, 1e17]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workdir=/nonexistent/study"], "no results table"),
        ([], "exactly one of --workdir"),
        ([f"--results={DATA}", "--params_column=params", "--flops_column=Training FLOP",
          "--loss_column=loss"], "'params' is not a column"),
        ([f"--results={DATA}", "--params_column=Model Size", "--loss_column=loss"],
         "--tokens_column or --flops_column"),
    ],
)
def test_bad_input_is_one_line_on_stderr(args, message):
    done = run_fit(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert lines[0].startswith("neoscale.fit: error: ")
    assert "Traceback" not in done.stderr


def test_integer_columns_fit_without_wrapping_and_dropped_rows_are_printed(tmp_path):
    # Parameters and tokens as integers (as published tables have them): 6·N·D reaches 1e21,
    # far past int64's 9.2e18.
    import numpy as np
    import pandas as pd

    from neoscale.scaling.synthetic import law_loss

    n = np.repeat(np.array([400_000_000, 1_000_000_000, 2_000_000_000, 4_000_000_000], np.int64), 3)
    d = np.tile(np.array([5_000_000_000, 20_000_000_000, 80_000_000_000], np.int64), 4)
    loss = law_loss(n.astype(float), d.astype(float))
    table = pd.DataFrame({"N": n, "D": d, "loss": loss})
    table.loc[len(table)] = [3_000_000_000, 10_000_000_000, -1.0]  # a broken row
    path = tmp_path / "ints.csv"
    table.to_csv(path, index=False)
    assert pd.read_csv(path)["N"].dtype == np.int64
    done = run_fit(f"--results={path}", "--params_column=N", "--tokens_column=D", "--loss_column=loss",
                   "--n_bootstrap=0", "--noplots")
    assert done.returncode == 0, done.stderr
    assert "dropped row12: missing, non-positive" in done.stderr
    fit = json.loads((tmp_path / "fit.json").read_text())
    law = fit["laws"]["chinchilla_approach3"]
    assert law["points"] == 12
    assert law["constants"]["alpha"] == pytest.approx(0.34, abs=1e-3)
    assert fit["laws"]["loss_vs_compute"]["frontier"]["compute"][-1] > 1e21


def two_source_table(path):
    """15 runs of each of two laws (B's A is 1.5x A's), in one table with a source column."""
    import numpy as np
    import pandas as pd

    from neoscale.scaling.synthetic import TRUE_LAW, law_loss

    rng = np.random.default_rng(0)
    rows = []
    for source, law in (("a", TRUE_LAW), ("b", {**TRUE_LAW, "A": 600.0})):
        for n in (1e7, 3e7, 1e8, 3e8, 1e9):
            for tokens_per_param in (5, 20, 80):
                d = n * tokens_per_param
                loss = float(law_loss(n, d, law=law) * np.exp(0.005 * rng.standard_normal()))
                rows.append({"source": source, "N": n, "D": d, "forward_flops": 2 * n * d, "loss": loss})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_where_group_by_and_squared_error(tmp_path):
    path = two_source_table(tmp_path / "two.csv")
    common = [f"--results={path}", "--params_column=N", "--tokens_column=D", "--loss_column=loss",
              "--n_bootstrap=0", "--noplots"]
    done = run_fit(*common, "--group_by=source", f"--out_dir={tmp_path / 'groups'}")
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["groups"]) == ["a", "b"]
    fits = {g: json.loads((tmp_path / "groups" / g / "fit.json").read_text()) for g in "ab"}
    a_const, b_const = (fits[g]["laws"]["chinchilla_approach3"]["constants"] for g in "ab")
    assert fits["a"]["laws"]["chinchilla_approach3"]["points"] == 15
    # One table fitted as one law would blur them; per group, each law's own N-term comes back.
    assert b_const["A"] / b_const["alpha"] > a_const["A"] / a_const["alpha"]
    done = run_fit(*common, "--where=source == 'a'", "--loss=mse", f"--out_dir={tmp_path / 'mse'}")
    assert done.returncode == 0, done.stderr
    mse = json.loads((tmp_path / "mse" / "fit.json").read_text())
    assert mse["objective"] == {"loss": "mse", "delta": None, "on": "log-loss residuals"}
    assert fits["a"]["objective"]["delta"] == 1e-3
    law = mse["laws"]["chinchilla_approach3"]
    assert law["points"] == 15 and law["constants"] != a_const
    assert law["constants"]["alpha"] == pytest.approx(a_const["alpha"], abs=0.05)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--flops_column=forward_flops"], "looks like forward-only FLOPs (2·N·D)"),
        (["--vocab_size=20"], "exceeds ln(20) = 3, the loss of a uniform guess in nats"),
        (["--where=sauce == 'a'"], "is not a query on columns"),
        (["--where=source == 'c'"], "selects no rows"),
        (["--group_by=kind"], "--group_by='kind' is not a column"),
        (["--pin_E=-1"], "--pin_E must be a positive loss in nats"),
        (["--pin_E=50"], "the pinned E = 50 must be positive and below every loss"),
    ],
)
def test_unit_mistakes_and_bad_selections_are_one_line(tmp_path, args, message):
    path = two_source_table(tmp_path / "two.csv")
    done = run_fit(f"--results={path}", "--params_column=N", "--tokens_column=D", "--loss_column=loss",
                   "--noplots", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_many_rejected_resamples_print_a_hint(tmp_path):
    import pandas as pd

    path = two_source_table(tmp_path / "two.csv")
    table = pd.read_csv(path)
    # 3 sizes x 3 token counts: most resamples miss a size or a token count.
    table[(table.source == "a") & table.N.isin([1e7, 1e8, 1e9])].to_csv(path, index=False)
    done = run_fit(f"--results={path}", "--params_column=N", "--tokens_column=D", "--loss_column=loss",
                   "--n_bootstrap=60", "--noplots")
    assert done.returncode == 0, done.stderr
    fit = json.loads((tmp_path / "fit.json").read_text())
    counts = fit["laws"]["chinchilla_approach3"]["bootstrap"]
    assert counts["rejected_not_overdetermined"] > 15
    assert "hint: chinchilla_approach3 rejected" in done.stderr
    assert "--n_bootstrap=" in done.stderr


def test_pin_E_fixes_the_asymptote_of_a_csv_fit(tmp_path):
    path = two_source_table(tmp_path / "two.csv")
    done = run_fit(f"--results={path}", "--params_column=N", "--tokens_column=D", "--loss_column=loss",
                   "--where=source == 'a'", "--n_bootstrap=10", "--noplots", "--pin_E=1.5")
    assert done.returncode == 0, done.stderr
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["pinned_E"] == 1.5
    assert fit["laws"]["chinchilla_approach3"]["constants"]["E"] == 1.5
    assert fit["laws"]["loss_vs_compute"]["constants"]["E"] == 1.5
