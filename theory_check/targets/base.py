"""The target contract: `Target`, the base of every target (subclass it to bring your own score),
and `from_functions` for plain callables; with the helpers of the structured Jacobian mode
(SPEC 5.3) that the mixtures and the sphere share."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import checks

__all__ = ["LOG_2PI", "Target", "FunctionTarget", "from_functions"]

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


def from_functions(dim: int, score: Callable, score_jacobian: Callable | None = None, log_density: Callable | None = None,
                   sample: Callable | None = None, name: str | None = None) -> FunctionTarget:
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
