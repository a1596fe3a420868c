"""Coordinate checks: under μP (CompleteP) activations keep their size across width (depth) after a
few AdamW steps; under SP, or with a μP rule switched off, they do not. Small settings (the CLI's
defaults are bigger)."""

import json
import subprocess
import sys

import pytest

from neoscale import coord_check
from neoscale.model import parametrization

WIDTHS = (64, 128, 256, 512)
FLAT = 0.25  # |log-log slope| every quantity stays under for a correct parametrization (max seen: 0.05)
STEEP = 1.0  # the largest slope under SP / a broken rule exceeds this


def check(name: str, **changes) -> coord_check.CheckConfig:
    fields = dict(parametrization=name, widths=WIDTHS, depths=(2, 4, 8, 16), seq_len=32,
                  batch_size=4, window_size=8, steps=10, learning_rate=2e-2, seeds=(0,))
    return coord_check.CheckConfig(**{**fields, **changes})


def width_slopes(name: str) -> dict[str, float]:
    slopes = coord_check.width_sweep(check(name)).slopes()
    print(name, {k: round(v, 3) for k, v in slopes.items()})
    return slopes


def test_activations_match_the_model_and_include_every_layer():
    import jax.numpy as jnp
    import numpy as np

    config = coord_check.model_config(check("mup"), 128, 4)
    batch = coord_check.fixed_batch(check("mup"))
    model = coord_check.train(config, batch, steps=1, learning_rate=1e-2, seed=0)
    values = coord_check.activations(model, batch["inputs"])
    assert set(values) == {"embedding", "logits"} | {f"layer_{i}" for i in range(4)} | {
        f"attn_logits_{i}" for i in range(4)}
    logits, _ = model(batch["inputs"])
    np.testing.assert_allclose(values["logits"], float(jnp.abs(logits).mean()), rtol=1e-5)


@pytest.mark.slow
def test_mup_is_flat_in_width_and_sp_is_not():
    mup = width_slopes("mup")
    assert max(abs(s) for s in mup.values()) < FLAT, mup
    sp = width_slopes("sp")
    assert max(sp.values()) > STEEP, sp
    assert sp["layer_1"] > STEEP and sp["attn_logits_1"] > STEEP, sp


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["hidden_lr", "attention", "readout"])
def test_a_broken_mup_fails_the_check(broken, monkeypatch):
    """Each μP rule switched off in turn: the check must notice."""
    if broken == "hidden_lr":
        rule = parametrization.adam_rule
        monkeypatch.setattr(parametrization, "adam_rule",
                            lambda c, kind: (1.0, 1.0) if kind == "hidden" else rule(c, kind))
    elif broken == "attention":
        monkeypatch.setattr(parametrization, "attention_scale", lambda c: 1.0)
    else:
        monkeypatch.setattr(parametrization, "readout_multiplier", lambda c: 1.0)
    slopes = width_slopes("mup")
    assert max(abs(s) for s in slopes.values()) > FLAT, slopes


@pytest.mark.slow
def test_completep_is_flat_in_depth_and_mup_is_not():
    completep = coord_check.depth_sweep(check("completep")).slopes()
    print("completep", completep)
    assert max(abs(s) for s in completep.values()) < FLAT, completep
    mup = coord_check.depth_sweep(check("mup", base_depth=2)).slopes()
    print("mup", mup)
    assert mup["layer_last"] > 0.5, mup


def test_seeds_combine_by_geometric_mean_so_one_outlier_cannot_set_the_slope():
    """The slope of the combined values is the mean of the seeds' slopes: a seed 12x high at the
    widest size (as layer 1's attention logits after step 5 at lr 1e-2) tilts it by log2(12)/(3
    seeds x 2 octaves), where the arithmetic mean of two seeds made a flat quantity look steep."""
    import numpy as np

    sizes = (256, 512, 1024)
    flat = np.ones((3, 3, 2))  # [sizes, seeds, steps]
    flat[:, 1, :] = 2.0  # a seed with larger, still flat values
    outlier = flat.copy()
    outlier[2, 0, 1] = 12.0  # seed 0, widest size, last step
    sweep = coord_check.Sweep("width", sizes, {"flat": flat, "outlier": outlier})
    slopes = sweep.slopes()
    assert slopes["flat"] == pytest.approx(0.0, abs=1e-9)
    assert slopes["outlier"] == pytest.approx(np.mean(sweep.seed_slopes()["outlier"]))
    assert slopes["outlier"] == pytest.approx(np.log2(12) / 6, rel=1e-6)
    assert sweep.slopes(step=1)["outlier"] == pytest.approx(0.0, abs=1e-9)
    assert sweep.values_at(1)["flat"] == pytest.approx([2 ** (1 / 3)] * 3)
    arithmetic = coord_check.slope(sizes, outlier[:, :2, 1].mean(axis=1))  # the old combination
    assert arithmetic > 1.5 * slopes["outlier"]
    assert sweep.seed_spread() == {"flat": (2.0, 256), "outlier": (12.0, 1024)}  # the CLI warns above 2


def test_cli_writes_table_and_figure(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "neoscale.coord_check", "--parametrization=completep",
         f"--out_dir={tmp_path}", "--widths=32,64", "--depths=2,4", "--steps=1", "--seeds=1"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "slope against width" in result.stdout and "slope against depth" in result.stdout
    table = (tmp_path / "coord_check_completep.md").read_text()
    assert "| layer_last |" in table and "| logits |" in table
    assert (tmp_path / "coord_check_completep.png").stat().st_size > 1000
    assert "| t=1 |" in table  # the slopes after every step
    record = json.loads((tmp_path / "coord_check_completep.json").read_text())
    width = record["sweeps"][0]
    assert width["axis"] == "width" and width["sizes"] == [32, 64] and width["steps"] == [1]
    assert len(width["values"]["logits"]) == 2 and len(width["values"]["logits"][0]) == 1
    assert all(v > 0 for v in width["values"]["layer_1"][1][0])


def test_cli_bad_flag_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "neoscale.coord_check", "--widths=a,b",
                             f"--out_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--widths and --depths take comma-separated integers" in result.stderr


def test_library_import_leaves_other_clis_flags_alone():
    """Importing coord_check as a library defines no flags, so neoscale.fit's --out_dir (and the
    rest) can be parsed in the same process (a CI run once failed on the duplicate)."""
    code = ("from neoscale import coord_check, fit\n"
            "fit.FLAGS(['fit', '--workdir=/nonexistent', '--n_bootstrap=3'])\n"
            "print(fit.FLAGS.n_bootstrap)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "3"
