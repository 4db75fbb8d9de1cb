"""Numba kernels for the Gaussian-mixture family and the product targets, each with a pure-NumPy twin.

The kernels evaluate, for a batch x of shape (n, d) at one noise level, the log density
log q(x) = logsumexp_k [log w_k + log N(x; m_k, C_k)], the score s = sum_k r_k g_k with
g_k = -C_k^{-1}(x - m_k), and optionally the score Jacobian
    grad s = -sum_k r_k C_k^{-1} + sum_k r_k g_k g_k^T - s s^T,
where r_k(x) are the responsibilities (softmax of the log terms).

Callers pass everything that depends on tau alone already computed (the shifted means
m_k = a mu_k, the variances or precision factors, and the log normalising constants), so a
kernel touches only per-sample work.  Kernels are parallel over samples (or fixed blocks of
samples); the work of each is done in a fixed order, so results do not depend on the number of
threads.

The `*_numpy` twins compute the same quantities with plain NumPy broadcasting; tests use them
as the oracle.  They allocate O(n M d) memory and are meant for small batches.
"""

import math

import numpy as np
from numba import njit, prange

__all__ = ["iso_score", "iso_score_into", "iso_score_numpy", "full_score", "full_score_into", "full_score_numpy", "full_block_rows", "lincomb", "lincomb_numpy", "total", "chain", "slogdet",
           "product_into", "uniform_numpy", "rademacher_numpy", "gmm1_numpy"]

# Reassociation and contraction let LLVM vectorise the reductions over d and fuse multiply-adds;
# the flags that assume finite values are left out, so non-finite states still propagate to the
# samplers' checks. A sample's result does not depend on the number of threads.
FAST = {"reassoc", "contract", "nsz", "arcp"}

# Responsibilities below e^-600 of the largest are set to 0. They lie ~240 orders of magnitude
# below double resolution (the total is >= 1), so no result changes; but exp underflows for
# arguments below -708, and libm's underflow path is slow: with well-separated modes at small tau
# most responsibilities underflow, and an isotropic score evaluation took 850 us instead of 630 us
# (measured, n 4096, M 16, d 64, tau <= 0.2).
UNDERFLOW = -600.0


@njit(cache=True, error_model="numpy")
def _softmax_inplace(lw):
    """Replace the log-weights lw by their softmax (the responsibilities); return logsumexp(lw)."""
    mx = lw.max()
    tot = 0.0
    for k in range(lw.shape[0]):
        v = lw[k] - mx
        # exp of a clamped argument, then a select: LLVM may evaluate both arms of a branch
        e = np.exp(max(v, UNDERFLOW))
        lw[k] = e if v > UNDERFLOW else 0.0
        tot += lw[k]
    for k in range(lw.shape[0]):
        lw[k] = lw[k] / tot
    return mx + np.log(tot)


def _outputs(x, want_jac):
    """logq, s, J allocated by NumPy, which advises the kernel to back large arrays with huge
    pages; Numba's own allocator does not, and at n d = 6.4e6 the first-touch page faults of
    a fresh s cost as much as the arithmetic (measured: 31 ms vs 17 ms per isotropic score)."""
    n, d = x.shape
    return np.empty(n), np.empty((n, d)), np.empty((n if want_jac else 0, d, d))


def iso_score(x, m, c, logc0, want_jac):
    """Isotropic mixture: C_k = c_k I.

    Parameters
    ----------
    x : ndarray (n, d)
    m : ndarray (M, d)
        Shifted means a mu_k.
    c : ndarray (M,)
        Variances a^2 sigma_k^2 + tau.
    logc0 : ndarray (M,)
        log w_k - (d/2) log(2 pi c_k).
    want_jac : bool

    Returns
    -------
    logq (n,), s (n, d), J (n, d, d) (shape (0, d, d) unless want_jac)

    Examples
    --------
    >>> x = np.array([[1.0, 0.0]])
    >>> logq, s, J = iso_score(x, np.zeros((1, 2)), np.ones(1), np.array([-np.log(2 * np.pi)]), True)
    >>> (s + 0.0).tolist(), (J[0] + 0.0).tolist()        # + 0.0: no signed zeros
    ([[-1.0, 0.0]], [[-1.0, 0.0], [0.0, -1.0]])
    """
    out = _outputs(x, want_jac)
    iso_score_into(x, m, c, logc0, *out)
    return out


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def iso_score_into(x, m, c, logc0, logq, s, J):
    """`iso_score` writing into logq (n,), s (n, d) and J (n, d, d) or (0, d, d)."""
    n, d = x.shape
    M = m.shape[0]
    # shapes are checked: a mismatch would read or write out of bounds (boundscheck is off)
    if (m.shape[1] != d or c.shape[0] != M or logc0.shape[0] != M or logq.shape[0] != n or s.shape[0] != n
            or s.shape[1] != d or (J.shape[0] != 0 and (J.shape[0] != n or J.shape[1] != d or J.shape[2] != d))):
        raise ValueError("iso_score: shapes must be x (n, d), m (M, d), c (M,), logc0 (M,), logq (n,), s (n, d), "
                         "J (n, d, d) or (0, d, d)")
    M4 = M - M % 4
    half_inv_c = 0.5 / c
    for i in prange(n):
        w = np.empty(M)
        logq[i] = _iso_responsibilities(x, i, m, half_inv_c, logc0, w)
        for k in range(M):
            w[k] /= c[k]
        for j in range(d):
            s[i, j] = 0.0
        # s = -sum_k (r_k / c_k)(x - m_k), four components per pass over the row (as above)
        for k in range(0, M4, 4):
            w0, w1, w2, w3 = w[k], w[k + 1], w[k + 2], w[k + 3]
            for j in range(d):
                xj = x[i, j]
                s[i, j] -= (w0 * (xj - m[k, j]) + w1 * (xj - m[k + 1, j])
                            + w2 * (xj - m[k + 2, j]) + w3 * (xj - m[k + 3, j]))
        for k in range(M4, M):
            for j in range(d):
                s[i, j] -= w[k] * (x[i, j] - m[k, j])
    # The Jacobian in a second pass (recomputing r, O(M d) beside its O(M d^2)): a branch in the
    # loop above costs the score path 15% of its speed.
    if J.shape[0] > 0:
        for i in prange(n):
            r = np.empty(M)
            _iso_responsibilities(x, i, m, half_inv_c, logc0, r)
            _iso_jacobian_row(x[i], m, c, r, s[i], J[i])


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _iso_responsibilities(x, i, m, half_inv_c, logc0, r):
    """r_k = softmax_k(logc0_k - |x_i - m_k|^2 / (2 c_k)) for sample i; returns the logsumexp.

    Four components per pass over the row: x_i is loaded once for four means, which takes the
    kernel from load-bound to about 60% of the GEMM rate (measured 13 vs 17 ms at n 1e5)."""
    M, d = m.shape
    M4 = M - M % 4
    for k in range(0, M4, 4):
        a0 = a1 = a2 = a3 = 0.0
        for j in range(d):
            xj = x[i, j]
            t0, t1, t2, t3 = xj - m[k, j], xj - m[k + 1, j], xj - m[k + 2, j], xj - m[k + 3, j]
            a0 += t0 * t0
            a1 += t1 * t1
            a2 += t2 * t2
            a3 += t3 * t3
        r[k] = logc0[k] - half_inv_c[k] * a0
        r[k + 1] = logc0[k + 1] - half_inv_c[k + 1] * a1
        r[k + 2] = logc0[k + 2] - half_inv_c[k + 2] * a2
        r[k + 3] = logc0[k + 3] - half_inv_c[k + 3] * a3
    for k in range(M4, M):
        acc = 0.0
        for j in range(d):
            t = x[i, j] - m[k, j]
            acc += t * t
        r[k] = logc0[k] - half_inv_c[k] * acc
    return _softmax_inplace(r)


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _iso_jacobian_row(x, m, c, r, s, J):
    """J = -sum_k (r_k/c_k) I + sum_k r_k g_k g_k^T - s s^T for one sample (g_k = -(x - m_k)/c_k).
    Kept out of the kernel's loop body, whose score path LLVM then vectorises better."""
    M, d = m.shape
    diag = 0.0
    for k in range(M):
        diag -= r[k] / c[k]
    for j in range(d):
        for l in range(d):
            J[j, l] = -s[j] * s[l]
        J[j, j] += diag
    g = np.empty(d)
    for k in range(M):
        for j in range(d):
            g[j] = -(x[j] - m[k, j]) / c[k]
        for j in range(d):
            rg = r[k] * g[j]
            for l in range(d):
                J[j, l] += rg * g[l]


def iso_score_numpy(x, m, c, logc0, want_jac):
    """NumPy twin of `iso_score`."""
    diff = x[:, None, :] - m[None, :, :]                    # (n, M, d)
    lw = logc0[None, :] - 0.5 * np.einsum("nkd,nkd->nk", diff, diff) / c[None, :]
    mx = lw.max(axis=1, keepdims=True)
    e = np.exp(lw - mx)
    tot = e.sum(axis=1, keepdims=True)
    logq = (mx + np.log(tot))[:, 0]
    r = e / tot
    g = -diff / c[None, :, None]
    s = np.einsum("nk,nkd->nd", r, g)
    d = x.shape[1]
    J = np.empty((0, d, d))
    if want_jac:
        J = (-(r / c[None, :]).sum(axis=1)[:, None, None] * np.eye(d)
             + np.einsum("nk,nki,nkj->nij", r, g, g) - s[:, :, None] * s[:, None, :])
    return logq, s, J


@njit(cache=True, error_model="numpy")
def full_block_rows(d):
    """Rows per block of `full_score`: the block products (B x d) @ (d x d) stay below OpenBLAS's
    multithreading threshold (m n k <= 4 * 65536), so each runs in its calling Numba thread
    instead of oversubscribing the cores, and a block's arrays stay in the L2 cache."""
    return max(1, min(256, 262144 // (d * d)))


def full_score(x, m, V, inv_c, logc0, P, want_jac):
    """Full-covariance mixture: C_k = V_k diag(c_k) V_k^T.

    Parameters
    ----------
    x : ndarray (n, d)
    m : ndarray (M, d)
        Shifted means a mu_k.
    V : ndarray (M, d, d)
        Eigenvectors of Sigma_k (columns).
    inv_c : ndarray (M, d)
        1 / (a^2 lambda_k + tau).
    logc0 : ndarray (M,)
        log w_k - (d/2) log 2 pi - (1/2) sum log c_k.
    P : ndarray (M, d, d)
        C_k^{-1} (used only when want_jac).
    want_jac : bool

    Returns
    -------
    logq (n,), s (n, d), J (n, d, d) (shape (0, d, d) unless want_jac)

    Samples are processed in blocks of B = `full_block_rows(d)` rows, in parallel over blocks: per
    component, z = (x - m_k) V_k and g_k = -V_k diag(1/c_k) z are two small BLAS products, and
    everything else is one pass over the block.
    """
    out = _outputs(x, want_jac)
    full_score_into(x, m, V, inv_c, logc0, P, *out)
    return out


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def full_score_into(x, m, V, inv_c, logc0, P, logq, s, J):
    """`full_score` writing into logq (n,), s (n, d) and J (n, d, d) or (0, d, d)."""
    n, d = x.shape
    M = m.shape[0]
    if (m.shape[1] != d or V.shape[0] != M or V.shape[1] != d or V.shape[2] != d or inv_c.shape[0] != M
            or inv_c.shape[1] != d or logc0.shape[0] != M or P.shape[0] != M or P.shape[1] != d or P.shape[2] != d
            or logq.shape[0] != n or s.shape[0] != n or s.shape[1] != d
            or (J.shape[0] != 0 and (J.shape[0] != n or J.shape[1] != d or J.shape[2] != d))):
        raise ValueError("full_score: shapes must be x (n, d), m (M, d), V (M, d, d), inv_c (M, d), logc0 (M,), "
                         "P (M, d, d), logq (n,), s (n, d), J (n, d, d) or (0, d, d)")
    want_jac = J.shape[0] > 0
    B = full_block_rows(d)
    VT = np.empty((M, d, d))
    for k in range(M):
        VT[k] = V[k].T
    for b in prange((n + B - 1) // B):
        i0 = b * B
        nb = min(n, i0 + B) - i0
        lw = np.empty((nb, M))
        D = np.empty((nb, d))
        W = np.empty((M, nb, d))       # diag(1/c_k) V_k^T (x - m_k), then g_k = -V_k W_k
        for k in range(M):
            for i in range(nb):
                for j in range(d):
                    D[i, j] = x[i0 + i, j] - m[k, j]
            Z = np.dot(D, V[k])
            for i in range(nb):
                acc = 0.0
                for p in range(d):
                    t = Z[i, p] * inv_c[k, p]
                    acc += Z[i, p] * t
                    W[k, i, p] = t
                lw[i, k] = logc0[k] - 0.5 * acc
            W[k] = np.dot(W[k], VT[k])
        for i in range(nb):
            r = lw[i]
            logq[i0 + i] = _softmax_inplace(r)
            for j in range(d):
                acc = 0.0
                for k in range(M):
                    acc -= r[k] * W[k, i, j]
                s[i0 + i, j] = acc
            if want_jac:
                for j in range(d):
                    for l in range(d):
                        acc = -s[i0 + i, j] * s[i0 + i, l]
                        for k in range(M):
                            acc += r[k] * (W[k, i, j] * W[k, i, l] - P[k, j, l])
                        J[i0 + i, j, l] = acc


def full_score_numpy(x, m, V, inv_c, logc0, P, want_jac):
    """NumPy twin of `full_score`."""
    diff = x[:, None, :] - m[None, :, :]                    # (n, M, d)
    z = np.einsum("kjp,nkj->nkp", V, diff)
    lw = logc0[None, :] - 0.5 * np.einsum("nkp,kp->nk", z * z, inv_c)
    mx = lw.max(axis=1, keepdims=True)
    e = np.exp(lw - mx)
    tot = e.sum(axis=1, keepdims=True)
    logq = (mx + np.log(tot))[:, 0]
    r = e / tot
    g = -np.einsum("kjp,nkp->nkj", V, z * inv_c[None])
    s = np.einsum("nk,nkd->nd", r, g)
    d = x.shape[1]
    J = np.empty((0, d, d))
    if want_jac:
        J = (-np.einsum("nk,kij->nij", r, P) + np.einsum("nk,nki,nkj->nij", r, g, g)
             - s[:, :, None] * s[:, None, :])
    return logq, s, J


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def lincomb(C, arrays, out):
    """out[j] = sum_i C[j, i] arrays[i] for j < C.shape[0], in one pass over the samples.

    Parameters
    ----------
    C : ndarray (m, p)
    arrays : tuple of p ndarrays (n, d)
    out : ndarray (m, n, d)

    Returns
    -------
    out

    The samplers' node updates are
    linear combinations of the state and K score values; done as separate NumPy operations they
    read and write n d floats K times each, which costs as much as a score evaluation. The tuple's
    length is a compile-time constant, so the sum over it unrolls and each output element is
    written once (twice as fast as accumulating into `out`, measured).
    """
    p = len(arrays)
    if C.shape[1] != p:
        raise ValueError("lincomb: C must have one column per array")
    m = C.shape[0]
    n, d = arrays[0].shape
    for q in range(p):
        if arrays[q].shape[0] != n or arrays[q].shape[1] != d:
            raise ValueError("lincomb: every array must have the shape of the first")
    if out.shape[0] < m or out.shape[1] != n or out.shape[2] != d:
        raise ValueError("lincomb: out must have shape (C.shape[0], n, d)")
    for i in prange(n):
        for j in range(m):
            for l in range(d):
                acc = 0.0
                for q in range(p):
                    acc += C[j, q] * arrays[q][i, l]
                out[j, i, l] = acc
    return out


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def total(a):
    """The sum of the entries of a 2-D array, over samples in parallel: finite exactly when every
    entry is finite, unless finite entries near the float64 limit overflow it (NaN and inf
    propagate: the fastmath flags here do not assume finite values). The samplers' check of
    every step, at half the cost of NumPy's single-threaded sum (measured in the benchmarks).
    The value's rounding depends on the thread count; only its finiteness is used."""
    acc = 0.0
    for i in prange(a.shape[0]):
        row = 0.0
        for j in range(a.shape[1]):
            row += a[i, j]
        acc += row
    return acc


@njit(cache=True, parallel=True, error_model="numpy")
def chain(J, D, out):
    """out[i] = J[i] @ D[i] for every sample i: the chain rule of a score evaluation in the full
    Jacobian mode (score Jacobian times the carried derivative), one BLAS dgemm per sample from
    the Numba threads. NumPy's batched matmul runs these small products in its own loops, below
    BLAS speed: measured here (2 cores, OpenBLAS single-threaded) 26 vs 39 GFLOP/s at d = 64 and
    33 vs 64 at d = 128 (benchmarks item 9). J, D, out: C-contiguous float64 (n, d, d)."""
    for i in prange(J.shape[0]):
        out[i] = np.dot(J[i], D[i])
    return out


@njit(cache=True, parallel=True, error_model="numpy")
def slogdet(D, sign, logdet):
    """sign[i], logdet[i] = np.linalg.slogdet(D[i]) per sample, one LAPACK LU per sample from the
    Numba threads (NumPy's batched slogdet loops over the samples in one thread)."""
    for i in prange(D.shape[0]):
        s, l = np.linalg.slogdet(D[i])
        sign[i] = s
        logdet[i] = l


def lincomb_numpy(C, arrays, out):
    """NumPy twin of `lincomb`."""
    out[...] = np.einsum("jq,qnd->jnd", C, np.stack(arrays))
    return out


# -- product targets (SPEC 9): one-dimensional closed forms, applied coordinate-wise -------------
#
# A product target's log q is a sum over coordinates and its score Jacobian is diagonal, so the
# kernels return, for x (n, d): logq (n,) (the row sums), s (n, d) and ds = d s_i / d x_i (n, d).
# Each law has a scalar function `_<law>1(x, a, tau, params) -> (log q1, s1, s1')`, and one
# parallel driver per law loops over the samples.

LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)
SQRT_HALF_PI = np.sqrt(0.5 * np.pi)
MILLS_SERIES_FROM = 10.0     # the asymptotic series of 1 - t R(t) is used for t >= 10 (see _mills)


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _mills(t):
    """(R(t), w(t)) for t >= 0: R = Phi(-t) / phi(t) the Mills ratio and w = 1 - t R(t).

    For t < 10, R = sqrt(pi/2) exp(t^2/2) erfc(t/sqrt 2) (relative error <= t^2/2 eps from the
    rounding of t^2/2). For t >= 10, the asymptotic series w = sum_k>=1 (-1)^(k+1) (2k-1)!!/t^(2k)
    (Abramowitz & Stegun 7.1.23), summed to its smallest term, which at t = 10 is 2e-22 of the
    first; then R = (1 - w)/t. w itself is ~1/t^2: computing it as 1 - t R would lose t^2 of
    relative accuracy, and the uniform marginal's s' in the tails needs w to full precision.
    """
    if t < MILLS_SERIES_FROM:
        R = SQRT_HALF_PI * np.exp(0.5 * t * t) * math.erfc(t / np.sqrt(2.0))
        return R, 1.0 - t * R
    inv = 1.0 / (t * t)
    term = inv
    w = 0.0
    k = 1
    while k < 200:
        w += term
        nxt = -term * (2 * k + 1) * inv
        if abs(nxt) >= abs(term) or abs(nxt) < 1e-18 * abs(w):
            break
        term = nxt
        k += 1
    return (1.0 - w) / t, w


# Narrow uniform laws (half-width h = a c / sqrt(tau) <= NARROW_H: a near point mass) are integrated
# by Gauss-Legendre quadrature (`_uniform1_narrow`) while h u <= NARROW_HU. Above 0.01 the closed form
# is accurate to 2e-12 (checked against mpmath), so scale 1 (h >= 0.03 for tau <= 0.999) keeps it.
NARROW_H = 0.01
NARROW_HU = 10.0
GL_X, GL_W = np.polynomial.legendre.leggauss(24)


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _uniform1_narrow(u, h, tau, want_logq):
    """The uniform law's (log q1, s1, s1') at x = u sqrt(tau) >= 0 when the interval is narrow.

    The posterior of the clean coordinate given x is N(x, tau) restricted to [-b, b]; in t =
    (y - x)/sqrt(tau) = -u + v, v in [-h, h], its density is proportional to
    f(v) = exp(u v - v^2/2 - m) (m the maximum of the exponent). Then
        log q1 = -u^2/2 + m + log(int f dv / (2h)) - log(2 pi tau)/2,
        s1 = (E[v] - u)/sqrt(tau),  s1' = (Var[v] - 1)/tau,
    with the three integrals by 24-point Gauss-Legendre on [-h, h] (exact to rounding while
    h u <= 10: the integrand is then an entire function of modest growth) and the variance
    from centred nodes. The closed form in Phi differences cancels here: Var[v] ~ h^2/3 comes out
    of 1 + ... - (...)^2, which lost s1' entirely at scale 1e-7 (SPEC 9's formula)."""
    m = u * h - 0.5 * h * h if u >= h else 0.5 * u * u
    tot = 0.0
    mom = 0.0
    for k in range(GL_X.shape[0]):
        v = h * GL_X[k]
        f = GL_W[k] * np.exp(u * v - 0.5 * v * v - m)
        tot += f
        mom += f * v
    mean = mom / tot
    var = 0.0
    for k in range(GL_X.shape[0]):
        v = h * GL_X[k]
        dv = v - mean
        var += GL_W[k] * np.exp(u * v - 0.5 * v * v - m) * dv * dv
    var /= tot
    rt = np.sqrt(tau)
    lq = -0.5 * u * u + m + np.log(0.5 * tot) - 0.5 * np.log(2.0 * np.pi * tau) if want_logq else 0.0
    return lq, (mean - u) / rt, (var - 1.0) / tau


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _uniform1(x, a, tau, c, want_logq):
    """Uniform law on [-c, c]: (log q1, s1, s1') at x (SPEC 9, with b = a c in place of a).

    By symmetry x >= 0 is computed (q, s' even, s odd). With rt = sqrt(tau), beta = (b - x)/rt,
    alpha = -(b + x)/rt: Z = Phi(beta) - Phi(alpha), q1 = Z / (2b), and with lam = phi/Z,
    s1 = (lam_alpha - lam_beta)/rt, tau s1' = alpha lam_alpha - beta lam_beta - (lam_alpha - lam_beta)^2.
    Inside the support (beta >= 0) Z = (erf(beta/sqrt2) + erf(-alpha/sqrt2))/2, a sum of two
    non-negative terms. In the tail (beta < 0) everything is scaled by phi(beta): with z = -beta,
    omega = exp(-2 b x / tau) and D = R(z) - omega R(-alpha) = Z / phi(beta),
        s1 = -(1 - omega) / (D rt),  tau s1' = (-w(z) + omega (2 - omega - z R(-alpha) + alpha D)) / D^2,
    which has no cancellation of large terms (w from `_mills`).
    """
    sgn = 1.0
    if x < 0.0:
        x, sgn = -x, -1.0
    b = a * c
    rt = np.sqrt(tau)
    h = b / rt
    if h <= NARROW_H and h * (x / rt) <= NARROW_HU:
        lq, s, ds = _uniform1_narrow(x / rt, h, tau, want_logq)
        return lq, sgn * s, ds
    beta = (b - x) / rt
    alpha = -(b + x) / rt
    if beta >= 0.0:
        Z = 0.5 * (math.erf(beta / np.sqrt(2.0)) + math.erf(-alpha / np.sqrt(2.0)))
        la = np.exp(-0.5 * alpha * alpha - LOG_SQRT_2PI) / Z
        lb = np.exp(-0.5 * beta * beta - LOG_SQRT_2PI) / Z
        lq = np.log(Z) - np.log(2.0 * b) if want_logq else 0.0
        s = (la - lb) / rt
        ds = (alpha * la - beta * lb - (la - lb) ** 2) / tau
        return lq, sgn * s, ds
    z = -beta
    Rz, wz = _mills(z)
    Ra, _ = _mills(-alpha)
    om1 = -np.expm1(-2.0 * b * x / tau)          # 1 - omega, accurate when omega is near 1
    om = 1.0 - om1
    D = Rz - om * Ra
    lq = -0.5 * z * z - LOG_SQRT_2PI + np.log(D) - np.log(2.0 * b) if want_logq else 0.0
    s = -om1 / (D * rt)
    ds = (-wz + om * (1.0 + om1 - z * Ra + alpha * D)) / (D * D * tau)
    return lq, sgn * s, ds


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _rademacher1(x, b, tau, want_logq):
    """+-c with probability 1/2: q1 = (N(x; b, tau) + N(x; -b, tau))/2 with b = a c, so with
    z = b x / tau: log q1 = -(x^2 + b^2)/(2 tau) + log cosh z - log(2 pi tau)/2,
    s1 = (b tanh z - x)/tau, s1' = (b/tau)^2 sech^2 z - 1/tau (SPEC 9).

    With u = |x| - b and e = exp(-2|z|), the same quantities read
        log q1 = -u^2/(2 tau) + log1p(e) - log 2 - log(2 pi tau)/2,
        s1 = -sign(x) (u + 2 b e/(1 + e)) / tau,  s1' = (b/tau)^2 4e/(1 + e)^2 - 1/tau,
    which cancel nothing: the textbook form subtracts x^2/(2 tau) from b|x|/tau, both ~1e15 at
    scale 1e6, tau 1e-3 (or at scale 1, tau 1e-12), and lost log q to 0.08 there."""
    ax = abs(x)
    z = b * ax / tau
    e = np.exp(-2.0 * z)
    u = ax - b
    lq = 0.0
    if want_logq:
        lq = -(u * u) / (2.0 * tau) + np.log1p(e) - np.log(2.0) - 0.5 * np.log(2.0 * np.pi * tau)
    sgn = -1.0 if x < 0.0 else 1.0
    sech2 = 4.0 * e / ((1.0 + e) * (1.0 + e))
    return lq, sgn * (-u - 2.0 * b * e / (1.0 + e)) / tau, (b / tau) ** 2 * sech2 - 1.0 / tau


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _gmm1(x, P, want_logq):
    """1-D Gaussian mixture sum_k w_k N(m_k, v_k): q1 = sum_k w_k N(x; a m_k, sig_k^2), sig_k^2 =
    a^2 v_k + tau; s1 = sum_k r_k g_k, s1' = sum_k r_k (g_k^2 - 1/sig_k^2) - s1^2 with
    g_k = -(x - a m_k)/sig_k^2 and r_k the responsibilities. P holds what depends on tau alone:
    rows a m_k, 1/sig_k^2, log w_k - log(2 pi sig_k^2)/2 (`products.Mixture1D.coefficients`)."""
    M = P.shape[1]
    mx = -np.inf
    for k in range(M):
        u = x - P[0, k]
        mx = max(mx, P[2, k] - 0.5 * u * u * P[1, k])
    tot = 0.0
    s = 0.0
    s2 = 0.0
    for k in range(M):
        u = x - P[0, k]
        lt = P[2, k] - 0.5 * u * u * P[1, k] - mx
        r = np.exp(max(lt, UNDERFLOW)) if lt > UNDERFLOW else 0.0
        g = -u * P[1, k]
        tot += r
        s += r * g
        s2 += r * (g * g - P[1, k])
    s /= tot
    return (mx + np.log(tot)) if want_logq else 0.0, s, s2 / tot - s * s


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def product_into(law, P, x, tau, want_logq, logq, s, ds):
    """Fill logq (n,) with sum_i log q1(x_i) (when want_logq), s (n, d) and ds (n, d) for the
    1-D law `law` at noise level tau: 0 uniform [-c, c] and 1 Rademacher +-c with P = [[c]];
    2 a Gaussian mixture with P its coefficients at tau (see `_gmm1`). ds may have 0 rows
    (not wanted)."""
    n, d = x.shape
    a = np.sqrt(1.0 - tau)
    want_ds = ds.shape[0] > 0
    for i in prange(n):
        acc = 0.0
        for j in range(d):
            if law == 0:
                lq, si, dsi = _uniform1(x[i, j], a, tau, P[0, 0], want_logq)
            elif law == 1:
                lq, si, dsi = _rademacher1(x[i, j], a * P[0, 0], tau, want_logq)
            else:
                lq, si, dsi = _gmm1(x[i, j], P, want_logq)
            acc += lq
            s[i, j] = si
            if want_ds:
                ds[i, j] = dsi
        logq[i] = acc
    return logq, s, ds


def uniform_numpy(x, tau, c):
    """NumPy/SciPy twin of the uniform law (log q1, s1, s1') elementwise, straight from the
    definitions with scipy.special.log_ndtr: log Z = log Phi(beta) + log(1 - Phi(alpha)/Phi(beta))
    after reflecting x to x >= 0. Accurate where the tails do not cancel (|x| - a c of a few
    sqrt(tau) at most); the tests use it as the oracle there and mpmath beyond."""
    from scipy import special
    x = np.asarray(x, float)
    sgn = np.where(x < 0, -1.0, 1.0)
    x = np.abs(x)
    a = np.sqrt(1.0 - tau)
    b, rt = a * c, np.sqrt(tau)
    beta, alpha = (b - x) / rt, -(b + x) / rt
    lb, la = special.log_ndtr(beta), special.log_ndtr(alpha)
    logZ = lb + np.log(-np.expm1(la - lb))
    lam_a = np.exp(-0.5 * alpha ** 2 - LOG_SQRT_2PI - logZ)
    lam_b = np.exp(-0.5 * beta ** 2 - LOG_SQRT_2PI - logZ)
    s = (lam_a - lam_b) / rt
    ds = (alpha * lam_a - beta * lam_b - (lam_a - lam_b) ** 2) / tau
    return logZ - np.log(2 * b), sgn * s, ds


def rademacher_numpy(x, tau, c):
    """NumPy twin of the Rademacher law, as the two-component mixture (logaddexp of the terms)."""
    return gmm1_numpy(x, tau, np.array([0.5, 0.5]), np.array([-c, c]), np.zeros(2))


def gmm1_numpy(x, tau, w, m, v):
    """NumPy twin of the 1-D Gaussian mixture (broadcast over the components)."""
    x = np.asarray(x, float)[..., None]
    a = np.sqrt(1.0 - tau)
    sig2 = a * a * np.asarray(v, float) + tau
    u = x - a * np.asarray(m, float)
    lt = np.log(w) - 0.5 * np.log(2 * np.pi * sig2) - 0.5 * u * u / sig2
    lq = np.logaddexp.reduce(lt, axis=-1)
    r = np.exp(lt - lq[..., None])
    g = -u / sig2
    s = np.sum(r * g, axis=-1)
    return lq, s, np.sum(r * (g * g - 1 / sig2), axis=-1) - s * s
