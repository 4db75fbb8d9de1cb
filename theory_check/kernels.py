"""Numba kernels for the Gaussian-mixture family, each with a pure-NumPy twin.

The kernels evaluate, for a batch x of shape (n, d) at one noise level, the log density
log q(x) = logsumexp_k [log w_k + log N(x; m_k, C_k)], the score s = sum_k r_k g_k with
g_k = -C_k^{-1}(x - m_k), and optionally the score Jacobian
    grad s = -sum_k r_k C_k^{-1} + sum_k r_k g_k g_k^T - s s^T,
where r_k(x) are the responsibilities (softmax of the log terms).

Callers pass everything that depends on tau alone already computed (the shifted means
m_k = a mu_k, the variances or precision factors, and the log normalising constants), so a
kernel touches only per-sample work.  Kernels are parallel over samples; every sample is
computed independently in a fixed order, so results do not depend on the number of threads.

The `*_numpy` twins compute the same quantities with plain NumPy broadcasting; tests use them
as the oracle.  They allocate O(n M d) memory and are meant for small batches.
"""

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _softmax_inplace(lw):
    """Replace the log-weights lw by their softmax (the responsibilities); return logsumexp(lw)."""
    mx = lw.max()
    tot = 0.0
    for k in range(lw.shape[0]):
        lw[k] = np.exp(lw[k] - mx)
        tot += lw[k]
    for k in range(lw.shape[0]):
        lw[k] = lw[k] / tot
    return mx + np.log(tot)


@njit(cache=True, parallel=True)
def iso_score(x, m, c, logc0, want_jac):
    """Isotropic mixture: C_k = c_k I.

    x (n, d); m (M, d) shifted means; c (M,) variances at tau;
    logc0 (M,) = log w_k - (d/2) log(2 pi c_k).
    Returns logq (n,), s (n, d), J (n, d, d) (J has shape (0, d, d) unless want_jac).
    """
    n, d = x.shape
    M = m.shape[0]
    logq = np.empty(n)
    s = np.empty((n, d))
    J = np.empty((n if want_jac else 0, d, d))
    for i in prange(n):
        lw = np.empty(M)
        for k in range(M):
            acc = 0.0
            for j in range(d):
                t = x[i, j] - m[k, j]
                acc += t * t
            lw[k] = logc0[k] - 0.5 * acc / c[k]
        logq[i] = _softmax_inplace(lw)
        for j in range(d):
            s[i, j] = 0.0
        diag = 0.0
        for k in range(M):
            r = lw[k]
            w = r / c[k]
            diag -= w
            for j in range(d):
                s[i, j] -= w * (x[i, j] - m[k, j])
        if want_jac:
            for j in range(d):
                for l in range(d):
                    J[i, j, l] = -s[i, j] * s[i, l]
                J[i, j, j] += diag
            g = np.empty(d)
            for k in range(M):
                r = lw[k]
                for j in range(d):
                    g[j] = -(x[i, j] - m[k, j]) / c[k]
                for j in range(d):
                    rg = r * g[j]
                    for l in range(d):
                        J[i, j, l] += rg * g[l]
    return logq, s, J


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


@njit(cache=True, parallel=True)
def full_score(x, m, V, inv_c, logc0, P, want_jac):
    """Full-covariance mixture: C_k = V_k diag(c_k) V_k^T.

    x (n, d); m (M, d) shifted means; V (M, d, d) eigenvectors (columns); inv_c (M, d) = 1/c_k;
    logc0 (M,) = log w_k - (d/2) log 2 pi - (1/2) sum log c_k; P (M, d, d) = C_k^{-1}
    (used only when want_jac).
    Returns logq (n,), s (n, d), J (n, d, d) (J empty unless want_jac).
    """
    n, d = x.shape
    M = m.shape[0]
    logq = np.empty(n)
    s = np.empty((n, d))
    J = np.empty((n if want_jac else 0, d, d))
    for i in prange(n):
        lw = np.empty(M)
        w = np.empty((M, d))      # w_k = diag(1/c_k) V_k^T (x - m_k), later g_k
        diff = np.empty(d)
        for k in range(M):
            for j in range(d):
                diff[j] = x[i, j] - m[k, j]
            acc = 0.0
            for p in range(d):
                z = 0.0
                for j in range(d):
                    z += V[k, j, p] * diff[j]
                w[k, p] = z * inv_c[k, p]
                acc += z * w[k, p]
            lw[k] = logc0[k] - 0.5 * acc
        logq[i] = _softmax_inplace(lw)
        g = np.empty((M, d))
        for j in range(d):
            s[i, j] = 0.0
        for k in range(M):
            r = lw[k]
            for j in range(d):
                acc = 0.0
                for p in range(d):
                    acc += V[k, j, p] * w[k, p]
                g[k, j] = -acc
                s[i, j] += r * g[k, j]
        if want_jac:
            for j in range(d):
                for l in range(d):
                    J[i, j, l] = -s[i, j] * s[i, l]
            for k in range(M):
                r = lw[k]
                for j in range(d):
                    rg = r * g[k, j]
                    for l in range(d):
                        J[i, j, l] += rg * g[k, l] - r * P[k, j, l]
    return logq, s, J


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
