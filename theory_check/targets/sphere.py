"""The uniform law on a sphere S^{k-1} in a k-dimensional subspace of R^d (SPEC 3), with the
exponentially scaled Bessel functions its density and score need."""

import numpy as np
from scipy import special

from .. import checks
from .base import LOG_2PI, Target, _basis_overlap

__all__ = ["Sphere"]


def _large_kappa(nu):
    """Where Hankel's expansion is used: its m-th term shrinks by (4 nu^2 - (2m-1)^2) / (8 m kappa),
    at most 1/(4m) here, so 40 terms reach rounding."""
    return max(1e3, 0.5 * nu * nu)


def _bessel_ratio(nu, kappa):
    """(log ive(nu, kappa) = log I_nu(kappa) - kappa, A = I_{nu+1}/I_nu, dA/dkappa) for kappa > 0.

    Three regimes, each accurate to ~1e-14 relative (tests: against mpmath):
    * scipy's exponentially scaled `ive` where it is finite and above 1e-290;
    * where ive underflows (kappa small against nu, e.g. nu = 200, kappa = 1): the power series
      I_nu(k) = (k/2)^nu / Gamma(nu+1) sum_m (k^2/4)^m Gamma(nu+1) / (m! Gamma(nu+m+1)) in logs;
    * kappa >= max(1e3, nu^2 / 2): Hankel's expansion ive(nu, k) = (2 pi k)^(-1/2) sum_m (-1)^m a_m(nu) / k^m,
      a_m = prod_{j<=m} (4 nu^2 - (2j-1)^2) / (m! 8^m), with dA from the series' derivatives
      (the identity dA = 1 - A^2 - (2 nu + 1) A / kappa cancels catastrophically there; scipy's
      ive itself returns NaN from kappa ~ 1e12 on).
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    with np.errstate(all="ignore"):
        i0, i1 = special.ive(nu, kappa), special.ive(nu + 1.0, kappa)
        log_ive = np.log(i0)
        A = i1 / i0
        dA = 1.0 - A * A - (2.0 * nu + 1.0) * A / kappa
    under = ~(np.isfinite(i0) & np.isfinite(i1)) | (i0 < 1e-290) | (i1 < 1e-290)
    under &= kappa < _large_kappa(nu)
    if np.any(under):
        kk = kappa[under]
        q = 0.25 * kk * kk

        def series(n):
            t, S = np.ones_like(kk), np.ones_like(kk)
            for m in range(1, 400):
                t = t * q / (m * (n + m))
                S = S + t
                if np.all(t <= 1e-17 * S):
                    break
            return S

        S0, S1 = series(nu), series(nu + 1.0)
        log_ive[under] = nu * np.log(0.5 * kk) - special.gammaln(nu + 1.0) + np.log(S0) - kk
        A[under] = 0.5 * kk / (nu + 1.0) * S1 / S0
        dA[under] = 1.0 - A[under] ** 2 - (2.0 * nu + 1.0) * A[under] / kk
    big = kappa >= _large_kappa(nu)
    if np.any(big):
        kk = kappa[big]

        def hankel(n):
            mu, term, S, dS = 4.0 * n * n, np.ones_like(kk), np.ones_like(kk), np.zeros_like(kk)
            for m in range(1, 40):
                term = -term * (mu - (2 * m - 1) ** 2) / (m * 8.0 * kk)
                S, dS = S + term, dS - m * term / kk
            return S, dS

        (S0, dS0), (S1, dS1) = hankel(nu), hankel(nu + 1.0)
        log_ive[big] = -0.5 * np.log(2.0 * np.pi * kk) + np.log(S0)
        A[big] = S1 / S0
        dA[big] = (dS1 * S0 - S1 * dS0) / (S0 * S0)
    return log_ive, A, dA


class Sphere(Target):
    """The uniform law on the sphere S^{k-1} of radius r in a k-dim subspace of R^dim.

    With y the subspace coordinates of x, kappa = a r |y| / tau and nu = k/2 - 1 (SPEC section 3)::

        log q = -(d/2) log(2 pi tau) - (|x|^2 + a^2 r^2)/(2 tau) + log Gamma(k/2) - nu log(kappa/2)
                + log I_nu(kappa),
        s = -x/tau + (a r/tau) A_k(kappa) y/|y|,  A_k = I_{k/2} / I_{k/2-1}.

    Bessel functions are exponentially scaled (scipy.special.ive); the Gaussian part and
    kappa are combined as -(|x_perp|^2 + (|y| - a r)^2)/(2 tau) to avoid cancellation at small tau.
    """

    _SMALL = 1e-6   # below this kappa, use the series I_nu(k) ~ (k/2)^nu / Gamma(nu+1) (rel. err ~ k^2)

    def __init__(self, dim, k, radius=1.0, basis=None):
        self.dim = checks.integer(dim, "dim", minimum=1)
        self.k = checks.integer(k, "k", minimum=1)
        if self.k > self.dim:
            raise ValueError(f"k must be <= dim, got k={self.k} > dim={self.dim}")
        self.radius = checks.positive(radius, "radius")
        if basis is None:
            basis = np.eye(self.dim)[:, :self.k]
        basis = checks.orthonormal(basis, "basis", self.dim)
        if basis.shape[1] != self.k:
            raise ValueError(f"basis must have shape ({self.dim}, {self.k}), got {basis.shape}")
        self.active_basis = basis

    def _radial(self, rho, tau):
        """log-normaliser part, A/rho and dA/dkappa as functions of rho = |y|."""
        a, r, k = np.sqrt(1.0 - tau), self.radius, self.k
        nu = 0.5 * k - 1.0
        kappa = a * r * rho / tau
        small = kappa < self._SMALL
        ks = np.where(small, 1.0, kappa)
        log_ive, A, dA = _bessel_ratio(nu, ks)
        # log I_nu(kappa) - kappa - nu log(kappa/2) (the +kappa is folded into the Gaussian part)
        logb = np.where(small, -special.gammaln(nu + 1.0) + kappa ** 2 / (4 * (nu + 1.0)) - kappa,
                        log_ive - nu * np.log(ks / 2.0))
        A = np.where(small, kappa / k, A)
        A_over_rho = np.where(small, a * r / (tau * k), A / np.where(small, 1.0, rho))
        dA = np.where(small, 1.0 / k, dA)
        return logb, A_over_rho, dA

    def _parts(self, x, tau):
        y = x @ self.active_basis
        rho = np.sqrt(np.einsum("nk,nk->n", y, y))
        return y, rho

    def _eval(self, x, tau, want_jac):
        a, r, d = np.sqrt(1.0 - tau), self.radius, self.dim
        U = self.active_basis
        y, rho = self._parts(x, tau)
        logb, A_over_rho, dA = self._radial(rho, tau)
        xp2 = np.einsum("nd,nd->n", x, x) - rho ** 2
        logq = (-0.5 * d * (LOG_2PI + np.log(tau)) - 0.5 * (np.maximum(xp2, 0.0) + (rho - a * r) ** 2) / tau
                + special.gammaln(0.5 * self.k) + logb)
        coef = a * r / tau
        s = -x / tau + (coef * A_over_rho)[:, None] * (y @ U.T)
        J = np.empty((0, d, d))
        if want_jac:
            ue = (y / np.where(rho > 0, rho, 1.0)[:, None]) @ U.T
            J = (-np.eye(d) / tau + (coef * A_over_rho)[:, None, None] * (U @ U.T)[None]
                 + (coef * (coef * dA - A_over_rho))[:, None, None] * ue[:, :, None] * ue[:, None, :])
        return logq, s, J

    def _structured(self, x, tau, Q):
        a, r, U = np.sqrt(1.0 - tau), self.radius, self.active_basis
        y, rho = self._parts(x, tau)
        _, A_over_rho, dA = self._radial(rho, tau)
        coef = a * r / tau
        s = -x / tau + (coef * A_over_rho)[:, None] * (y @ U.T)
        QU = _basis_overlap(Q, U)
        uq = np.matmul(QU, (y / np.where(rho > 0, rho, 1.0)[:, None])[:, :, None])[:, :, 0]
        G = ((coef * A_over_rho)[:, None, None] * (QU @ np.swapaxes(QU, 1, 2))
             + (coef * (coef * dA - A_over_rho))[:, None, None] * uq[:, :, None] * uq[:, None, :])
        return s, np.full(x.shape[0], -1.0 / tau), G

    def __repr__(self):
        return f"Sphere(dim={self.dim}, k={self.k}, radius={self.radius:g})"

    def _sample(self, n, tau, rng):
        u = rng.standard_normal((n, self.k))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        a = np.sqrt(1.0 - tau)
        return a * self.radius * u @ self.active_basis.T + np.sqrt(tau) * rng.standard_normal((n, self.dim))

    def mean_cov(self, tau):
        tau = checks.tau(tau)
        U = self.active_basis
        return np.zeros(self.dim), (1.0 - tau) * self.radius ** 2 / self.k * U @ U.T + tau * np.eye(self.dim)
