import numpy as np
import pytest

from neoscale.scaling.points import local_slopes


def test_local_slopes_of_a_power_law_and_a_bend():
    compute = np.array([1e12, 1e13, 1e11])  # unordered: sorted by compute
    np.testing.assert_allclose(local_slopes(compute, 5.0 * compute ** -0.08), [0.08, 0.08])
    bend = np.array([6.0, 6.0 * 10 ** -0.06, 6.0 * 10 ** -0.16])  # slope 0.06, then 0.10
    np.testing.assert_allclose(local_slopes([1e11, 1e12, 1e13], bend), [0.06, 0.10])


def test_local_slopes_bad_input():
    with pytest.raises(ValueError, match="2 points"):
        local_slopes([1e12], [4.0])
    with pytest.raises(ValueError, match="positive"):
        local_slopes([1e12, 0.0], [4.0, 3.0])
