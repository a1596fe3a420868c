"""Task accuracy forecast in two steps (Bhagia et al. 2024, "Establishing Task Scaling Laws via
Compute-Efficient Model Ladders", arXiv 2412.04403), with intervals carried through both steps.

Step 1, task loss from scale: the task's bits per byte of the correct continuation,
L(N, D) = E + A/N^α + B/D^β, fitted as Chinchilla's Approach 3 (`chinchilla`: sum of
Huber_δ(log residuals), δ = 1e-3, L-BFGS from the published start grid), or from compute,
L(C) = E + A·C^(−α) (`power_law`).

Step 2, accuracy from task loss, fitted by least squares on (bits per byte, accuracy) points
(the paper uses every checkpoint of every ladder run, not only the final ones):

- the paper's sigmoid ``Acc(L) = a/(1 + exp(−k·(L − L0))) + b`` (a ∈ [−1, 0], k, L0 ≥ 0,
  b ∈ [0, 1]; started from a = chance − 1, L0 = 0.9, k = 3, b = ceiling, with the ideal point
  (L = 0, Acc = ceiling) added, as OLMo's `scripts/scaling/step2.py`);
- Gadre et al. 2024 (arXiv 2403.08540): ``Err(L) = ε − k·exp(−γ·L)``, Acc = 1 − Err.

Intervals: the bootstrap over runs (`bootstrap.resample_weights`). One resample draws runs with
replacement; both steps are refitted on the drawn runs (a run's step-1 point and its step-2
checkpoints come together), and the predicted accuracy is the refitted step 2 at the refitted
step 1. Resamples that cannot over-determine step 1 (`chinchilla.REQUIREMENT`) are rejected, not
refitted. Two 95% intervals come out: the confidence interval (percentiles of the refits'
predictions: where the law is), and the prediction interval for a measured accuracy, which adds
both steps' residual scatter to every refit's prediction the way `bootstrap.prediction_interval`
does for losses (residuals drawn with replacement, inflated by sqrt(n/(n − P))).

Results tables (`neoscale.fit --tasks`, the in-loop evaluation): one row per evaluation of a run
(columns `run`, `params_active`, `tokens`, as a study's results.csv), and per task
``task_<name>_bpb`` (bits per byte of the correct continuation), ``task_<name>_acc``
(length-normalised accuracy, a fraction in [0, 1]) and optionally ``task_<name>_chance`` (the
task's chance accuracy; it only starts the sigmoid's fit, 0.25 when absent). `task_columns` finds
them; `inputs_from_evaluations` turns them into both steps' points.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
from scipy import optimize as scipy_optimize

from neoscale.scaling import bootstrap, checks, chinchilla, optimize, power_law, results

TASK_COLUMN = re.compile(r"^task_(?P<name>.+)_(?P<metric>bpb|acc)$")
FORMS = ("sigmoid", "gadre")


def task_columns(columns) -> dict[str, tuple[str, str]]:
    """Task name -> (bpb column, accuracy column) for every task with both `task_<name>_bpb` and
    `task_<name>_acc` among `columns`."""
    found: dict[str, dict[str, str]] = {}
    for column in columns:
        if match := TASK_COLUMN.match(str(column)):
            found.setdefault(match["name"], {})[match["metric"]] = str(column)
    return {name: (m["bpb"], m["acc"]) for name, m in sorted(found.items()) if len(m) == 2}


def trailing_mean(values: np.ndarray, n: int) -> np.ndarray:
    """(k,) mean of each value and the n − 1 before it (fewer at the start): OLMo's
    `moving_average`, which smooths both steps' points in the paper."""
    total = np.cumsum(np.asarray(values, np.float64))
    total[n:] = total[n:] - total[:-n]
    return total / np.minimum(np.arange(1, total.size + 1), n)


def inputs_from_evaluations(frame, bpb_column: str, acc_column: str, *, run_column: str = "run",
                            params_column: str = "params_active", tokens_column: str = "tokens",
                            moving_average: int = 1, skip_fraction: float = 0.1):
    """Both steps' points from a table with one row per evaluation of each run (the paper's way).

    Per run (rows ordered by tokens): step 1's point is (N, D of its last evaluation) with the
    mean task loss of its last `moving_average` evaluations; step 2's points are its evaluations
    after the first `skip_fraction`, each a trailing mean of `moving_average` (task loss and
    accuracy alike). Rows without both task values are left out. The paper: moving_average = 5,
    skip_fraction = 0.1.

    Returns:
      (covariates (runs, 2) rows (N, D), bpb (runs,), run labels (runs,), step-2 bpb (m,),
      accuracy (m,), run labels (m,)): `fit_task_chain`'s first six arguments.
    """
    missing = [c for c in (run_column, params_column, tokens_column, bpb_column, acc_column)
               if c not in frame.columns]
    if missing:
        raise ValueError(f"the table lacks column(s) {missing}; columns are {list(frame.columns)}")
    frame = frame[np.isfinite(frame[bpb_column].to_numpy(np.float64))
                  & np.isfinite(frame[acc_column].to_numpy(np.float64))]
    cov, bpb1, runs1, bpb2, acc2, runs2 = [], [], [], [], [], []
    for run, rows in frame.groupby(run_column, sort=False):
        rows = rows.sort_values(tokens_column, kind="stable")
        bpb = rows[bpb_column].to_numpy(np.float64)
        acc = rows[acc_column].to_numpy(np.float64)
        cov.append((float(rows[params_column].iloc[-1]), float(rows[tokens_column].iloc[-1])))
        bpb1.append(bpb[-moving_average:].mean())
        runs1.append(str(run))
        keep = slice(int(np.ceil(skip_fraction * len(rows))), None)
        bpb2.append(trailing_mean(bpb[keep], moving_average))
        acc2.append(trailing_mean(acc[keep], moving_average))
        runs2 += [str(run)] * bpb2[-1].size
    if not runs1:
        raise ValueError(f"no row has both {bpb_column} and {acc_column}")
    return (np.array(cov), np.array(bpb1), np.array(runs1), np.concatenate(bpb2),
            np.concatenate(acc2), np.array(runs2))


# ---------------------------------------------------------------------------------------------
# Step 2: accuracy from task loss.


@dataclasses.dataclass(frozen=True)
class SigmoidFit:
    """Acc(L) = a/(1 + exp(−k·(L − L0))) + b: b at L → −∞ (the ceiling), a + b at L → ∞."""

    a: float
    L0: float
    k: float
    b: float

    def predict(self, bpb):
        """Accuracy at task bits per byte `bpb` (any shape)."""
        return _sigmoid(np.asarray(bpb, np.float64), self.a, self.L0, self.k, self.b)

    def constants(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class GadreFit:
    """Err(L) = ε − k·exp(−γ·L) (Gadre et al. 2024); accuracy = 1 − Err."""

    epsilon: float
    k: float
    gamma: float

    def predict(self, bpb):
        """Accuracy at task bits per byte `bpb` (any shape)."""
        return 1.0 - _gadre_error(np.asarray(bpb, np.float64), self.epsilon, self.k, self.gamma)

    def constants(self) -> dict[str, float]:
        return dataclasses.asdict(self)


AccuracyFit = SigmoidFit | GadreFit


def _sigmoid(x, a, L0, k, b):
    with np.errstate(over="ignore"):
        return a / (1.0 + np.exp(-k * (x - L0))) + b


def _gadre_error(x, epsilon, k, gamma):
    return epsilon - k * np.exp(-gamma * x)


@dataclasses.dataclass(frozen=True)
class _Step2Form:
    """A step-2 law as least squares: residuals in accuracy, start, bounds, anchor point."""

    name: str
    fit_type: type
    n_params: int

    def start_and_bounds(self, chance: float, ceiling: float):
        if self.name == "sigmoid":  # OLMo's scripts/scaling/step2.py
            return (np.array([chance - 1.0, 0.9, 3.0, ceiling]),
                    (np.array([-1.0, 0.0, 0.0, 0.0]), np.array([0.0, np.inf, np.inf, 1.0])))
        return (np.array([1.0 - chance, 1.0 - chance, 1.0]),
                (np.array([0.0, 0.0, 0.0]), np.array([1.0, np.inf, np.inf])))

    def accuracy(self, p, x):
        if self.name == "sigmoid":
            return _sigmoid(x, *p)
        return 1.0 - _gadre_error(x, *p)


_FORMS = {"sigmoid": _Step2Form("sigmoid", SigmoidFit, 4), "gadre": _Step2Form("gadre", GadreFit, 3)}


def _form(name: str) -> _Step2Form:
    if name not in _FORMS:
        raise ValueError(f"unknown step-2 form {name!r}: use one of {', '.join(FORMS)}")
    return _FORMS[name]


def _least_squares(form: _Step2Form, x, y, weights, start, bounds) -> np.ndarray:
    """Σ w_i·(form(x_i) − y_i)² minimised by scipy's trust-region reflective method (what
    `scipy.optimize.curve_fit` runs with bounds)."""
    root_w = np.sqrt(weights)

    def residuals(p):
        return root_w * (form.accuracy(p, x) - y)

    start = np.clip(start, bounds[0], bounds[1])
    return scipy_optimize.least_squares(residuals, start, bounds=bounds, method="trf",
                                        max_nfev=20000).x


def _step2_points(bpb, accuracy, form: _Step2Form, ceiling: float, anchor: bool):
    x = np.asarray(bpb, np.float64).ravel()
    y = np.asarray(accuracy, np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"{x.size} task losses for {y.size} accuracies: pass one of each per point")
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ValueError("task bits per byte must be finite and positive: remove those rows")
    if not (np.all(np.isfinite(y)) and np.all((y >= 0) & (y <= 1))):
        raise ValueError("accuracies must be fractions in [0, 1] (not percentages): divide by 100")
    if np.unique(np.round(x, 6)).size < form.n_params + 1:
        raise ValueError(f"need at least {form.n_params + 1} distinct task losses to fit the "
                         f"{form.n_params}-constant {form.name}, got {np.unique(np.round(x, 6)).size}")
    if form.name == "sigmoid" and anchor:  # the paper's ideal point: zero loss, full accuracy
        return np.append(x, 0.0), np.append(y, ceiling), np.append(np.ones(x.size), 1.0)
    return x, y, np.ones(x.size)


def fit_accuracy(bpb, accuracy, *, chance: float, form: str = "sigmoid", ceiling: float = 1.0,
                 anchor: bool = True) -> AccuracyFit:
    """Step 2: accuracy against task bits per byte.

    Args:
      bpb, accuracy: (m,) task loss and accuracy (a fraction) of each checkpoint.
      chance: the task's chance accuracy (the sigmoid's start: a = chance − 1; Gadre's ε = 1 − chance).
      form: "sigmoid" (the paper's) or "gadre" (Err(L) = ε − k·exp(−γL)).
      ceiling: the best accuracy possible (the sigmoid's start b and its ideal point).
      anchor: add the ideal point (0, ceiling) to the sigmoid's points, as the paper does.
    """
    law = _form(form)
    x, y, w = _step2_points(bpb, accuracy, law, ceiling, anchor)
    start, bounds = law.start_and_bounds(chance, ceiling)
    return law.fit_type(*(float(v) for v in _least_squares(law, x, y, w, start, bounds)))


# ---------------------------------------------------------------------------------------------
# Step 1 (task loss from N, D or from C) and the chain.


@dataclasses.dataclass(frozen=True)
class _Step1:
    """Step 1 as the batched Huber solver sees it: law, centred log covariates, seeds."""

    law: object
    log_x: np.ndarray  # (n, K) centred
    log_y: np.ndarray  # (n,)
    centre: np.ndarray  # (K,)
    seeds: np.ndarray  # (S, P) centred raw rows: the full fit's optimum and its best distinct optima
    best: np.ndarray  # (P,) centred raw row of the full fit
    requirement: bootstrap.Requirement
    fit: chinchilla.ChinchillaFit | power_law.PowerLawFit
    names: tuple[str, ...]  # the constants `decode` gives
    decode: Callable[[np.ndarray], np.ndarray]  # raw rows (A, P) -> constants (A, P)

    def log_predict(self, raw: np.ndarray, covariates: np.ndarray) -> np.ndarray:
        """(R, m) log task loss of raw rows (R, P) at covariates (m, K) (N, D or C)."""
        log_x = np.log(np.asarray(covariates, np.float64)).reshape(-1, self.centre.size)
        return self.law.log_predict(raw, log_x - self.centre)


def _step1_nd(n, d, bpb, starts) -> _Step1:
    cols, _ = checks.clean_points(5, n=n, d=d, loss=bpb)
    fit, params, objective, log_x, centre = chinchilla._fit_grid(cols, starts)
    best = params[int(np.argmin(objective))]

    def decode(raw):
        raw = chinchilla._uncentred(raw, centre)
        return np.concatenate([np.exp(raw[:, :3]), raw[:, 3:]], axis=1)

    return _Step1(chinchilla.LAW, log_x, np.log(cols["loss"]), centre,
                  bootstrap.distinct_best(params, objective, 4), best, chinchilla.REQUIREMENT, fit,
                  chinchilla.CONSTANTS, decode)


def _step1_compute(compute, bpb) -> _Step1:
    cols, _ = checks.clean_points(3, compute=compute, loss=bpb)
    checks.require_distinct("compute", cols["compute"], minimum=3)
    log_c = np.log(cols["compute"])
    centre = np.array([log_c.mean()])
    log_x, log_y = (log_c - centre)[:, None], np.log(cols["loss"])
    law = power_law.SATURATING
    params, objective = optimize.minimize_huber(
        law, power_law._starts(log_c, cols["loss"], True), log_x, log_y)
    best = params[int(np.argmin(objective))]
    e_value, a_value, alpha = power_law._decode(best, float(centre[0]), True)[0]
    fit = power_law.PowerLawFit(E=float(e_value), A=float(a_value), alpha=float(alpha),
                                objective=float(np.min(objective)), n_points=int(log_y.size))
    return _Step1(law, log_x, log_y, centre, bootstrap.distinct_best(params, objective, 3), best,
                  bootstrap.Requirement(points=law.n_free + 1), fit, power_law.NAMES,
                  lambda raw: power_law._decode(raw, float(centre[0]), True))


@dataclasses.dataclass(frozen=True)
class TaskChain:
    """Both steps fitted on all runs, and the bootstrap's refits of both.

    step1_raw: (A, P) the accepted resamples' step-1 rows (centred, as the solver's law reads them);
    step2_params: (A, P2) their step-2 constants; residuals1: (n,) log residuals (fitted − actual)
    of step 1's points; residuals2: (m,) accuracy residuals of step 2's points (no ideal point).
    """

    step1: chinchilla.ChinchillaFit | power_law.PowerLawFit
    step2: AccuracyFit
    bootstrap: bootstrap.Bootstrap
    _step1: _Step1 = dataclasses.field(repr=False)
    step1_raw: np.ndarray = dataclasses.field(repr=False)
    step2_params: np.ndarray = dataclasses.field(repr=False)
    residuals1: np.ndarray = dataclasses.field(repr=False)
    residuals2: np.ndarray = dataclasses.field(repr=False)
    form: str = "sigmoid"

    def predict_bpb(self, covariates) -> np.ndarray:
        """(m,) task bits per byte at covariates (m, 2) rows (N, D), or (m,) compute C."""
        return np.exp(self._step1.log_predict(self._step1.best[None], covariates)[0])

    def predict(self, covariates) -> np.ndarray:
        """(m,) accuracy at covariates (m, 2) rows (N, D), or (m,) compute C."""
        return self.step2.predict(self.predict_bpb(covariates))

    def _refit_accuracy(self, covariates, residual_draws: int, seed: int) -> np.ndarray:
        law = _FORMS[self.form]
        log_bpb = self._step1.log_predict(self.step1_raw, covariates)  # (A, m)
        if residual_draws == 0:
            rows = zip(self.step2_params, log_bpb, strict=True)
            return np.stack([law.accuracy(p, np.exp(row)) for p, row in rows])
        rng = np.random.default_rng(seed)
        n1, n2 = self.residuals1.size, self.residuals2.size
        inflate1 = np.sqrt(n1 / (n1 - self._step1.law.n_free))
        inflate2 = np.sqrt(n2 / (n2 - law.n_params))
        out = []
        for p, row in zip(self.step2_params, log_bpb, strict=True):
            e1 = inflate1 * rng.choice(self.residuals1, size=(residual_draws, row.size))
            e2 = inflate2 * rng.choice(self.residuals2, size=(residual_draws, row.size))
            out.append(law.accuracy(p, np.exp(row[None] - e1)) - e2)
        return np.concatenate(out)

    def interval(self, covariates, *, kind: str = "prediction", level: float = bootstrap.LEVEL,
                 draws: int = 20, seed: int = 0) -> np.ndarray | None:
        """(2, m) accuracy interval at covariates (m, 2) rows (N, D), or (m,) compute C.

        kind: "confidence" (percentiles of the refitted chain's predictions) or "prediction" (a
        measured accuracy: each refit's prediction moved by `draws` residual draws of both steps).
        None when the bootstrap has no interval (`bootstrap.note` says why).
        """
        if kind not in ("confidence", "prediction"):
            raise ValueError(f"unknown interval kind {kind!r}: use 'confidence' or 'prediction'")
        if not self.bootstrap.has_interval:
            return None
        samples = self._refit_accuracy(covariates, draws if kind == "prediction" else 0, seed)
        return bootstrap.percentile_interval(samples, level)


def fit_task_chain(
    step1_covariates,
    step1_bpb,
    step1_runs,
    step2_bpb,
    step2_accuracy,
    step2_runs,
    *,
    chance: float,
    form: str = "sigmoid",
    ceiling: float = 1.0,
    anchor: bool = True,
    n_bootstrap: int = 200,
    seed: int = 0,
    starts: np.ndarray | None = None,
) -> TaskChain:
    """Fits step 1 and step 2 on all runs and refits both on `n_bootstrap` resamples of runs.

    Args:
      step1_covariates: (n, 2) rows (N, D) for L(N, D) = E + A/N^α + B/D^β, or (n,) compute C for
        L(C) = E + A·C^(−α); N counts parameters as the runs do, D training tokens.
      step1_bpb: (n,) each run's final task bits per byte.
      step1_runs: (n,) run label of each step-1 point.
      step2_bpb, step2_accuracy: (m,) task bits per byte and accuracy of each checkpoint used by
        step 2 (accuracy a fraction in [0, 1]).
      step2_runs: (m,) run label of each step-2 point; a resample draws a run's step-1 and step-2
        points together.
      chance, form, ceiling, anchor: step 2's, see `fit_accuracy`.
      starts: step-1 L-BFGS starts for L(N, D) (rows (e, a, b, α, β)); default the published grid.
        L(C) starts from `power_law`'s own data-driven grid.
    """
    law = _form(form)
    covariates = np.asarray(step1_covariates, np.float64)
    bpb1 = np.asarray(step1_bpb, np.float64).ravel()
    runs1, runs2 = np.asarray(step1_runs).ravel(), np.asarray(step2_runs).ravel()
    if runs1.size != bpb1.size or runs2.size != np.size(step2_bpb):
        raise ValueError("pass one run label per point of each step")
    if np.isnan(bpb1).any() or np.isnan(covariates).any():
        raise ValueError("step 1 has NaN task losses or covariates: drop those runs first")
    if covariates.ndim == 2 and covariates.shape[1] == 2:
        step1 = _step1_nd(covariates[:, 0], covariates[:, 1], bpb1, starts)
    elif covariates.ndim == 1:
        step1 = _step1_compute(covariates, bpb1)
    else:
        raise ValueError(f"step-1 covariates of shape {covariates.shape}: pass (n, 2) rows (N, D) "
                         "or (n,) compute")
    x2, y2, w2 = _step2_points(step2_bpb, step2_accuracy, law, ceiling, anchor)
    start, bounds = law.start_and_bounds(chance, ceiling)
    best2 = _least_squares(law, x2, y2, w2, start, bounds)
    step2 = law.fit_type(*(float(v) for v in best2))
    residuals1 = step1.law.log_predict(step1.best[None], step1.log_x)[0] - step1.log_y
    m = np.size(step2_bpb)
    residuals2 = law.accuracy(best2, x2[:m]) - y2[:m]

    names = step1.names + tuple(f.name for f in dataclasses.fields(law.fit_type))
    raw1, params2 = np.empty((0, step1.best.size)), np.empty((0, law.n_params))
    if n_bootstrap == 0:
        boot = bootstrap.Bootstrap.none(names, "no bootstrap resamples requested (n_bootstrap = 0)")
        return TaskChain(step1.fit, step2, boot, step1, raw1, params2, residuals1, residuals2, form)
    w1, w_2 = _run_weights(runs1, runs2, n_bootstrap, seed)
    ok = step1.requirement.met(step1.log_x, w1 > 0)
    ok &= np.array([np.unique(np.round(x2[:m][w > 0], 6)).size for w in w_2]) >= law.n_params + 1
    if (shortfall := step1.requirement.shortfall(step1.log_x)) is not None:
        boot = bootstrap.Bootstrap.none(names, shortfall, n_bootstrap, int((~ok).sum()))
    else:
        ideal = np.ones((int(ok.sum()), x2.size - m))  # the ideal point stays in every resample
        raw1, params2 = _refit(step1, law, w1[ok], x2, y2, np.concatenate([w_2[ok], ideal], axis=1),
                               best2, bounds)
        boot = bootstrap.Bootstrap.from_refits(
            names, np.concatenate([step1.decode(raw1), params2], axis=1), n_bootstrap, int((~ok).sum()))
        finite = np.isfinite(raw1).all(axis=1) & np.isfinite(params2).all(axis=1)
        raw1, params2 = raw1[finite], params2[finite]
    return TaskChain(step1.fit, step2, boot, step1, raw1, params2, residuals1, residuals2, form)


def _run_weights(runs1, runs2, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(R, n) and (R, m) point weights of both steps: each resample draws the runs (the union of
    both steps' labels) with replacement, and a run's points in both steps come with it."""
    labels = np.unique(np.concatenate([runs1.astype(str), runs2.astype(str)]))
    counts = bootstrap.resample_weights(labels, n_resamples, seed)  # (R, runs)
    return (counts[:, np.searchsorted(labels, runs1.astype(str))],
            counts[:, np.searchsorted(labels, runs2.astype(str))])


def _refit(step1: _Step1, law: _Step2Form, w1, x2, y2, w2, best2, bounds):
    """Refits of both steps per accepted resample: step-1 rows (A, P) and step-2 constants (A, P2)."""
    n_ok, n_seeds = len(w1), step1.seeds.shape[0]
    params, objective = optimize.minimize_huber(
        step1.law, np.tile(step1.seeds, (n_ok, 1)), step1.log_x, step1.log_y,
        np.repeat(w1, n_seeds, axis=0))
    params, objective = params.reshape(n_ok, n_seeds, -1), objective.reshape(n_ok, n_seeds)
    raw1 = params[np.arange(n_ok), np.argmin(objective, axis=1)]
    raw1[~np.isfinite(objective.min(axis=1))] = np.nan
    params2 = np.stack([_least_squares(law, x2, y2, w, best2, bounds) for w in w2])
    return raw1, params2


def fit_table(frame, *, tasks=None, targets=None, n_bootstrap: int = 200, seed: int = 0,
              moving_average: int = 1, skip_fraction: float = 0.1,
              starts: np.ndarray | None = None) -> dict:
    """The chain for every task of a results table (see the module docstring for its columns).

    Args:
      frame: pandas DataFrame, one row per evaluation of each run.
      tasks: task names to fit (default every task with both columns).
      targets: (t, 2) rows (N, D) to forecast, or None.
      moving_average, skip_fraction: `inputs_from_evaluations`'s (defaults: each run's final
        evaluation for step 1, every evaluation after the first 10% for step 2).

    Returns:
      A JSON-able dict: per task the constants of both steps with their 95% intervals, the
      bootstrap's counts, the chain's mean absolute error on the runs' own final accuracies
      (points, in-sample), and per target the predicted accuracy and task loss with intervals.
    """
    found = task_columns(frame.columns)
    if not found:
        raise ValueError("the table has no task columns: a task needs task_<name>_bpb and "
                         f"task_<name>_acc; columns are {list(frame.columns)}")
    names = list(found) if not tasks else list(tasks)
    unknown = [t for t in names if t not in found]
    if unknown:
        raise ValueError(f"no task column pair for {unknown}; the table's tasks are {list(found)}")
    targets = None if targets is None else np.atleast_2d(np.asarray(targets, np.float64))
    out = {}
    for name in names:
        bpb_column, acc_column = found[name]
        chance_column = f"task_{name}_chance"
        chances = frame[chance_column].dropna() if chance_column in frame else ()
        chance = float(chances.iloc[0]) if len(chances) else 0.25
        inputs = inputs_from_evaluations(frame, bpb_column, acc_column, moving_average=moving_average,
                                         skip_fraction=skip_fraction)
        chain = fit_task_chain(*inputs, chance=chance, n_bootstrap=n_bootstrap, seed=seed, starts=starts)
        final = frame.loc[frame.groupby("run", sort=False)["tokens"].idxmax()]
        final = final[np.isfinite(final[acc_column].to_numpy(np.float64))]
        in_sample = chain.predict(final[["params_active", "tokens"]].to_numpy(np.float64))
        entry = {
            "step1": {"law": "E + A/N^alpha + B/D^beta (task bits per byte)", **chain.step1.constants()},
            "step2": {"law": "a/(1 + exp(-k(L - L0))) + b", **chain.step2.constants()},
            "chance": chance,
            "bootstrap": chain.bootstrap.summary(),
            "intervals": chain.bootstrap.intervals(),
            "interval_note": chain.bootstrap.note,
            "in_sample_mean_abs_error_points": float(
                100 * np.mean(np.abs(in_sample - final[acc_column].to_numpy(np.float64)))),
        }
        if targets is not None:
            prediction = chain.interval(targets, kind="prediction", seed=seed)
            confidence = chain.interval(targets, kind="confidence")
            entry["forecasts"] = [
                {"N": float(n), "D": float(d), "bpb": float(b), "accuracy": float(a),
                 "prediction_interval": None if prediction is None else prediction[:, i].tolist(),
                 "confidence_interval": None if confidence is None else confidence[:, i].tolist()}
                for i, ((n, d), b, a) in enumerate(zip(targets, chain.predict_bpb(targets),
                                                       chain.predict(targets), strict=True))]
        out[name] = entry
    return {"tasks": out, "n_bootstrap": n_bootstrap, "seed": seed, "moving_average": moving_average,
            "skip_fraction": skip_fraction}


HOLDOUT_TOLERANCE = 0.02  # issue 31: the largest size's task loss predicted within 2%


def predict_largest(frame, bpb_column: str, *, n_bootstrap: int = 200, seed: int = 0) -> dict | None:
    """The largest main run's task bits per byte predicted from the smaller main runs' (a rule
    fixed before the demo's 1,000-example scores were seen): the pure power law bpb = A·C^−α on
    the final rows of every main run below the largest compute (replicate seeds are separate
    points, resampled by run), against the mean of the largest compute's runs.

    frame: one row per evaluation (results.csv). Returns None with fewer than 3 smaller distinct
    computes; else {"run", "predicted", "measured", "relative_error", "interval" (95%, or None),
    "within_tolerance"}.
    """
    final = frame[frame["final"] & np.isfinite(frame[bpb_column].to_numpy(np.float64))]
    if {"cooldown", "parent"} <= set(final.columns):
        final = final[~results.is_branch(final)]
    compute = final["flops"].to_numpy(np.float64)
    if compute.size == 0:
        return None
    largest = np.isclose(compute, compute.max(), rtol=1e-3)
    if np.unique(np.round(np.log(compute[~largest]), 6)).size < 3:
        return None
    bpb = final[bpb_column].to_numpy(np.float64)
    fit, boot = power_law.fit_power_law_bootstrap(
        compute[~largest], bpb[~largest], with_offset=False,
        groups=final["run"].to_numpy()[~largest], n_bootstrap=n_bootstrap, seed=seed)
    target = float(compute[largest].mean())
    predicted = float(fit.A * target ** -fit.alpha)
    interval = None
    if boot.has_interval:
        samples = boot.samples[:, 1] * target ** -boot.samples[:, 2]  # (E, A, α) rows; E = 0
        interval = bootstrap.percentile_interval(samples[:, None], bootstrap.LEVEL)[:, 0].tolist()
    measured = float(bpb[largest].mean())
    error = predicted / measured - 1
    return {"run": ", ".join(sorted(final["run"][largest].astype(str))), "compute": target,
            "predicted": predicted, "measured": measured, "relative_error": float(error),
            "interval": interval, "within_tolerance": bool(abs(error) <= HOLDOUT_TOLERANCE),
            "fitted_runs": int((~largest).sum())}
