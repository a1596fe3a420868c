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
class LadderFit:
    """L(C) = 1 / (1/H + C^α / A); H given."""

    H: float
    A: float
    alpha: float
    objective: float = float("nan")
    n_points: int = 0
    n_dropped: int = 0

    def predict(self, compute):
        compute = np.asarray(compute, np.float64)
        return predict(np.array([[self.A, self.alpha]]), self.H, compute.ravel())[0].reshape(compute.shape)

    def constants(self) -> dict[str, float]:
        return {"H": float(self.H), "A": float(self.A), "alpha": float(self.alpha)}


def predict(samples: np.ndarray, context_free_loss: float, compute) -> np.ndarray:
    """(S, m) losses of S constant rows (A, α) at compute (m,)."""
    compute = np.asarray(compute, np.float64)[None, :]
    return 1.0 / (1.0 / context_free_loss + compute ** samples[:, 1:2] / samples[:, 0:1])


def check_context_free_loss(context_free_loss: float) -> None:
    if not (np.isfinite(context_free_loss) and context_free_loss > 0):
        raise ValueError(f"the context-free loss H = {context_free_loss:g} must be a positive number "
                         "of nats per token (PreparedData.context_free_loss of the study's data)")


def _starts(log_y: np.ndarray, log_h: float) -> np.ndarray:
    """Rows (b, α): α on a grid, b putting the law through the mean log loss at the centre."""
    gap = max(log_h - float(log_y.mean()), 1e-6)
    b = -np.log(np.expm1(gap))
    return np.array([(b + shift, alpha) for alpha in (0.05, 0.1, 0.2, 0.4, 0.8)
                     for shift in (-1.0, 0.0, 1.0)])


def fit_ladder_law_bootstrap(
    compute, loss, context_free_loss: float, *, groups=None, n_bootstrap: int = 0, seed: int = 0,
    delta: float = optimize.HUBER_DELTA,
) -> tuple[LadderFit, bootstrap.Bootstrap]:
    """(fit, bootstrap of (A, α)) through (compute, loss) points of one allocation.

    Points whose loss is not below H are dropped (counted in ``n_dropped``); the fit needs 3
    distinct compute values (2 constants and one to spare), and a bootstrap resample MIN_SIZES, as
    many as the study asks of the law (fitted on 3, resamples scatter their forecasts by 10x).
    """
    check_context_free_loss(context_free_loss)
    compute, loss = np.asarray(compute, np.float64), np.asarray(loss, np.float64)
    below = np.isfinite(loss) & (loss < context_free_loss)
    cols, kept = checks.clean_points(2, compute=compute[below], loss=loss[below])
    checks.require_distinct("compute", cols["compute"], minimum=3)
    log_c = np.log(cols["compute"])
    centre = float(log_c.mean())
    log_x, log_y = (log_c - centre)[:, None], np.log(cols["loss"])
    law = HarmonicLaw(float(np.log(context_free_loss)))
    params, objective = optimize.minimize_huber(law, _starts(log_y, law.log_h), log_x, log_y,
                                                delta=delta)
    best = int(np.argmin(objective))

    def decode(raw: np.ndarray) -> np.ndarray:
        """Rows (b, α) -> (A, α): A·C^(−α) = H·exp(b − α·(log C − centre))."""
        raw = np.atleast_2d(raw)
        return np.stack([context_free_loss * np.exp(raw[:, 0] + raw[:, 1] * centre), raw[:, 1]], axis=1)

    a_value, alpha = decode(params[best])[0]
    fit = LadderFit(H=float(context_free_loss), A=float(a_value), alpha=float(alpha),
                    objective=float(objective[best]), n_points=int(log_y.size),
                    n_dropped=int((~below).sum() + (~kept).sum()))
    groups = np.arange(loss.size) if groups is None else np.asarray(groups)
    boot = bootstrap.bootstrap_huber(
        law, bootstrap.distinct_best(params, objective, 3), log_x, log_y, groups[below][kept],
        n_bootstrap, seed, names=NAMES, decode=decode,
        # over-determined (2 constants + 1), and as many sizes as the study asks of the law
        requirement=bootstrap.Requirement(points=3, columns=(MIN_SIZES,), names=("compute",)),
        delta=delta,
    )
    return fit, boot


def fit_ladder_law(compute, loss, context_free_loss: float, *,
                   delta: float = optimize.HUBER_DELTA) -> LadderFit:
    """L(C) = 1 / (1/H + C^α / A) through (compute, loss) points of one allocation."""
    return fit_ladder_law_bootstrap(compute, loss, context_free_loss, delta=delta)[0]
