"""A schedule-aware law of the whole loss curve: the LR-annealing law of Tissue et al. 2024.

"Scaling Law with Learning Rate Annealing" (Tissue, Wang & Wang 2024, arXiv:2408.11029) finds that
the validation loss after s updates follows

    L(s) = L0 + A·S1(s)^(−α) − C·S2(s),

with S1 the forward area (the sum of the learning rates so far) and S2 the annealing area:

* S1(s) = Σ_{i=1..s} η_i over the rates of updates 1..s (η_i from
  ``neoscale.training.optimizer.make_schedule``, the function the run trained with, so a schedule
  is never re-implemented here), warmup's updates counted at the peak rate;
* S2(s) = Σ_{i=1..s} m_i with the momentum m_i = λ·m_{i−1} + (η_{i−1} − η_i), λ = 0.999
  (``DECAY``), on the same rates: zero until the rate first falls.

The form is the paper's abstract's; λ = 0.999, warmup at the peak rate (the authors' code says
"we compute S1 and S2 regarding lr as max_lr in warmup stages ... section 3.4 of our paper") and
the objective (Huber δ = 1e-3 on log-loss residuals, L-BFGS-B) are those of the authors' public
fitting script; the paper's full text was not read here.

Fitting (``fit_curve_law``): per model size, on every evaluation after warmup of that size's main
runs (the trunks of a WSD study, their own cooldown included; results.csv holds each evaluation);
each size has its own four constants, since each main run already holds a stable phase and an
annealing. The objective is the project's: the sum of Huber(δ = 1e-3) of log-loss residuals, by
scipy's L-BFGS-B from the best starts of an α grid (where L0, A, C are linear least squares). The
law then predicts the final loss of every cooldown branch forked from those runs from the
branch's own schedule (the trunk's up to the fork, then its decay), which the fit never saw, and
the final loss of a constant and a cosine schedule of each size's longest main run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

import numpy as np
import pandas as pd
from etils import epath
from scipy import optimize as scipy_optimize

from neoscale.scaling import optimize, results

DECAY = 0.999  # λ of the annealing momentum (Tissue et al. 2024's default)
MIN_POINTS = 5  # four constants, and one point to spare
ALPHA_GRID = np.geomspace(0.02, 4.0, 48)
L0_BOUND_TOLERANCE = 1e-2  # nats: an asymptote below this sits at its bound, L0 >= 0
FORM = "L(s) = L0 + A·S1^(−alpha) − C·S2"
WHAT = ("Tissue et al. 2024's LR-annealing law: S1 = sum of the learning rates, S2 = annealing area "
        "(momentum λ = {decay:g}), warmup counted at the peak rate; fitted per size on its main runs' "
        "evaluations after warmup")
SENSITIVITY_DECAYS = (0.99, 0.995, 0.999)
# The law earns its place only if its mean branch error is at most this fraction of the best
# baseline's (set before any study was scored: a tie within 10% is no evidence for the law).
EARNS_PLACE_RATIO = 0.9  # λ values the branch predictions are refitted at
# What a branch's final loss is compared with: predictions that ignore its schedule.
BASELINES = {"at_fork": "the main run's loss at the fork step",
             "main_run_same_step": "the main run's loss at the branch's last step"}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One run's learning-rate schedule, as ``make_schedule`` takes it."""

    kind: str  # "cosine" | "wsd" | "constant"
    peak: float
    steps: int
    warmup_steps: int
    cooldown_steps: int = 0
    cooldown_shape: str = "linear"

    @classmethod
    def from_config_json(cls, description: Mapping) -> Schedule:
        """From a run's config.json (``neoscale.training.loop``: its "run" and "resolved")."""
        try:
            run, resolved = description["run"], description["resolved"]
            return cls(kind=str(run["schedule"]), peak=float(resolved["learning_rate"]),
                       steps=int(run["steps"]), warmup_steps=int(resolved["warmup_steps"]),
                       cooldown_steps=int(resolved.get("cooldown_steps") or 0),
                       cooldown_shape=str(run.get("cooldown_shape") or "linear"))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"a run's config.json lacks its schedule ({type(e).__name__}: {e}): it "
                             "needs run.schedule, run.steps, resolved.learning_rate and "
                             "resolved.warmup_steps") from None

    def learning_rates(self) -> np.ndarray:
        """(steps,) the rate of updates 1..steps, exactly as training computed it."""
        from neoscale.training.optimizer import make_schedule  # jax: only when a schedule is needed

        schedule = make_schedule(self.kind, self.peak, self.steps, self.warmup_steps,
                                 self.cooldown_steps, self.cooldown_shape)
        return np.asarray(schedule(np.arange(self.steps)), np.float64)

    def describe(self) -> str:
        text = f"{self.kind}, peak {self.peak:.3g}, {self.steps} steps, warmup {self.warmup_steps}"
        if self.kind == "wsd":
            text += f", {self.cooldown_shape} cooldown over the last {self.cooldown_steps}"
        return text


def load_schedules(workdir) -> dict[str, Schedule]:
    """run -> Schedule from workdir/runs/<run>/config.json (runs without one are left out)."""
    schedules = {}
    for path in sorted(epath.Path(workdir).glob("runs/*/config.json")):
        try:
            description = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path} is not JSON ({e}): fix or remove it") from None
        schedules[path.parent.name] = Schedule.from_config_json(description)
    return schedules


def areas(learning_rates: np.ndarray, warmup_steps: int = 0, decay: float = DECAY
          ) -> tuple[np.ndarray, np.ndarray]:
    """(S1 (T,), S2 (T,)) after each of T updates with rates ``learning_rates`` (T,).

    S1[s−1] = Σ_{i≤s} η_i; S2[s−1] = Σ_{i≤s} m_i, m_i = λ·m_{i−1} + (η_{i−1} − η_i), m_1 = 0; the
    first ``warmup_steps`` rates are taken as the rate warmup reaches (see the module docstring).
    """
    eta = np.array(learning_rates, np.float64)
    if eta.ndim != 1 or eta.size == 0 or not np.isfinite(eta).all():
        raise ValueError(f"learning_rates must be a non-empty 1-D array of finite rates, got shape "
                         f"{eta.shape}")
    if not 0 < decay <= 1:
        raise ValueError(f"decay λ = {decay} must be in (0, 1]")
    warmup = min(int(warmup_steps), eta.size)
    if warmup:
        eta[:warmup] = eta[warmup - 1]
    drops = np.concatenate([[0.0], eta[:-1] - eta[1:]])
    momentum = np.empty_like(eta)
    m = 0.0
    for i, drop in enumerate(drops):
        m = decay * m + drop
        momentum[i] = m
    return np.cumsum(eta), np.cumsum(momentum)


@dataclasses.dataclass(frozen=True)
class CurveLaw:
    """L = L0 + A·S1^(−alpha) − C·S2 with the annealing momentum ``decay``."""

    L0: float
    A: float
    alpha: float
    C: float
    decay: float = DECAY

    def predict(self, s1, s2) -> np.ndarray:
        s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
        return self.L0 + self.A * s1 ** -self.alpha - self.C * s2

    def curve(self, schedule: Schedule) -> np.ndarray:
        """(steps,) the predicted loss after each update 1..steps of ``schedule``."""
        return self.predict(*areas(schedule.learning_rates(), schedule.warmup_steps, self.decay))

    def constants(self) -> dict[str, float]:
        return {"L0": self.L0, "A": self.A, "alpha": self.alpha, "C": self.C, "decay": self.decay}


def _huber_log(params, x1, x2, log_y, delta):
    """Σ Huber_δ(log L̂ − log L) in units of ``objective_scale(δ)`` and its gradient, for params
    (L0, a, alpha, c) on scaled areas x1 = S1/S1_max, x2 = S2/S2_max, each (n,)."""
    l0, a, alpha, c = params
    power = x1 ** -alpha
    pred = l0 + a * power - c * x2
    if not (pred > 0).all():
        return 1e30, np.zeros(4)  # outside the law's domain: the line search steps back
    r = np.log(pred) - log_y
    absr = np.abs(r)
    scale = optimize.objective_scale(delta)
    value = np.where(absr <= delta, 0.5 * r**2, delta * (absr - 0.5 * delta)).sum() / scale
    dr = np.clip(r, -delta, delta) / pred / scale
    grad = np.array([dr.sum(), (dr * power).sum(), -(dr * a * power * np.log(x1)).sum(),
                     -(dr * x2).sum()])
    return float(value), grad


def fit_law(s1, s2, loss, *, decay: float = DECAY, delta: float = optimize.HUBER_DELTA) -> CurveLaw:
    """The law through points (S1, S2, loss), each (n,): Huber on log residuals.

    Starts: for each α of ALPHA_GRID, L0, A, C >= 0 by linear least squares on the losses; the
    best five are refined by L-BFGS-B over (L0, A, alpha, C), all >= 0. ValueError with fewer than
    MIN_POINTS points, or none during an annealing (C would be undetermined).
    """
    s1, s2, loss = (np.asarray(v, np.float64).ravel() for v in (s1, s2, loss))
    ok = np.isfinite(s1) & np.isfinite(s2) & np.isfinite(loss) & (s1 > 0) & (loss > 0)
    s1, s2, loss = s1[ok], s2[ok], loss[ok]
    if s1.size < MIN_POINTS:
        raise ValueError(f"needs >= {MIN_POINTS} evaluations after warmup, got {s1.size}")
    if not (s2 > 0).any():
        raise ValueError("no evaluation during a learning-rate decay: the annealing term C cannot be "
                         "fitted (evaluate during the cooldown, or fit a run with a decaying schedule)")
    s1_ref, s2_ref = float(s1.max()), float(s2.max())
    x1, x2, log_y = s1 / s1_ref, s2 / s2_ref, np.log(loss)
    starts = []
    for alpha in ALPHA_GRID:
        design = np.stack([np.ones_like(x1), x1 ** -alpha, -x2], axis=1)
        sol = scipy_optimize.lsq_linear(design, loss, bounds=(0.0, np.inf))
        starts.append((float(np.sum(sol.fun**2)), [sol.x[0], sol.x[1], alpha, sol.x[2]]))
    starts.sort(key=lambda start: start[0])
    bounds = [(0.0, None), (0.0, None), (1e-3, 8.0), (0.0, None)]
    best = None
    for _, start in starts[:5]:
        res = scipy_optimize.minimize(_huber_log, np.array(start), args=(x1, x2, log_y, delta),
                                      jac=True, method="L-BFGS-B", bounds=bounds,
                                      options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-10})
        if best is None or res.fun < best.fun:
            best = res
    l0, a, alpha, c = best.x
    return CurveLaw(L0=float(l0), A=float(a * s1_ref**alpha), alpha=float(alpha), C=float(c / s2_ref),
                    decay=decay)


def evaluations(table: pd.DataFrame, run: str) -> pd.DataFrame:
    """(step, eval_loss) of a run's evaluations (its rows of the results table), by step."""
    rows = table.loc[table["run"] == run, ["step", "eval_loss"]].dropna()
    return rows.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def at_steps(values: np.ndarray, steps) -> np.ndarray:
    """values (T,) indexed by update 1..T, read at ``steps`` (n,)."""
    return values[np.asarray(steps, np.int64) - 1]


def _relative(predicted: float, actual: float) -> float:
    return abs(predicted - actual) / actual


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _fit_size(table: pd.DataFrame, runs: list[str], schedules: Mapping[str, Schedule], decay: float,
              delta: float) -> tuple[CurveLaw, dict]:
    """One size's law on its main runs' evaluations after warmup, and its fit.json entry."""
    s1, s2, loss = [], [], []
    for run in runs:
        schedule = schedules[run]
        evals = evaluations(table, run)
        evals = evals[(evals["step"] > schedule.warmup_steps) & (evals["step"] <= schedule.steps)]
        a1, a2 = areas(schedule.learning_rates(), schedule.warmup_steps, decay)
        s1.append(at_steps(a1, evals["step"]))
        s2.append(at_steps(a2, evals["step"]))
        loss.append(evals["eval_loss"].to_numpy())
    s1, s2, loss = np.concatenate(s1), np.concatenate(s2), np.concatenate(loss)
    law = fit_law(s1, s2, loss, decay=decay, delta=delta)
    residual = np.log(law.predict(s1, s2)) - np.log(loss)
    entry = {**law.constants(), "points": int(loss.size),
             "rms_log_residual": float(np.sqrt(np.mean(residual**2))),
             "runs": {run: dataclasses.asdict(schedules[run]) for run in runs}}
    return law, entry


def fit_curve_law(runs: pd.DataFrame, schedules: Mapping[str, Schedule],
                  delta: float = optimize.HUBER_DELTA, decay: float = DECAY,
                  sensitivity: bool = True) -> dict:
    """The law fitted per size on its main runs, and its predictions (JSON-serialisable).

    Args:
      runs: the results table (``results.load_results``: one row per evaluation, ``final`` on
        each run's and branch's last, ``parent``/``fork_step`` for cooldown branches).
      schedules: run -> its Schedule (``load_schedules(workdir)``), for main runs and branches.
      delta: Huber's δ on log-loss residuals (inf: squared error).
      sensitivity: also refit at every λ of ``SENSITIVITY_DECAYS`` (the branches' mean error at each).

    The summary's ``verdict`` says whether the law earns its place: its mean branch error against
    the best schedule-blind baseline (a prediction that ignores the branch's schedule).

    Returns {"status": "fitted", "form", "what", "constants": {size: {L0, A, alpha, C, decay,
    points, rms_log_residual, runs: {run: schedule}}}, "branch_predictions": [...],
    "schedules": {size: final losses of its own, a constant and a cosine schedule}, "skipped":
    {size or branch: why}, "summary"}, or {"status": "skipped", "reason"} when no size can be fitted.
    """
    table = results.validate(runs)
    done = table[table["status"].eq("done")]
    branch_rows = results.is_branch(done)
    main = done.loc[~branch_rows, ["run", "size", "params_active"]].drop_duplicates("run")
    if main.empty:
        return {"status": "skipped", "reason": "no finished main runs in the results table"}
    constants, laws, skipped = {}, {}, {}
    for size, group in main.sort_values("params_active").groupby("size", sort=False):
        missing = [run for run in group["run"] if run not in schedules]
        if missing:
            skipped[size] = f"no schedule for main run(s) {missing} (runs/<run>/config.json)"
            continue
        try:
            laws[size], constants[size] = _fit_size(done, list(group["run"]), schedules, decay, delta)
        except ValueError as e:
            skipped[size] = str(e)
            continue
        constants[size]["N"] = float(group["params_active"].iloc[0])
    if not laws:
        reasons = "; ".join(f"{size}: {why}" for size, why in skipped.items())
        return {"status": "skipped", "reason": f"no size could be fitted ({reasons})"}

    size_of = dict(zip(main["run"], main["size"], strict=True))
    branches = []
    for _, row in done[done["final"] & branch_rows].iterrows():
        size, schedule = size_of.get(row["parent"]), schedules.get(row["run"])
        if size not in laws:
            continue  # its size was not fitted (listed in skipped)
        if schedule is None or not 1 <= row["step"] <= schedule.steps:
            skipped[row["run"]] = "no schedule (runs/<run>/config.json) covering its final step"
            continue
        step, actual = int(row["step"]), float(row["eval_loss"])
        fork = row["fork_step"]
        if not np.isfinite(fork):  # older tables: the branch's decay starts where it forked
            fork = schedule.steps - schedule.cooldown_steps
        predicted = float(at_steps(laws[size].curve(schedule), [step])[0])
        trunk = evaluations(done, row["parent"])
        baselines = {}
        for name, at in (("at_fork", fork), ("main_run_same_step", step)):
            loss = float(np.interp(at, trunk["step"], trunk["eval_loss"]))
            baselines[name] = {"loss": loss, "relative_error": _relative(loss, actual)}
        branches.append({"run": row["run"], "parent": row["parent"], "size": size,
                         "fork_step": int(fork), "steps": step,
                         "schedule": dataclasses.asdict(schedule), "predicted": predicted,
                         "actual": actual, "relative_error": _relative(predicted, actual),
                         "baselines": baselines})

    predictions = {}
    for size, law in laws.items():
        run = max(constants[size]["runs"], key=lambda r: schedules[r].steps)
        own = schedules[run]
        final = done.loc[(done["run"] == run) & done["final"], "eval_loss"]
        predictions[size] = {
            "run": run, "steps": own.steps, "own": own.describe(),
            "own_predicted": float(law.curve(own)[-1]),
            "own_actual": float(final.iloc[0]) if len(final) else None,
            **{kind: float(law.curve(dataclasses.replace(own, kind=kind))[-1])
               for kind in ("constant", "cosine")}}
    summary = {"branches": len(branches),
               "mean_relative_error": _mean([b["relative_error"] for b in branches]),
               "max_relative_error": max((b["relative_error"] for b in branches), default=None),
               "baselines": {name: {"what": what, "mean_relative_error": _mean(
                   [b["baselines"][name]["relative_error"] for b in branches])}
                   for name, what in BASELINES.items()}}
    summary["verdict"] = _verdict(summary)
    if sensitivity and branches:
        summary["decay_sensitivity"] = {
            f"{d:g}": fit_curve_law(runs, schedules, delta, d, sensitivity=False)["summary"][
                "mean_relative_error"] for d in SENSITIVITY_DECAYS}
    return {
        "status": "fitted",
        "form": FORM,
        "what": WHAT.format(decay=decay),
        "constants": constants,
        "skipped": skipped,
        "branch_predictions": branches,
        "schedules": predictions,
        "summary": summary,
    }


def _verdict(summary: dict) -> dict | None:
    """Whether the law beats the best baseline on the branches' mean relative error, by the
    margin ``EARNS_PLACE_RATIO`` asks."""
    law_error = summary["mean_relative_error"]
    baselines = {name: b["mean_relative_error"] for name, b in summary["baselines"].items()
                 if b["mean_relative_error"] is not None}
    if law_error is None or not baselines:
        return None
    best = min(baselines, key=baselines.get)
    return {"beats_baselines": bool(law_error <= EARNS_PLACE_RATIO * baselines[best]), "best_baseline": best,
            "law_error": law_error, "baseline_error": baselines[best]}


def law_of(constants: dict) -> CurveLaw:
    """The CurveLaw of one size's fitted constants (fit.json's curve_law constants[size])."""
    return CurveLaw(constants["L0"], constants["A"], constants["alpha"], constants["C"],
                    constants["decay"])


def load_workdir(workdir) -> tuple[pd.DataFrame, dict[str, Schedule]]:
    """(results table, schedules) of a study directory, for ``fit_curve_law``."""
    path = epath.Path(workdir)
    return results.load_results(path / "results.csv"), load_schedules(path)


__all__ = ["CurveLaw", "DECAY", "Schedule", "areas", "fit_curve_law", "fit_law",
           "load_schedules", "load_workdir"]
