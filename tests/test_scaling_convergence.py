"""The batched L-BFGS converges relative to the objective's scale: bootstrap refits of a small
study reach the optimum a tightly converged scipy refit finds, and fits do not depend on units."""

import numpy as np
import pytest

from neoscale.scaling import bootstrap, chinchilla, fit_chinchilla, fit_chinchilla_bootstrap
from neoscale.scaling.synthetic import small_study


def test_bootstrap_refits_of_a_17_run_study_reach_a_converged_reference():
    n, d, loss = small_study()
    n_resamples = 8
    fit, boot = fit_chinchilla_bootstrap(n, d, loss, n_bootstrap=n_resamples, seed=0)
    log_x, centre = chinchilla._features(n, d)
    weights = bootstrap.resample_weights(np.arange(n.size), n_resamples, seed=0)
    weights = weights[chinchilla.REQUIREMENT.met(log_x, weights > 0)]
    assert boot.failed == 0 and len(weights) == boot.accepted >= 6
    full = chinchilla._centred([np.log(fit.E), np.log(fit.A), np.log(fit.B), fit.alpha, fit.beta], centre)
    for row, w in zip(boot.samples, weights, strict=True):
        ours = chinchilla._centred(np.concatenate([np.log(row[:3]), row[3:]]), centre)
        ours_objective = chinchilla.LAW.value_and_grad(ours[None], log_x, np.log(loss), w[None])[0][0]
        ref, ref_objective = chinchilla.reference_refit(log_x, np.log(loss), w, [ours, full])
        assert ours_objective <= ref_objective * (1 + 1e-6)
        ref_constants = chinchilla._uncentred(ref, centre)
        # Exponents to 1e-4 (absolute): the interval's endpoints are then the reference's.
        np.testing.assert_allclose(row[3:], ref_constants[3:], atol=1e-4)
        assert row[0] == pytest.approx(np.exp(ref_constants[0]), rel=1e-3)


def test_point_estimates_do_not_depend_on_the_units_of_n_and_d():
    n, d, loss = small_study()
    base = fit_chinchilla(n, d, loss)
    for scale_n, scale_d in ((1e-6, 1e-9), (1e3, 1.0)):
        other = fit_chinchilla(n * scale_n, d * scale_d, loss)
        assert abs(other.E - base.E) <= 1e-6 * base.E
        assert other.alpha == pytest.approx(base.alpha, abs=1e-7)
        assert other.beta == pytest.approx(base.beta, abs=1e-7)
        # A and B change with the units, the law's losses do not.
        assert other.predict(1e9 * scale_n, 2e10 * scale_d) == pytest.approx(base.predict(1e9, 2e10),
                                                                              rel=1e-8)
