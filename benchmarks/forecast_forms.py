r"""The ladder entry's forms on Chinchilla's compute-loss frontier, the largest points held out:
which form the rule of neoscale/scaling/study/law_to_read.py reads, and each form's error on the
held-out points (issue 33 items 2 and 4; prints a table, not a test).

    python benchmarks/forecast_forms.py [--every=2] [--n_bootstrap=400]

Points: Epoch AI's extraction of Chinchilla's Figure 4 (tests/data/chinchilla_fig4_epoch_extracted.csv,
the 5 highest losses dropped), its compute-loss Pareto frontier, every --every-th point in compute
order; H = ln 32000 (Chinchilla's vocabulary: the loss of a uniform guess, an upper bound on the
context-free loss). Each point is its own "size" (the rollout walks compute). The rule is run on
the training points only (the held-out points are never seen), then every form predicts them.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from neoscale.scaling import ladder_law  # noqa: E402
from neoscale.scaling.points import pareto_frontier  # noqa: E402
from neoscale.scaling.study import ladder, law_to_read  # noqa: E402
from neoscale.scaling.study.backtest import rollout  # noqa: E402
from neoscale.scaling.study.entries import prediction_interval  # noqa: E402

DATA = os.path.join(REPO, "tests", "data", "chinchilla_fig4_epoch_extracted.csv")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--n_bootstrap", type=int, default=400)
    args = parser.parse_args()
    raw = pd.read_csv(DATA).sort_values("loss").iloc[:-5]
    c, loss = raw["Training FLOP"].to_numpy(), raw["loss"].to_numpy()
    front = pareto_frontier(c, loss)
    points = pd.DataFrame({"run": [f"r{i}" for i in range(front.sum())], "flops": c[front],
                           "eval_loss": loss[front]}).sort_values("flops").iloc[::args.every]
    points["params_active"] = points["tokens"] = points["flops"]
    h = float(np.log(32000))
    print(f"{len(points)} frontier points, H = ln 32000 = {h:.4f}")
    print("| held out | C / largest fitted | form | read? | regime | predicted vs measured | 95% PI | "
          "inside |")
    print("|---|---|---|---|---|---|---|---|")
    for held in (1, 2):
        train, test = points.iloc[:-held], points.iloc[-held:]
        law = ladder.forms_entry(train, h, args.n_bootstrap, 0, 1e-3)
        law["backtest"] = rollout(train, ladder_law.MIN_SIZES, ladder.backtest(h, 1e-3, 0, 0))
        chosen = law_to_read.law_to_read({"ladder_law": law}, h)
        at, actual = test["flops"].to_numpy(), test["eval_loss"].to_numpy()
        for form in ladder.FORMS:
            fit, boot, residuals = ladder.fit_form(train, h, form, args.n_bootstrap, 0, 1e-3)
            band = prediction_interval(boot, ladder.form_log(form, h, at), residuals,
                                       ladder.FORMS[form][1], 0)
            for j in range(at.size):
                error = (fit.predict(at[j]) - actual[j]) / actual[j]
                inside = "n/a" if band is None else ("yes" if band[0, j] <= actual[j] <= band[1, j]
                                                     else "no")
                interval = "n/a" if band is None else f"[{band[0, j]:.3f}, {band[1, j]:.3f}]"
                print(f"| {held} | {at[j] / train['flops'].max():.2f}x | {form} | "
                      f"{'**yes**' if form == chosen['form'] else ''} | "
                      f"{'reached' if law['regime']['reached'] else 'not reached'} | "
                      f"{100 * error:+.2f}% | {interval} | {inside} |")
        print(f"\nheld out {held}: {chosen['why']}; regime: {law['regime']['why']}\n")


if __name__ == "__main__":
    main()
