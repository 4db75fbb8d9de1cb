"""Numba kernels for the Gaussian-mixture family, each with a pure-NumPy twin.

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

import numpy as np
from numba import njit, prange

__all__ = ["iso_score", "iso_score_into", "iso_score_numpy", "full_score", "full_score_into", "full_score_numpy", "full_block_rows", "lincomb", "lincomb_numpy"]

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


def lincomb_numpy(C, arrays, out):
    """NumPy twin of `lincomb`."""
    out[...] = np.einsum("jq,qnd->jnd", C, np.stack(arrays))
    return out
