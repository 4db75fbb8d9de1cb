"""Gaussian mixtures in closed form (SPEC 3): isotropic components (`IsotropicGaussianMixture`),
full and singular covariances (`GaussianMixture`), and mixtures living in a linear subspace
(`SubspaceGaussianMixture`)."""

import numpy as np
from scipy import special

from .. import checks, kernels
from .base import LOG_2PI, Target, _basis_overlap, _project

__all__ = ["IsotropicGaussianMixture", "GaussianMixture", "SubspaceGaussianMixture"]


class IsotropicGaussianMixture(Target):
    """q_tau = sum_k w_k N(a mu_k, (a^2 sigma_k^2 + tau) I); sigma_k = 0 gives point masses.

    Cost O(n M d) per evaluation (Numba kernel `kernels.iso_score`). The active basis is an
    orthonormal basis of span{mu_k}: the score Jacobian is -sum_k r_k/c_k I plus a low-rank
    part in span{x, mu_1..mu_M}.
    """

    def __init__(self, weights, means, variances):
        self.weights, means = checks.mixture(weights, means)
        M, d = means.shape
        self.variances = checks.array(variances, "variances", shape=(M,))
        if np.any(self.variances < 0):
            raise ValueError("variances must be non-negative")
        self.means, self.dim = means, d
        _, sv, vt = np.linalg.svd(means, full_matrices=False)
        rank = int(np.sum(sv > 1e-12 * max(sv.max(initial=0.0), 1e-300)))
        self.active_basis = vt[:rank].T.copy()          # (d, m0), m0 may be 0
        self._means_u = means @ self.active_basis        # (M, m0)

    def _params(self, tau):
        a = np.sqrt(1.0 - tau)
        c = a * a * self.variances + tau
        logc0 = np.log(self.weights) - 0.5 * self.dim * (LOG_2PI + np.log(c))
        return a, c, logc0

    def _eval(self, x, tau, want_jac):
        a, c, logc0 = self._params(tau)
        return kernels.iso_score(x, a * self.means, c, logc0, want_jac)

    def _structured(self, x, tau, Q):
        a, c, logc0 = self._params(tau)
        xq, xp = _project(x, Q)
        mq = a * np.matmul(_basis_overlap(Q, self.active_basis), self._means_u.T).transpose(0, 2, 1)  # (n, M, m)
        diff = xq[:, None, :] - mq
        dist2 = np.einsum("nkr,nkr->nk", diff, diff) + np.einsum("nd,nd->n", xp, xp)[:, None]
        lw = logc0[None, :] - 0.5 * dist2 / c[None, :]
        r = np.exp(lw - special.logsumexp(lw, axis=1, keepdims=True))
        gq = -diff / c[None, :, None]
        sq = np.einsum("nk,nkr->nr", r, gq)
        cI = -(r / c[None, :]).sum(axis=1)
        s = np.matmul(Q, sq[:, :, None])[:, :, 0] + cI[:, None] * xp
        G = np.einsum("nk,nki,nkj->nij", r, gq, gq) - sq[:, :, None] * sq[:, None, :]
        return s, cI, G

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim}, components={len(self.weights)})"

    def _sample(self, n, tau, rng):
        a, c, _ = self._params(tau)
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return a * self.means[k] + np.sqrt(c[k])[:, None] * rng.standard_normal((n, self.dim))

    def mean_cov(self, tau):
        tau = checks.tau(tau)
        a, c, _ = self._params(tau)
        m = a * self.means
        mean = self.weights @ m
        second = np.einsum("k,ki,kj->ij", self.weights, m, m) + (self.weights @ c) * np.eye(self.dim)
        return mean, second - np.outer(mean, mean)

class GaussianMixture(Target):
    """q_tau = sum_k w_k N(a mu_k, C_k), C_k = a^2 Sigma_k + tau I, Sigma_k PSD (may be singular).

    Sigma_k = V_k Lambda_k V_k^T is factored once; C_k^{-1} and log det C_k at any tau come from
    a^2 Lambda_k + tau. When the means and the ranges of all Sigma_k span a subspace U of
    dimension r < d, the mixture is evaluated in the r coordinates of U (the complement is pure
    N(0, tau) noise), which costs O(n (r d + M r^2)) and gives the active basis U.
    """

    def __init__(self, weights, means, covariances, basis=None):
        self.weights, means = checks.mixture(weights, means)
        M, d = means.shape
        covs = checks.array(covariances, "covariances", ndim=3)
        if covs.shape != (M, d, d):
            raise ValueError(f"covariances must have shape ({M}, {d}, {d}), got {covs.shape}")
        eig = [checks.psd_eigh(covs[k], f"covariances[{k}]") for k in range(M)]
        self.means, self.covariances, self.dim = means, covs, d
        if basis is None:
            # Span of the means and of every covariance range.
            cols = [means.T] + [V[:, lam > 0] for lam, V in eig]
            U, sv, _ = np.linalg.svd(np.concatenate(cols, axis=1), full_matrices=False)
            rank = int(np.sum(sv > 1e-10 * max(sv.max(initial=0.0), 1e-300)))
            basis = U[:, :rank] if rank < d else None
        else:
            basis = checks.orthonormal(basis, "basis", d)
            resid = np.abs(means - (means @ basis) @ basis.T).max()
            resid = max(resid, max(np.abs(c - basis @ (basis.T @ c @ basis) @ basis.T).max() for c in covs))
            if resid > 1e-9 * max(1.0, np.abs(means).max(), np.abs(covs).max()):
                raise ValueError("basis must contain the means and the ranges of the covariances")
        self.active_basis = basis
        U = np.eye(d) if basis is None else basis
        self._r = U.shape[1]
        self._means_u = means @ U
        self._lam, self._V = [], []
        for k in range(M):
            lam, V = checks.psd_eigh(U.T @ covs[k] @ U, f"covariances[{k}]")
            self._lam.append(lam)
            self._V.append(V)
        self._lam, self._V = np.array(self._lam), np.array(self._V)

    def _params(self, tau):
        a = np.sqrt(1.0 - tau)
        c = a * a * self._lam + tau                                  # (M, r)
        logc0 = np.log(self.weights) - 0.5 * (self._r * LOG_2PI + np.log(c).sum(axis=1))
        inv_c = 1.0 / c
        P = np.einsum("kip,kp,kjp->kij", self._V, inv_c, self._V)    # C_k^{-1} in U coordinates
        return a, inv_c, logc0, P

    def _eval_coords(self, y, tau, want_jac):
        a, inv_c, logc0, P = self._params(tau)
        return kernels.full_score(y, a * self._means_u, self._V, inv_c, logc0, P, want_jac)

    def _eval(self, x, tau, want_jac):
        U = self.active_basis
        if U is None:
            return self._eval_coords(x, tau, want_jac)
        y = x @ U
        xp = x - y @ U.T
        logq, sy, Jy = self._eval_coords(y, tau, want_jac)
        k = self.dim - self._r
        logq = logq - 0.5 * k * (LOG_2PI + np.log(tau)) - 0.5 * np.einsum("nd,nd->n", xp, xp) / tau
        s = sy @ U.T - xp / tau
        J = Jy
        if want_jac:
            J = np.einsum("ip,npq,jq->nij", U, Jy + np.eye(self._r) / tau, U) - np.eye(self.dim) / tau
        return logq, s, J

    def _structured(self, x, tau, Q):
        U = self.active_basis
        y = x @ U
        _, sy, Jy = self._eval_coords(y, tau, True)
        s = sy @ U.T - (x - y @ U.T) / tau
        QU = _basis_overlap(Q, U)
        G = QU @ (Jy + np.eye(self._r) / tau) @ np.swapaxes(QU, 1, 2)
        return s, np.full(x.shape[0], -1.0 / tau), G

    def __repr__(self):
        sub = "" if self.active_basis is None else f", subspace_dim={self._r}"
        return f"GaussianMixture(dim={self.dim}, components={len(self.weights)}{sub})"

    def _sample(self, n, tau, rng):
        a = np.sqrt(1.0 - tau)
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        z = rng.standard_normal((n, self._r))
        # one component at a time: gathering V[k] per sample took n r^2 floats (1 GiB at r 256, n 2000)
        y = a * self._means_u[k]
        for j in range(len(self.weights)):
            rows = np.flatnonzero(k == j)
            y[rows] += (np.sqrt(a * a * self._lam[j]) * z[rows]) @ self._V[j].T
        if self.active_basis is None:
            return y + np.sqrt(tau) * rng.standard_normal((n, self.dim))
        return y @ self.active_basis.T + np.sqrt(tau) * rng.standard_normal((n, self.dim))

    def mean_cov(self, tau):
        tau = checks.tau(tau)
        a = np.sqrt(1.0 - tau)
        m = a * self.means
        mean = self.weights @ m
        second = (np.einsum("k,ki,kj->ij", self.weights, m, m)
                  + a * a * np.einsum("k,kij->ij", self.weights, self.covariances) + tau * np.eye(self.dim))
        return mean, second - np.outer(mean, mean)


def SubspaceGaussianMixture(weights, means, covariances, basis):
    """A Gaussian mixture living in the r-dim subspace spanned by `basis` (d, r).

    `means` (M, r) and `covariances` (M, r, r) are given in the subspace coordinates; the
    result is the GaussianMixture in R^d with mu_k = U m_k, Sigma_k = U S_k U^T (a linear
    low-dimensional manifold), evaluated in O(n (r d + M r^2)).

    Parameters
    ----------
    weights : array_like (M,)
        A probability vector.
    means : array_like (M, r)
        Means in the subspace coordinates.
    covariances : array_like (M, r, r)
        PSD covariances in the subspace coordinates.
    basis : array_like (d, r)
        Orthonormal columns U spanning the subspace.

    Returns
    -------
    GaussianMixture
        With `active_basis` U, so jacobian="structured" applies.
    """
    means = checks.array(means, "means", ndim=2)
    covs = checks.array(covariances, "covariances", ndim=3)
    r = means.shape[1]
    U = checks.array(basis, "basis", ndim=2)
    if U.shape[1] != r:
        raise ValueError(f"basis must have shape (d, {r}) to match means, got {U.shape}")
    if covs.shape != (means.shape[0], r, r):
        raise ValueError(f"covariances must have shape ({means.shape[0]}, {r}, {r}), got {covs.shape}")
    U = checks.orthonormal(U, "basis", U.shape[0])
    return GaussianMixture(weights, means @ U.T, np.einsum("ip,kpq,jq->kij", U, covs, U), basis=U)
