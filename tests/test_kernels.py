"""Numba kernels against their NumPy twins (the oracle), including the Jacobian outputs."""

import numpy as np
import pytest

from theory_check import kernels


def _rel(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


# M = 6 and 3 exercise the kernel's four-component unrolling with and without a remainder.
@pytest.mark.parametrize("n,M,d", [(1, 1, 1), (7, 3, 2), (50, 16, 9), (20, 6, 5), (3, 40, 1)])
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


def test_responsibilities_below_the_underflow_threshold_are_zero():
    # d = 1, x = 0, components at 0 and 1 with c = 1: s(0) = r_2 = e^v / (1 + e^v), where
    # v = log-weight gap. Above the threshold r_2 is computed (to 1e-12, the exp's accuracy);
    # below it, it is 0 instead of ~1e-261: the same to ~250 digits beyond double resolution.
    x, m, c = np.zeros((1, 1)), np.array([[0.0], [1.0]]), np.ones(2)
    for v in (kernels.UNDERFLOW + 1, kernels.UNDERFLOW - 1, -700.0, -800.0):
        logc0 = np.array([0.0, v + 0.5])                  # log-term of component 2: logc0 - 1/2
        _, s, _ = kernels.iso_score(x, m, c, logc0, False)
        _, s_ref, _ = kernels.iso_score_numpy(x, m, c, logc0, False)
        if v > kernels.UNDERFLOW:
            assert s[0, 0] > 0 and abs(s[0, 0] - np.exp(v)) <= 1e-12 * np.exp(v)
        else:
            assert s[0, 0] == 0.0 and abs(s_ref[0, 0]) <= np.exp(kernels.UNDERFLOW)


# n = 600 at d = 6 spans three blocks of 256 rows (the last one partial); d = 40 has 163-row blocks.
@pytest.mark.parametrize("n,M,d", [(1, 1, 1), (7, 3, 2), (30, 8, 6), (600, 3, 6), (400, 2, 40)])
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


def test_block_rows_keep_blas_single_threaded():
    # OpenBLAS threads a GEMM once m n k exceeds 4 * 65536; blocks stay at or below it.
    for d in (1, 3, 8, 32, 64, 128, 512, 2048):
        B = kernels.full_block_rows(d)
        assert 1 <= B <= 256 and (B == 1 or B * d * d <= 4 * 65536)


@pytest.mark.parametrize("m,p", [(1, 2), (3, 5), (11, 13)])
def test_lincomb_equals_numpy_twin(m, p):
    rng = np.random.default_rng(m * p)
    C = rng.standard_normal((m, p))
    arrays = tuple(rng.standard_normal((37, 5)) for _ in range(p))
    got = kernels.lincomb(C, arrays, np.full((m, 37, 5), np.nan))
    ref = kernels.lincomb_numpy(C, arrays, np.empty((m, 37, 5)))
    # p terms of size O(1): rounding differences stay below p * eps * max|term|
    assert np.max(np.abs(got - ref)) <= 4 * p * np.finfo(float).eps * np.max(np.abs(C)) * 5


def test_kernels_do_not_depend_on_the_number_of_threads():
    import numba
    rng = np.random.default_rng(3)
    n, M, d = 700, 6, 7
    x, m = rng.standard_normal((n, d)), rng.standard_normal((M, d))
    c = rng.uniform(0.2, 1.0, M)
    logc0 = np.log(np.full(M, 1 / M)) - 0.5 * d * np.log(2 * np.pi * c)
    V = np.array([np.linalg.qr(rng.standard_normal((d, d)))[0] for _ in range(M)])
    inv_c = 1 / rng.uniform(0.2, 1.0, (M, d))
    P = np.einsum("kip,kp,kjp->kij", V, inv_c, V)
    C = rng.standard_normal((2, 3))

    def run():
        return (kernels.iso_score(x, m, c, logc0, True) + kernels.full_score(x, m, V, inv_c, logc0, P, True)
                + (kernels.lincomb(C, (x, x[::-1].copy(), 2 * x), np.empty((2, n, d))),))

    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run()
    finally:
        numba.set_num_threads(saved)
    for a, b in zip(one, run()):
        np.testing.assert_array_equal(a, b)


def test_openmp_spin_is_short_unless_the_user_sets_it():
    # tune_process (called by the CLI, the sweep workers and the benchmarks; not by import)
    import os
    import subprocess
    import sys
    code = "import os, theory_check; theory_check.tune_process(); print(os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "3000"
    env["GOMP_SPINCOUNT"] = "77"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "77"


@pytest.mark.parametrize("shape", [(7,), (50, 3), (20, 4, 4)])
def test_all_finite_equals_the_elementwise_test(shape):
    # oracle: np.isfinite(...).all(); planted NaN / +inf / -inf anywhere, and finite entries
    # whose sum overflows (the kernel's sum is inf there: the min/max fallback must say True)
    from theory_check import checks
    rng = np.random.default_rng(0)
    for bad in (np.nan, np.inf, -np.inf, None):
        a = rng.normal(size=shape)
        if bad is not None:
            a.flat[rng.integers(a.size)] = bad
        assert checks.all_finite(a) == bool(np.isfinite(a).all())
    big = np.full(shape, 1.7e308)
    with np.errstate(over="ignore"):
        assert checks.all_finite(big) and not np.isfinite(big.sum())
    assert checks.all_finite(big[..., ::-1] if big.ndim > 1 else big[::-1])      # non-contiguous path


def test_fused_equals_numpy_sums_with_repeated_arrays():
    # oracle: the sum written term by term; the same array twice (HEROISM's first sweep) and the
    # full mode's (n, d, d) derivatives, one and several combinations
    from theory_check.samplers.base import fused
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(33, 3, 3)), rng.normal(size=(33, 3, 3))
    got = fused([0.5, -2.0, 1.5], [a, b, a])
    np.testing.assert_allclose(got, 2.0 * a - 2.0 * b, rtol=1e-14, atol=1e-14)
    C = rng.normal(size=(2, 3))
    out = np.empty((2, 33, 3, 3))
    assert fused(C, [a, b, a], out) is out
    for j in range(2):
        np.testing.assert_allclose(out[j], C[j, 0] * a + C[j, 1] * b + C[j, 2] * a, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="C-contiguous"):
        fused([1.0], [a[:, :, 0]], np.empty((33, 6))[:, ::2])


@pytest.mark.parametrize("d", [1, 3, 16])
def test_chain_and_slogdet_kernels_equal_numpy(d):
    # oracle: NumPy's batched matmul and slogdet (independent BLAS/LAPACK loops); a row of
    # negative-determinant matrices checks the sign
    from theory_check import kernels
    rng = np.random.default_rng(d)
    J, D = rng.normal(size=(40, d, d)), rng.normal(size=(40, d, d))
    out = np.empty_like(J)
    np.testing.assert_allclose(kernels.chain(J, D, out), np.matmul(J, D), rtol=1e-12, atol=1e-12)
    sign, ld = np.empty(40), np.empty(40)
    kernels.slogdet(D, sign, ld)
    S, L = np.linalg.slogdet(D)
    assert (sign == S).all() and (S < 0).any()
    np.testing.assert_allclose(ld, L, rtol=1e-12, atol=1e-12)
