"""Sphere's Bessel functions against mpmath (40 digits), in every regime: underflow of ive for
large order, the middle, and Hankel's large-argument expansion (where scipy returns NaN)."""

import mpmath as mp
import numpy as np
import pytest

from theory_check import targets
from theory_check.targets import _bessel_ratio


@pytest.mark.parametrize("nu", [0.5, 1.0, 14.0, 49.0, 199.0])
@pytest.mark.parametrize("kappa", [1e-3, 0.5, 3.0, 50.0, 1e3, 1e5, 1e7, 3e9, 1e12, 1e15])
def test_bessel_ratio_against_mpmath(nu, kappa):
    mp.mp.dps = 40
    log_ive, A, dA = (v[0] for v in _bessel_ratio(nu, np.array([kappa])))
    I0, I1 = mp.besseli(nu, kappa), mp.besseli(nu + 1, kappa)
    ref_A = I1 / I0
    ref_dA = 1 - ref_A ** 2 - (2 * nu + 1) * ref_A / kappa      # exact in 40 digits
    assert abs(log_ive - float(mp.log(I0) - kappa)) <= 1e-14 * max(1.0, abs(float(mp.log(I0) - kappa)))
    assert abs(A - float(ref_A)) <= 1e-13 * float(ref_A)
    # dA by the identity loses ~kappa * eps near the Hankel threshold (1e-13 relative at 1e3)
    assert abs(dA - float(ref_dA)) <= 1e-9 * abs(float(ref_dA))


@pytest.mark.parametrize("k", [100, 150, 400])
@pytest.mark.parametrize("tau", [1e-12, 1e-6, 0.1, 0.5, 0.999])
def test_high_dimensional_spheres_stay_finite(k, tau):
    t = targets.Sphere(k + 2, k, 2.0)
    rng = np.random.default_rng(0)
    for x in (t.sample(10, tau, rng), 1e-3 * rng.standard_normal((4, k + 2)), 100 * rng.standard_normal((4, k + 2))):
        assert np.all(np.isfinite(t.log_density(x, tau)))
        s, J = t.score_and_jacobian(x, tau)
        assert np.all(np.isfinite(s)) and np.all(np.isfinite(J))
