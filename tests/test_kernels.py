"""Numba kernels against their NumPy twins (the oracle), including the Jacobian outputs."""

import numpy as np
import pytest

from theory_check import kernels


def _rel(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.mark.parametrize("n,M,d", [(1, 1, 1), (7, 3, 2), (50, 16, 9), (3, 40, 1)])
@pytest.mark.parametrize("tau", [1e-6, 0.3, 1 - 1e-6])
def test_iso_kernel_equals_numpy_twin(n, M, d, tau):
    rng = np.random.default_rng(n * 100 + M)
    a = np.sqrt(1 - tau)
    m = a * rng.standard_normal((M, d)) * 2
    c = a * a * rng.uniform(0, 1, M) ** 2 + tau
    logc0 = np.log(rng.dirichlet(np.ones(M))) - 0.5 * d * np.log(2 * np.pi * c)
    x = m[rng.integers(M, size=n)] + np.sqrt(c.max()) * rng.standard_normal((n, d))
    for want in (False, True):
        got, ref = kernels.iso_score(x, m, c, logc0, want), kernels.iso_score_numpy(x, m, c, logc0, want)
        for g, r in zip(got, ref):
            assert g.shape == r.shape
            if r.size:
                assert _rel(g, r) <= 1e-12


@pytest.mark.parametrize("n,M,d", [(1, 1, 1), (7, 3, 2), (30, 8, 6)])
@pytest.mark.parametrize("tau", [1e-6, 0.3, 1 - 1e-6])
def test_full_kernel_equals_numpy_twin(n, M, d, tau):
    rng = np.random.default_rng(n * 100 + M)
    a = np.sqrt(1 - tau)
    m = a * rng.standard_normal((M, d))
    V = np.array([np.linalg.qr(rng.standard_normal((d, d)))[0] for _ in range(M)])
    c = a * a * rng.uniform(0, 1, (M, d)) + tau
    inv_c = 1 / c
    logc0 = np.log(rng.dirichlet(np.ones(M))) - 0.5 * (d * np.log(2 * np.pi) + np.log(c).sum(1))
    P = np.einsum("kip,kp,kjp->kij", V, inv_c, V)
    x = m[rng.integers(M, size=n)] + np.sqrt(c.max()) * rng.standard_normal((n, d))
    for want in (False, True):
        got = kernels.full_score(x, m, V, inv_c, logc0, P, want)
        ref = kernels.full_score_numpy(x, m, V, inv_c, logc0, P, want)
        for g, r in zip(got, ref):
            assert g.shape == r.shape
            if r.size:
                assert _rel(g, r) <= 1e-12
