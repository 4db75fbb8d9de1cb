"""Targets whose every noised marginal q_tau is known in closed form.

Convention (SPEC section 2): X(tau) = a X0 + sqrt(tau) Z with a = sqrt(1 - tau), Z ~ N(0, I_d).
Every target provides, for a batch x of shape (n, d) and a scalar tau in (0, 1):

    log_density(x, tau) -> (n,)        log q_tau(x)
    score(x, tau)       -> (n, d)      grad_x log q_tau(x)
    score_jacobian(x, tau) -> (n, d, d)
    sample(n, tau, rng) -> (n, d)      exact draws from q_tau
    mean_cov(tau)       -> (mean (d,), covariance (d, d)) of q_tau, in closed form

and, where the score Jacobian has the structure c I + Q G Q^T of SPEC section 5.3 (every
iterate of a sampler stays in span{U, x_in}), an orthonormal `active_basis` U (d, m0) and
`structured_jacobian(x, tau, Q) -> (c (n,), G (n, m, m))`.

Example
-------
>>> import numpy as np
>>> from theory_check import targets
>>> t = targets.make("gmm-iso", dim=2, seed=0)
>>> x = t.sample(4, 0.5, np.random.default_rng(1))
>>> t.score(x, 0.5).shape
(4, 2)
"""

import numpy as np
from scipy import special

from . import checks, kernels

__all__ = ["Target", "FunctionTarget", "from_functions", "IsotropicGaussianMixture", "PointCloud", "GaussianMixture",
           "SubspaceGaussianMixture", "Sphere", "Perturbed", "circle", "swiss_roll", "torus", "make", "NAMES"]

LOG_2PI = np.log(2.0 * np.pi)


class Target:
    """Base class of every target: subclass it to bring your own score.

    Implement the public methods your metrics need, each for a batch x (n, d) and a scalar tau
    in (0, 1) (validated for you by the built-in targets; a subclass validates as it likes):

    ==========================  =======================================  ==============================
    method                      returns                                  needed by
    ==========================  =======================================  ==============================
    ``score(x, tau)``           s = grad log q_tau, (n, d)               every sampler
    ``score_jacobian(x, tau)``  grad s, (n, d, d)                        jacobian="full" (TV, KL)
    ``log_density(x, tau)``     log q_tau, (n,)                          TV, KL (`metrics.tv_kl`),
                                                                         init="exact"
    ``sample(n, tau, rng)``     exact draws from q_tau, (n, d)           init="exact", W2
    ==========================  =======================================  ==============================

    and set `dim`. `coupling_rmse` needs the score alone. A method you leave out raises
    `NotImplementedError` naming itself, and a metric that needs it says so. The built-in
    targets override the private fused path `_eval(x, tau, want_jac) -> (logq, s, J)` instead
    (one pass for all three); `active_basis` (d, m0) and `structured_jacobian` enable
    jacobian="structured" (SPEC 5.3). `targets.from_functions` wraps plain callables.

    Examples
    --------
    The standard normal law N(0, I_2), whose every marginal is N(0, I_2):

    >>> import numpy as np
    >>> class StdNormal(Target):
    ...     dim = 2
    ...     def score(self, x, tau):
    ...         return -np.asarray(x, float)
    ...     def score_jacobian(self, x, tau):
    ...         return -np.broadcast_to(np.eye(2), (len(x), 2, 2)).copy()
    ...     def log_density(self, x, tau):
    ...         return -0.5 * np.sum(np.square(x), axis=1) - np.log(2 * np.pi)
    ...     def sample(self, n, tau, rng):
    ...         return rng.standard_normal((n, 2))
    >>> StdNormal().score(np.ones((1, 2)), 0.5)
    array([[-1., -1.]])
    """

    dim: int
    active_basis = None
    diagonal = False        # True: the score Jacobian is diagonal (products; jacobian="diagonal")

    # -- public API: validate, then evaluate --------------------------------------------------
    def log_density(self, x, tau):
        """log q_tau(x), shape (n,)."""
        x, tau = checks.batch(x, self.dim), checks.tau(tau)
        lq = self._eval(x, tau, False)[0]
        if lq is None:
            raise NotImplementedError(f"{type(self).__name__} has no log_density(x, tau): TV, KL and init='exact' need it")
        return self._finite(lq, "log_density", tau)

    def score(self, x, tau):
        """s(x, tau) = grad_x log q_tau(x), shape (n, d)."""
        x, tau = checks.batch(x, self.dim), checks.tau(tau)
        return self._finite(self._eval(x, tau, False)[1], "score", tau)

    def score_jacobian(self, x, tau):
        """grad_x s(x, tau), shape (n, d, d)."""
        x, tau = checks.batch(x, self.dim), checks.tau(tau)
        return self._finite(self._eval(x, tau, True)[2], "score_jacobian", tau)

    def score_and_jacobian(self, x, tau):
        """(score, score Jacobian) from one fused evaluation."""
        x, tau = checks.batch(x, self.dim), checks.tau(tau)
        _, s, J = self._eval(x, tau, True)
        return self._finite(s, "score", tau), self._finite(J, "score_jacobian", tau)

    def _finite(self, v, what, tau):
        """Public results are finite or an error, never a silent NaN or inf."""
        if not checks.all_finite(v):
            i = int(np.argmax(~np.isfinite(v).reshape(len(v), -1).all(axis=1)))
            raise ValueError(f"x: {type(self).__name__}.{what} is not finite at sample {i} (tau = {tau:.6g}); "
                             "the point lies where the closed form leaves float64's range")
        return v

    def sample(self, n, tau, rng):
        """n exact draws from q_tau, shape (n, d); rng a numpy Generator or a seed."""
        n = checks.integer(n, "n", minimum=1)
        return self._sample(n, checks.tau(tau), checks.rng(rng, "rng"))

    def structured_jacobian(self, x, tau, Q):
        """(c, G) with score_jacobian(x) = c I + Q G Q^T, valid for x in span Q and U in span Q."""
        if self.active_basis is None:
            raise ValueError(f"{type(self).__name__} has no active_basis: use jacobian='full'")
        x, tau = checks.batch(x, self.dim), checks.tau(tau)
        Q = checks.array(Q, "Q", shape=(x.shape[0], self.dim, None))
        return self._structured(x, tau, Q)[1:]

    # -- the fused path the samplers call; a user's subclass inherits these defaults -----------
    def _overrides(self, name):
        return getattr(type(self), name) is not getattr(Target, name)

    def _eval(self, x, tau, want_jac):
        """(log q or None, s, J or None) from the public methods of a user's subclass."""
        if not self._overrides("score"):
            raise NotImplementedError(f"{type(self).__name__} must implement score(x, tau) (or _eval)")
        s = np.asarray(self.score(x, tau), dtype=np.float64)
        if s.shape != x.shape:
            raise ValueError(f"{type(self).__name__}.score returned shape {s.shape}, expected {x.shape}")
        J = None
        if want_jac:
            if not self._overrides("score_jacobian"):
                raise NotImplementedError(f"{type(self).__name__} has no score_jacobian(x, tau): jacobian='full' "
                                          "(and so TV and KL) needs it; without it use metrics coupling or w2 (jacobian='none')")
            J = np.asarray(self.score_jacobian(x, tau), dtype=np.float64)
            if J.shape != (*x.shape, x.shape[1]):
                raise ValueError(f"{type(self).__name__}.score_jacobian returned shape {J.shape}, "
                                 f"expected {(*x.shape, x.shape[1])}")
        return None, s, J

    def _sample(self, n, tau, rng):
        if not self._overrides("sample"):
            raise NotImplementedError(f"{type(self).__name__} has no sample(n, tau, rng): init='exact' and W2 need "
                                      "exact draws from q_tau (use init='gaussian')")
        return np.asarray(self.sample(n, tau, rng), dtype=np.float64)

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim})"


class FunctionTarget(Target):
    """A target from plain callables (see `from_functions`)."""

    def __init__(self, dim, score, score_jacobian=None, log_density=None, sample=None, name=None):
        self.dim = checks.integer(dim, "dim", minimum=1)
        for n_, f in (("score", score), ("score_jacobian", score_jacobian), ("log_density", log_density),
                      ("sample", sample)):
            if f is not None and not callable(f):
                raise ValueError(f"{n_} must be callable, got {type(f).__name__}")
        if score is None:
            raise ValueError("score must be given")
        self._fns = dict(score=score, score_jacobian=score_jacobian, log_density=log_density, sample=sample)
        self.name = name or getattr(score, "__qualname__", "score")

    def _call(self, which, *args):
        f = self._fns[which]
        if f is None:
            need = {"score_jacobian": "jacobian='full' (TV, KL) needs it; metrics coupling and w2 (jacobian='none') do not",
                    "log_density": "TV, KL and init='exact' need it",
                    "sample": "init='exact' and W2 need exact draws (use init='gaussian')"}[which]
            raise NotImplementedError(f"target {self.name!r} has no {which}: {need}")
        n = args[0] if which == "sample" else len(args[0])
        shape = {"score": (n, self.dim), "score_jacobian": (n, self.dim, self.dim), "log_density": (n,),
                 "sample": (n, self.dim)}[which]
        v = np.asarray(f(*args))
        if not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v) or v.dtype == bool:
            raise ValueError(f"{which}: the callable of target {self.name!r} returned {v.dtype} values; "
                             "it must return real numbers")
        if v.shape != shape:
            raise ValueError(f"{which}: the callable of target {self.name!r} returned shape {v.shape}, expected "
                             f"{shape}" + (" (one value per sample)" if which == "log_density" else ""))
        v = v.astype(np.float64)
        if which == "log_density" and np.isposinf(v).any():
            raise ValueError(f"log_density: the callable of target {self.name!r} returned +inf (a density must be finite)")
        return v

    def _eval(self, x, tau, want_jac):
        s = self._call("score", x, tau)
        J = self._call("score_jacobian", x, tau) if want_jac else None
        return None, s, J

    def log_density(self, x, tau):
        x, tau = checks.batch(x, self.dim), checks.tau(tau)
        return self._call("log_density", x, tau)

    def _sample(self, n, tau, rng):
        return self._call("sample", n, tau, rng)

    def __repr__(self):
        return f"from_functions(dim={self.dim}, score={self.name})"


def from_functions(dim, score, score_jacobian=None, log_density=None, sample=None, name=None):
    """A `Target` from plain callables: score(x, tau) -> (n, d), and optionally
    score_jacobian(x, tau) -> (n, d, d), log_density(x, tau) -> (n,), sample(n, tau, rng) -> (n, d).

    Samplers need the score only; jacobian="full" (so TV and KL) needs score_jacobian; TV and KL
    need log_density; init="exact" and W2 need sample. A run or metric that needs a missing piece
    raises an error that names it.

    Examples
    --------
    >>> import numpy as np
    >>> from theory_check import samplers, schedules
    >>> t = from_functions(3, score=lambda x, tau: -x)          # N(0, I): s = -x at every tau
    >>> out = samplers.DDIM().run(t, schedules.log_snr(4), np.ones((2, 3)))
    >>> out.nfe
    4
    """
    return FunctionTarget(dim, score, score_jacobian, log_density, sample, name)


def _project(x, Q):
    """Coordinates of x in the per-sample basis Q (n, d, m) and the residual x - Q Q^T x.
    (Batched matmuls rather than einsum: they go through BLAS, which matters at d ~ 10^3.)"""
    xq = np.matmul(x[:, None, :], Q)[:, 0, :]
    resid = x - np.matmul(Q, xq[:, :, None])[:, :, 0]
    return xq, resid


def _basis_overlap(Q, U):
    """Q^T U per sample: (n, m, r)."""
    return np.matmul(np.swapaxes(Q, 1, 2), U)


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


class PointCloud(IsotropicGaussianMixture):
    """The uniform law on given points (finite support): an isotropic mixture with sigma_k = 0."""

    def __init__(self, points):
        points = checks.array(points, "points", ndim=2)
        if points.shape[0] == 0:
            raise ValueError("points must contain at least one point")
        M = points.shape[0]
        super().__init__(np.full(M, 1.0 / M), points, np.zeros(M))


def _embedding(dim, k, seed, name):
    """A seeded random orthonormal map R^k -> R^dim (dim x k)."""
    if dim < k:
        raise ValueError(f"dim must be >= {k} for the {name} target, got {dim}")
    G = checks.rng(seed).standard_normal((dim, k))
    Qm, R = np.linalg.qr(G)
    return Qm * np.sign(np.diag(R))


def circle(dim, n_points=32, radius=2.0, seed=0):
    """n_points equally spaced on a circle of given radius, embedded in R^dim.

    Parameters
    ----------
    dim : int
        Ambient dimension d; the points are embedded by a seeded random orthonormal map.
    n_points : int
        Number of points (the target is the uniform law on them: finite support).
    radius : float
        Radius of the circle.
    seed : int
        Seed of the embedding.

    Returns
    -------
    PointCloud
    """
    dim = checks.integer(dim, "dim", minimum=1)
    n_points = checks.integer(n_points, "n_points", minimum=1)
    radius = checks.positive(radius, "radius")
    theta = 2.0 * np.pi * np.arange(n_points) / n_points
    pts = radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return PointCloud(pts @ _embedding(dim, 2, seed, "circle").T)


def swiss_roll(dim, n_points=64, seed=0):
    """n_points on a swiss roll (a 2-manifold in R^3), scaled to radius ~2, embedded in R^dim.
    Parameters as for `circle` (no radius); `seed` also draws the points. Returns a `PointCloud`."""
    dim = checks.integer(dim, "dim", minimum=1)
    n_points = checks.integer(n_points, "n_points", minimum=1)
    E = _embedding(dim, 3, seed, "swiss-roll")
    u = np.random.default_rng([seed, 1]).random((n_points, 2))
    t = 1.5 * np.pi * (1.0 + 2.0 * u[:, 0])
    pts = np.stack([t * np.cos(t), 10.0 * u[:, 1] - 5.0, t * np.sin(t)], axis=1) / 7.0
    return PointCloud(pts @ E.T)


def torus(dim, n_points=64, R=2.0, r=0.7, seed=0):
    """n_points on a torus with radii R > r > 0 (a 2-manifold in R^3), embedded in R^dim.
    Parameters as for `circle`, with the major and minor radii R > r > 0 instead of the radius;
    `seed` also draws the points. Returns a `PointCloud`."""
    dim = checks.integer(dim, "dim", minimum=1)
    n_points = checks.integer(n_points, "n_points", minimum=1)
    R, r = checks.positive(R, "R"), checks.positive(r, "r")
    if r >= R:
        raise ValueError(f"r must be < R for a torus, got r={r}, R={R}")
    E = _embedding(dim, 3, seed, "torus")
    u = 2.0 * np.pi * np.random.default_rng([seed, 2]).random((n_points, 2))
    pts = np.stack([(R + r * np.cos(u[:, 1])) * np.cos(u[:, 0]),
                    (R + r * np.cos(u[:, 1])) * np.sin(u[:, 0]),
                    r * np.sin(u[:, 1])], axis=1)
    return PointCloud(pts @ E.T)


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

    With y the subspace coordinates of x, kappa = a r |y| / tau and nu = k/2 - 1 (SPEC section 3):
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


class Perturbed(Target):
    """A score estimate s_hat = s + delta with a smooth, seeded, bounded error field (the score-error
    setting of Li, Zhou, Wei & Chen, "Faster Diffusion Models via Higher-Order Approximation",
    arXiv:2506.24042, 2025).

    delta(x, tau) = eps tau^{-1/2} h(x), h(x) = R tanh(A x + b), R scaled so that E|h(X)|^2 = 1
    for X ~ q_{1e-3} of the base (estimated once from 4096 exact draws). `score` and the
    Jacobians are those of s_hat; `log_density` and `sample` are the truth (the base), so
    metrics measure the sampler's error against q_tau. Each score evaluation appends
    (tau, batch size, sum |delta|^2, sum |grad delta|_F^2) over the batch to `records`.
    """

    def __init__(self, base, eps, seed=0, width=None):
        if not isinstance(base, Target):
            raise ValueError(f"base must be a Target, got {type(base).__name__}")
        self.base, self.dim = base, base.dim
        self.eps = checks.positive(eps, "eps", allow_zero=True)
        width = max(self.dim, 8) if width is None else checks.integer(width, "width", minimum=1)
        rng = checks.rng(seed)
        x0 = base.sample(4096, 1e-3, np.random.default_rng([checks.integer(seed, "seed"), 7]))
        scale = np.sqrt(np.mean(np.sum(x0 * x0, axis=1)) / self.dim) + 1e-12
        self.A = rng.standard_normal((width, self.dim)) / (scale * np.sqrt(self.dim))
        self.b = rng.standard_normal(width)
        R = rng.standard_normal((self.dim, width))
        h = np.tanh(x0 @ self.A.T + self.b) @ R.T
        self.R = R / np.sqrt(np.mean(np.sum(h * h, axis=1)))
        self.records = []

    def log_density(self, x, tau):
        return self.base.log_density(x, tau)

    def __repr__(self):
        return f"Perturbed({self.base!r}, eps={self.eps:g})"

    def _delta(self, x, tau, want_jac):
        t = np.tanh(x @ self.A.T + self.b)
        f = self.eps / np.sqrt(tau)
        # R diag(1 - t^2) A per sample as one batched GEMM (a three-operand einsum loops in C: O(n d^2 p)
        # without BLAS, which made d = 2048 run for minutes per chunk)
        dJ = f * np.matmul(self.R * (1.0 - t * t)[:, None, :], self.A) if want_jac else None
        return f * t @ self.R.T, dJ

    def _record(self, tau, delta, dJ):
        jerr = float(np.sum(dJ * dJ)) if dJ is not None else np.nan
        self.records.append((tau, len(delta), float(np.sum(delta * delta)), jerr))

    def _eval(self, x, tau, want_jac):
        logq, s, J = self.base._eval(x, tau, want_jac)
        delta, dJ = self._delta(x, tau, want_jac)
        self._record(tau, delta, dJ)
        return logq, s + delta, (J + dJ) if want_jac else J

    def _sample(self, n, tau, rng):
        return self.base._sample(n, tau, rng)

    def mean_cov(self, tau):
        return self.base.mean_cov(tau)

    def score_error(self):
        """Realised errors over the recorded evaluations: (mean |s_hat - s|^2, mean |grad error|_F^2),
        averaged over every (evaluation, sample) pair, so a batch run in chunks gives the same."""
        if not self.records:
            raise ValueError("no score evaluations recorded yet")
        rec = np.array(self.records)
        has_jac = np.isfinite(rec[:, 3])
        jerr = float(rec[has_jac, 3].sum() / rec[has_jac, 1].sum()) if has_jac.any() else np.nan
        return float(rec[:, 2].sum() / rec[:, 1].sum()), jerr


# -- named benchmark instances -----------------------------------------------------------------

NAMES = ("gmm-iso", "gmm-aniso", "circle", "swiss-roll", "torus", "sphere", "subspace-gmm",
         "rademacher-cube", "uniform-cube", "product-gmm")


def _spread_means(dim, M, radius, rng):
    """M well-separated means of norm `radius`: orthogonal directions when dim >= M, else
    equally spaced on a randomly rotated circle (dim >= 2) or on a line (dim = 1)."""
    if dim == 1:
        return np.linspace(-radius, radius, M)[:, None]
    if dim >= M:
        E, _ = np.linalg.qr(rng.standard_normal((dim, M)))
        return radius * E.T
    E, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
    theta = 2 * np.pi * np.arange(M) / M
    return radius * np.stack([np.cos(theta), np.sin(theta)], 1) @ E.T


def _random_cov(dim, cond, rng):
    lam = np.logspace(0.0, -np.log10(cond), dim) if dim > 1 else np.ones(1)
    R, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (R * lam) @ R.T


def make(name, dim, seed=0, **params):
    """A named benchmark instance in R^dim, deterministic in `seed`.

    gmm-iso       4 well-separated isotropic modes, weights .4/.3/.2/.1, sd .2/.3/.45/.6
    gmm-aniso     3 modes with full random covariances of condition number 100 (d >= 2)
    circle        32 points on a circle of radius 2 (dim >= 2)
    swiss-roll    64 points on a swiss roll (dim >= 3)
    torus         64 points on a torus R=2, r=0.7 (dim >= 3)
    sphere        uniform on S^{k-1}, k = min(dim, 3), radius 2, random subspace
    subspace-gmm  3 full-covariance modes in a random r = min(dim, 3) dim subspace
    rademacher-cube, uniform-cube, product-gmm
                  product targets (`products.make`, SPEC 9): d non-Gaussian directions

    Parameters
    ----------
    name : str
        One of `NAMES`.
    dim : int
        Dimension d.
    seed : int
        Seed of the instance (means, covariances, embeddings; the products have none).
    **params
        The product families' shape parameters (`products.PARAMS`: scale, width).

    Returns
    -------
    Target

    Examples
    --------
    >>> make("sphere", 5, seed=1)
    Sphere(dim=5, k=3, radius=2)
    """
    if name not in NAMES:
        raise ValueError(f"name must be one of {', '.join(NAMES)}; got {name!r}")
    dim = checks.integer(dim, "dim", minimum=1)
    rng = checks.rng(seed)
    from . import products          # products builds on Target: imported here, not at the top
    allowed = products.PARAMS.get(name, ())
    bad = sorted(set(params) - set(allowed))
    if bad:
        raise ValueError(f"target_args: {bad[0]} is not a parameter of {name} "
                         f"({', '.join(allowed) if allowed else 'it takes none'})")
    if name in products.NAMES:
        return products.make(name, dim, **params)
    if name == "gmm-iso":
        return IsotropicGaussianMixture([0.4, 0.3, 0.2, 0.1], _spread_means(dim, 4, 3.0, rng),
                                        np.array([0.2, 0.3, 0.45, 0.6]) ** 2)
    if name == "gmm-aniso":
        means = 1.5 * rng.standard_normal((3, dim)) / np.sqrt(max(dim, 1) / 2.0)
        covs = np.array([_random_cov(dim, 100.0, rng) for _ in range(3)])
        return GaussianMixture([0.5, 0.3, 0.2], means, covs)
    if name == "circle":
        return circle(dim, 32, 2.0, seed)
    if name == "swiss-roll":
        return swiss_roll(dim, 64, seed)
    if name == "torus":
        return torus(dim, 64, 2.0, 0.7, seed)
    if name == "sphere":
        k = min(dim, 3)
        return Sphere(dim, k, 2.0, basis=_embedding(dim, k, seed, "sphere"))
    r = min(dim, 3)
    U = _embedding(dim, r, seed, "subspace-gmm")
    means = _spread_means(r, 3, 2.0, rng)
    covs = np.array([0.3 * _random_cov(r, 10.0, rng) for _ in range(3)])
    return SubspaceGaussianMixture([0.5, 0.3, 0.2], means, covs, U)
