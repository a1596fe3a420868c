"""The ladder's law: the loss of each size at the study's own tokens per parameter, from the plateau.

    L(C) = 1 / (1/H + C^α / A)        (the harmonic sum of H and the power law A·C^(−α))

H is the held-out loss of the best prediction that ignores context (the training split's token
frequencies: ``PreparedData.context_free_loss``), measured, not fitted. A language model falls from
ln V to about H within its first steps; the smallest models of a ladder stay near it, and only
beyond it does the loss fall as a power law (Hestness et al. 2017's "small data region", where a
model does no better than a best guess, before the "power-law region"). The harmonic sum is H at
small compute and A·C^(−α) at large compute, and its log-log slope rises between them from 0 to α,
as α·(1 − L/H): the steepening that every CPU ladder measured here showed (local slope ~0.06 below
~1e13 FLOPs, ~0.10 above: ``benchmarks/RESULTS.md``), which a pure power law fitted below it
extrapolates too pessimistically (its E, fitted, sits at 0). With E = 0 and the exponent on
(H − L) fixed at 1, it is the form of Alabdulmohsin et al. 2022 ("Revisiting neural scaling laws",
their M4: (L − E)/(H − L)^γ = β·C^(−c)) with their random-guess loss replaced by the context-free
one; at large compute it is the pure power law.

Beside it, two forms with three constants (``FORMS``): Alabdulmohsin et al.'s M4 with an
irreducible loss E fitted (0 <= E < H), ``floor``: L = E + 1/(1/(H − E) + C^α/A), which tends to E
instead of 0; and ``free_H``: the harmonic sum with H fitted too (a check of the regime: a ladder
past the plateau puts the fitted H near the measured one). ``FlooredLaw`` fits both.

What the record supports: the pure form was chosen after the demo's 4.2x check (in-sample to that
choice); it has no floor, so its local slope keeps rising and its forecasts fall without bound; on
Chinchilla's frontier it is 4-6% optimistic where the floored forms are within 0.5%
(``benchmarks/RESULTS.md``). Which form a report reads is decided by the study's own backtest
(``scaling/study/law_to_read.py``), not by this docstring.

It is fitted on the main runs of one allocation (every size trained on the same tokens per
parameter: the ladder's next size is what it predicts), by the project's objective: the sum of
Huber(δ = 1e-3) of log-loss residuals, batched L-BFGS from a grid of starts
(``optimize.minimize_huber``), with the same bootstrap over runs. Points at or above H (a model not
yet off the plateau, which the law cannot reach) are dropped and counted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from neoscale.scaling import bootstrap, checks, optimize

NAMES = ("A", "alpha")
FORMS = {  # form key -> (its formula, its bootstrap columns)
    "pure": ("L(C) = 1 / (1/H + C^alpha / A)", ("A", "alpha")),
    "floor": ("L(C) = E + 1 / (1/(H - E) + C^alpha / A)", ("E", "A", "alpha")),
    "free_H": ("L(C) = 1 / (1/H + C^alpha / A), H fitted", ("H", "A", "alpha")),
}
MIN_SIZES = 4  # fitted on 3 sizes (one point to spare) the demo ladder's law missed the next by 14-60%


@dataclasses.dataclass(frozen=True)
class HarmonicLaw:
    """log L̂ = log H − softplus(α·x − b), x = centred log C; parameter rows (b, α).

    The interface of ``optimize.LSELaw`` (``n_params``, ``n_free``, ``log_predict``,
    ``value_and_grad``), so the batched L-BFGS and the bootstrap fit it unchanged.
    """

    log_h: float
    n_params: int = 2
    n_free: int = 2

    def log_predict(self, params: np.ndarray, log_x: np.ndarray) -> np.ndarray:
        """(B, n) predicted log loss for params (B, 2) and log_x (n, 1)."""
        params = np.atleast_2d(params)
        z = params[:, 1:2] * log_x[:, 0][None, :] - params[:, 0:1]
        return self.log_h - np.logaddexp(0.0, z)

    def value_and_grad(self, params, log_x, log_y, weights, delta=optimize.HUBER_DELTA):
        """Σ_i w_i·Huber_δ(residual_i) (B,) and its gradient (B, 2)."""
        x = log_x[:, 0][None, :]
        z = params[:, 1:2] * x - params[:, 0:1]
        residual = self.log_h - np.logaddexp(0.0, z) - log_y
        absr = np.abs(residual)
        huber = np.where(absr <= delta, 0.5 * residual**2, delta * (absr - 0.5 * delta))
        value = np.einsum("bn,bn->b", weights, huber)
        dr = weights * np.clip(residual, -delta, delta) * (0.5 * (1.0 + np.tanh(0.5 * z)))  # × σ(z)
        return value, np.stack([dr.sum(axis=1), -(dr * x).sum(axis=1)], axis=1)


@dataclasses.dataclass(frozen=True)
class FlooredLaw:
    """log L̂ = log(H·(f + (1 − f)·σ(−z))), z = α·x − b, x = centred log C; rows (b, α, c).

    form "floor": H given, f = σ(c) = E/H (so 0 < E < H); form "free_H": f = 0, H = exp(c).
    With f = 0 and H given it is ``HarmonicLaw``. The interface of ``optimize.LSELaw``.
    """

    log_h: float
    free_h: bool = False
    n_params: int = 3
    n_free: int = 3

    def _parts(self, params: np.ndarray, log_x: np.ndarray):
        """(H (B, 1), f (B, 1), s = σ(−z) (B, n), L (B, n)) for params (B, 3), log_x (n, 1)."""
        params = np.atleast_2d(params)
        z = params[:, 1:2] * log_x[:, 0][None, :] - params[:, 0:1]
        s = 0.5 * (1.0 - np.tanh(0.5 * z))
        if self.free_h:
            h, f = np.exp(params[:, 2:3]), np.zeros_like(params[:, 2:3])
        else:
            h = np.full_like(params[:, 2:3], np.exp(self.log_h))
            f = 0.5 * (1.0 + np.tanh(0.5 * params[:, 2:3]))
        return h, f, s, h * (f + (1.0 - f) * s)

    def log_predict(self, params: np.ndarray, log_x: np.ndarray) -> np.ndarray:
        """(B, n) predicted log loss for params (B, 3) and log_x (n, 1)."""
        with np.errstate(divide="ignore"):
            return np.log(self._parts(params, log_x)[3])

    def value_and_grad(self, params, log_x, log_y, weights, delta=optimize.HUBER_DELTA):
        """Σ_i w_i·Huber_δ(residual_i) (B,) and its gradient (B, 3)."""
        h, f, s, loss = self._parts(params, log_x)
        with np.errstate(divide="ignore", invalid="ignore"):
            residual = np.log(loss) - log_y
        absr = np.abs(residual)
        huber = np.where(absr <= delta, 0.5 * residual**2, delta * (absr - 0.5 * delta))
        value = np.einsum("bn,bn->b", weights, huber)
        dr = weights * np.clip(residual, -delta, delta) / loss  # d objective / dL
        slope = h * (1.0 - f) * s * (1.0 - s)  # dL/db
        d_c = loss if self.free_h else h * f * (1.0 - f) * (1.0 - s)
        x = log_x[:, 0][None, :]
        return value, np.stack([(dr * slope).sum(1), -(dr * slope * x).sum(1), (dr * d_c).sum(1)], 1)


@dataclasses.dataclass(frozen=True)
class LadderFit:
    """L(C) = E + 1 / (1/(H − E) + C^α / A): form "pure" (E = 0, H given), "floor" (E fitted, H
    given) or "free_H" (E = 0, H fitted)."""

    H: float
    A: float
    alpha: float
    E: float = 0.0
    form: str = "pure"
    objective: float = float("nan")
    n_points: int = 0
    n_dropped: int = 0

    def predict(self, compute):
        compute = np.asarray(compute, np.float64)
        row = np.array([[self.E, self.A, self.alpha]])
        return predict(row, self.H, compute.ravel(), "floor")[0].reshape(compute.shape)

    def constants(self) -> dict[str, float]:
        out = {"H": float(self.H), "A": float(self.A), "alpha": float(self.alpha)}
        return {**out, "E": float(self.E)} if self.form == "floor" else out


def predict(samples: np.ndarray, context_free_loss: float, compute, form: str = "pure") -> np.ndarray:
    """(S, m) losses at compute (m,) of S constant rows: (A, α) for form "pure", (E, A, α) for
    "floor", (H, A, α) for "free_H" (``FORMS``)."""
    compute = np.asarray(compute, np.float64)[None, :]
    samples = np.atleast_2d(samples)
    floor, h = np.zeros((samples.shape[0], 1)), np.full((samples.shape[0], 1), context_free_loss)
    if form == "floor":
        floor = samples[:, 0:1]
    elif form == "free_H":
        h = samples[:, 0:1]
    a, alpha = samples[:, -2:-1], samples[:, -1:]
    return floor + 1.0 / (1.0 / (h - floor) + compute ** alpha / a)


def check_context_free_loss(context_free_loss: float) -> None:
    if not (np.isfinite(context_free_loss) and context_free_loss > 0):
        raise ValueError(f"the context-free loss H = {context_free_loss:g} must be a positive number "
                         "of nats per token (PreparedData.context_free_loss of the study's data)")


def _starts(log_y: np.ndarray, log_h: float, form: str = "pure") -> np.ndarray:
    """Start rows: α on a grid, b putting the law through the mean log loss at the centre; for
    "floor" E/H on a grid below the mean loss, for "free_H" H on a grid above the largest loss."""
    alphas = (0.05, 0.1, 0.2, 0.4, 0.8)
    if form == "pure":
        gap = max(log_h - float(log_y.mean()), 1e-6)
        b = -np.log(np.expm1(gap))
        return np.array([(b + shift, alpha) for alpha in alphas for shift in (-1.0, 0.0, 1.0)])
    rows = []
    mean = float(np.exp(log_y.mean()))
    if form == "floor":
        ratio = mean / np.exp(log_h)
        for share in (0.02, 0.3, 0.6, 0.85):  # E as a share of the mean loss
            f = share * ratio
            s = (ratio - f) / (1.0 - f)
            rows += [(np.log(s / (1.0 - s)), alpha, np.log(f / (1.0 - f))) for alpha in alphas]
    else:
        for above in (1.02, 1.2, 2.0, 5.0):  # H as a multiple of the largest loss
            h = above * float(np.exp(log_y.max()))
            s = min(mean / h, 1.0 - 1e-6)
            rows += [(np.log(s / (1.0 - s)), alpha, np.log(h)) for alpha in alphas]
        rows += [(-np.log(np.expm1(max(log_h - float(log_y.mean()), 1e-6))), alpha, log_h)
                 for alpha in alphas]
    return np.array(rows)


def fit_ladder_law_bootstrap(
    compute, loss, context_free_loss: float, *, groups=None, n_bootstrap: int = 0, seed: int = 0,
    delta: float = optimize.HUBER_DELTA, form: str = "pure",
) -> tuple[LadderFit, bootstrap.Bootstrap]:
    """(fit, bootstrap of the form's constants ``FORMS[form][1]``) through (compute, loss) points
    of one allocation.

    Points whose loss is not below H are dropped (counted in ``n_dropped``); the fit needs one
    distinct compute value more than the form's constants, and a bootstrap resample that many and
    MIN_SIZES, as many as the study asks of the law (fitted on 3, resamples scatter their
    forecasts by 10x).
    """
    check_context_free_loss(context_free_loss)
    if form not in FORMS:
        raise ValueError(f"form={form!r} is not a ladder-law form; valid: {', '.join(FORMS)}")
    compute, loss = np.asarray(compute, np.float64), np.asarray(loss, np.float64)
    below = np.isfinite(loss) & (loss < context_free_loss)
    law = (HarmonicLaw(float(np.log(context_free_loss))) if form == "pure" else
           FlooredLaw(float(np.log(context_free_loss)), free_h=form == "free_H"))
    cols, kept = checks.clean_points(law.n_free, compute=compute[below], loss=loss[below])
    checks.require_distinct("compute", cols["compute"], minimum=law.n_free + 1)
    log_c = np.log(cols["compute"])
    centre = float(log_c.mean())
    log_x, log_y = (log_c - centre)[:, None], np.log(cols["loss"])
    params, objective = optimize.minimize_huber(law, _starts(log_y, law.log_h, form), log_x, log_y,
                                                delta=delta)
    best = int(np.argmin(objective))

    def decode(raw: np.ndarray) -> np.ndarray:
        """Raw rows (b, α[, c]) -> the form's constants: A·C^(−α) = (H − E)·exp(b − α·(log C − centre))."""
        raw = np.atleast_2d(raw)
        if form == "pure":
            h, floor = np.full(raw.shape[0], context_free_loss), np.zeros(raw.shape[0])
        elif form == "floor":
            h, floor = np.full(raw.shape[0], context_free_loss), context_free_loss / (1 + np.exp(-raw[:, 2]))
        else:
            h, floor = np.exp(raw[:, 2]), np.zeros(raw.shape[0])
        a_value = (h - floor) * np.exp(raw[:, 0] + raw[:, 1] * centre)
        first = {"pure": (), "floor": (floor,), "free_H": (h,)}[form]
        return np.stack([*first, a_value, raw[:, 1]], axis=1)

    constants = dict(zip(FORMS[form][1], decode(params[best])[0], strict=True))
    fit = LadderFit(H=float(constants.get("H", context_free_loss)), A=float(constants["A"]),
                    alpha=float(constants["alpha"]), E=float(constants.get("E", 0.0)), form=form,
                    objective=float(objective[best]), n_points=int(log_y.size),
                    n_dropped=int((~below).sum() + (~kept).sum()))
    groups = np.arange(loss.size) if groups is None else np.asarray(groups)
    needed = max(MIN_SIZES, law.n_free + 1)
    if n_bootstrap and np.unique(groups[below][kept]).size <= needed:  # every accepted resample is the data
        note = (f"{np.unique(groups[below][kept]).size} runs: a resample needs {needed} distinct "
                "sizes, so every accepted one holds each run once and measures no uncertainty; an "
                "interval needs more sizes or replicate runs")
        return fit, bootstrap.Bootstrap.none(FORMS[form][1], note, n_bootstrap)
    boot = bootstrap.bootstrap_huber(
        law, bootstrap.distinct_best(params, objective, 3), log_x, log_y, groups[below][kept],
        n_bootstrap, seed, names=FORMS[form][1], decode=decode,
        # over-determined (constants + 1), and as many sizes as the study asks of the law
        requirement=bootstrap.Requirement(points=law.n_free + 1,
                                          columns=(max(MIN_SIZES, law.n_free + 1),),
                                          names=("compute",)),
        delta=delta,
    )
    return fit, boot


def fit_ladder_law(compute, loss, context_free_loss: float, *,
                   delta: float = optimize.HUBER_DELTA, form: str = "pure") -> LadderFit:
    """L(C) in ``form`` (``FORMS``) through (compute, loss) points of one allocation."""
    return fit_ladder_law_bootstrap(compute, loss, context_free_loss, delta=delta, form=form)[0]
