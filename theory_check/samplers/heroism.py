"""HEROISM: K-point Lagrange interpolation of the score with N refinement sweeps (SPEC 5.1).

Li, Zhou, Wei & Chen, "Faster Diffusion Models via Higher-Order Approximation",
arXiv:2506.24042 (2025), Algorithm 1, in our reading; `K="log"` is the growing-order setting of
the follow-up paper (arXiv:2606.10353).
"""

import functools
import math

import numpy as np

from .. import checks
from .base import Sampler, a_of, fused

__all__ = ["Heroism", "lagrange_kappa_weights", "step_nodes"]


def lagrange_kappa_weights(nodes):
    """W[j, i] = int_{u_j}^{u_0} l_i(u) kappa(u) du for the Lagrange basis l_i on `nodes`
    (u_0 > u_1 > ... , all in (0, 1)), and W0[j] = int_{u_j}^{u_0} kappa = 1/a(u_0) - 1/a(u_j),
    with kappa(u) = 1 / (2 (1 - u)^{3/2}).

    Computed in nu = log(1 - u), where kappa du = -(1/2) e^{-nu/2} d nu and the integrand is an
    entire function of nu; composite Gauss-Legendre with panels of width <= 1/4 and K + 20 points
    each is then exact to rounding for any step (a plain rule in u is not: kappa has a
    singularity at u = 1, close to the first steps).

    Examples
    --------
    >>> W, W0 = lagrange_kappa_weights([0.5, 0.45, 0.4])
    >>> bool(abs(W[2].sum() - W0[2]) < 1e-14)
    True
    """
    u = np.asarray(nodes, dtype=np.float64)
    K = len(u)
    nu = np.log1p(-u)
    t, w = np.polynomial.legendre.leggauss(K + 20)
    W = np.zeros((K, K))
    for j in range(1, K):
        lo, hi = nu[0], nu[j]                        # nu[0] < nu[j]
        panels = max(1, int(math.ceil((hi - lo) / 0.25)))
        edges = np.linspace(lo, hi, panels + 1)
        half = 0.5 * np.diff(edges)
        v = (0.5 * (edges[:-1] + edges[1:])[:, None] + half[:, None] * t[None, :]).ravel()
        wt = (half[:, None] * w[None, :]).ravel() * 0.5 * np.exp(-0.5 * v)
        uu = -np.expm1(v)
        for i in range(K):
            li = np.ones_like(uu)
            for m in range(K):
                if m != i:
                    li *= (uu - u[m]) / (u[i] - u[m])
            W[j, i] = wt @ li
    W0 = 1.0 / np.sqrt(1.0 - u[0]) - 1.0 / np.sqrt(1.0 - u)
    return W, W0


def step_nodes(tau_hi, tau_lo, K, kind):
    """K nodes u_0 = tau_hi > ... > u_{K-1} = tau_lo, equispaced in tau or Chebyshev-Lobatto.

    Parameters
    ----------
    tau_hi, tau_lo : float
        The step's end points, tau_hi > tau_lo.
    K : int
    kind : {"equispaced", "chebyshev"}

    Returns
    -------
    ndarray (K,)

    Examples
    --------
    >>> step_nodes(0.5, 0.3, 3, "chebyshev").round(12).tolist()
    [0.5, 0.4, 0.3]
    """
    if K == 1:
        return np.array([tau_hi])
    j = np.arange(K)
    if kind == "equispaced":
        u = tau_hi + (tau_lo - tau_hi) * j / (K - 1)
    else:
        u = 0.5 * (tau_hi + tau_lo) + 0.5 * (tau_hi - tau_lo) * np.cos(np.pi * j / (K - 1))
    u[0], u[-1] = tau_hi, tau_lo
    return u


@functools.lru_cache(maxsize=4096)
def _heroism_coefficients(tau_hi, tau_lo, K, kind):
    """Nodes u (K,) of a step and the coefficients C of its node updates: row j - 1 holds
    [a_j / a_0, a_j W_j0, ..., a_j W_j,K-1] for j = 1..K-1. For K = 1, the one row
    [a_lo / a_hi, a_lo W0] of the exponential Euler step to tau_lo. Cached (read-only) because
    every chunk of a batch takes the same steps."""
    u = step_nodes(tau_hi, tau_lo, K, kind)
    if K == 1:
        a_hi, a_lo = a_of(tau_hi), a_of(tau_lo)
        C = np.array([[a_lo / a_hi, a_lo * (1.0 / a_hi - 1.0 / a_lo)]])
    else:
        W, _ = lagrange_kappa_weights(u)
        a = np.sqrt(1.0 - u)
        C = np.concatenate([(a[1:] / a[0])[:, None], a[1:, None] * W[1:]], axis=1)
    u.flags.writeable = C.flags.writeable = False
    return u, C


class Heroism(Sampler):
    """HEROISM of order K with N refinement sweeps (Li, Zhou, Wei & Chen, "Faster Diffusion Models
    via Higher-Order Approximation", arXiv:2506.24042, 2025, Algorithm 1 in our reading).

    On each step tau_hi -> tau_lo, with nodes u_0 = tau_hi > ... > u_{K-1} = tau_lo:

        predictor   g_0 = s(x, tau_hi),  y_j = a(u_j) [x/a(tau_hi) + W0_j g_0]
        sweep n     g_i = s(y_i, u_i) (i >= 1),  y_j = a(u_j) [x/a(tau_hi) + sum_i W_ji g_i]

    where W_ji = int_{u_j}^{tau_hi} l_i kappa (exact Lagrange-interpolant integration). "jacobi"
    evaluates all g_i at the previous sweep's y; "gauss-seidel" updates y_j for j = 1..K-1 in turn
    and evaluates g_j at the new y_j at once (the first sweep starts from g_i = g_0). The output is
    y_{K-1} after N sweeps; NFE per step = 1 + N (K - 1). K = 1 is the exponential Euler step
    with the score held constant in tau.

    Parameters
    ----------
    K : int or "log"
        Interpolation points per step, 1..MAX_K. "log" is the follow-up paper's growing order
        (arXiv:2606.10353): K = min(MAX_K, max(2, ceil(log T))) with T the number of steps.
    N : int, "paper" or None
        Refinement sweeps. None: N = K. "paper": N = max(1, ceil(log T)) (the theorem's
        N = C log T with C = 1).
    nodes : {"equispaced", "chebyshev"}
        Equispaced in tau, or Chebyshev-Lobatto.
    sweep : {"jacobi", "gauss-seidel"}

    Examples
    --------
    >>> import numpy as np
    >>> from theory_check import targets, schedules
    >>> t = targets.make("gmm-iso", 2, 0)
    >>> x = t.sample(8, 0.999, np.random.default_rng(0))
    >>> out = Heroism(K=3, N=2).run(t, schedules.log_snr(10), x)
    >>> out.nfe
    50
    """

    MAX_K = 12   # beyond this the Lagrange weights amplify rounding (Lebesgue constant) too much

    def __init__(self, K=3, N=None, nodes="equispaced", sweep="jacobi"):
        if K != "log":
            K = checks.integer(K, "K", minimum=1)
            if K > self.MAX_K:
                raise ValueError(f"K must be <= {self.MAX_K}: higher-order Lagrange weights are numerically unstable")
        self.K = K
        self.N = N if N in ("paper", None) else checks.integer(N, "N", minimum=0)
        if nodes not in ("equispaced", "chebyshev"):
            raise ValueError(f"nodes must be 'equispaced' or 'chebyshev', got {nodes!r}")
        if sweep not in ("jacobi", "gauss-seidel"):
            raise ValueError(f"sweep must be 'jacobi' or 'gauss-seidel', got {sweep!r}")
        self.nodes, self.sweep = nodes, sweep

    def order_K(self, steps):
        """K used for a run of `steps` steps."""
        if self.K == "log":
            return min(self.MAX_K, max(2, int(math.ceil(math.log(steps)))))
        return self.K

    def sweeps(self, steps):
        """N used for a run of `steps` steps."""
        if self.N == "paper":
            return max(1, int(math.ceil(math.log(steps))))
        return self.order_K(steps) if self.N is None else self.N

    def nfe(self, steps):
        K = self.order_K(steps)
        return steps * (1 if K == 1 else 1 + self.sweeps(steps) * (K - 1))

    def integrate(self, target, taus, x, Dx, tan, out):
        K, N = self.order_K(len(taus) - 1), self.sweeps(len(taus) - 1)
        for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
            u, C = _heroism_coefficients(tau_hi, tau_lo, K, self.nodes)
            g0, Dg0 = tan.score(x, tau_hi, Dx)
            g, Dg = [g0] * K, [Dg0] * K
            y = np.empty((K - 1, *x.shape))
            Dy = [None] * K

            def update(j0, j1):
                # y_j = a_j [x/a_0 + sum_i W_ji g_i], j0 <= j < j1, in one pass over the samples
                fused(C[j0 - 1:j1 - 1], (x, *g), y[j0 - 1:j1 - 1])
                for j in range(j0, j1):
                    Dy[j] = tan.lin(list(C[j - 1]), [Dx] + Dg)

            for _ in range(N if K > 1 else 0):
                if self.sweep == "jacobi":
                    update(1, K)
                    evals = [tan.score(y[j - 1], u[j], Dy[j]) for j in range(1, K)]
                    for j in range(1, K):
                        g[j], Dg[j] = evals[j - 1]
                else:
                    for j in range(1, K):
                        update(j, j + 1)
                        g[j], Dg[j] = tan.score(y[j - 1], u[j], Dy[j])
            # the step's output y_{K-1} from the final g (for K = 1, the one row of C); the
            # run's last step writes it into `out`
            x_lo = out if tau_lo == taus[-1] else np.empty_like(x)
            fused(C[-1:], (x, *g), x_lo[None])
            x, Dx = x_lo, tan.lin(list(C[-1]), [Dx] + Dg)
            yield tau_hi, tau_lo, x, Dx

    def __repr__(self):
        return f"Heroism(K={self.K!r}, N={self.N!r}, nodes={self.nodes!r}, sweep={self.sweep!r})"
