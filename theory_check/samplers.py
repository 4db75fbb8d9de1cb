"""Samplers for the probability-flow ODE dx/dtau = -(x + s(x, tau)) / (2 (1 - tau)).

Every sampler has `run(target, taus, x, jacobian="none"|"full"|"structured") -> Output` mapping
samples at taus[0] to samples at taus[-1], with the exact number of score evaluations `nfe`
(one evaluation of a batch counts once) and, when a Jacobian mode is asked for,
`logdet` (n,) = log |det d x_out / d x_in| of the whole discrete map (SPEC section 5).

Derivatives are carried through every operation (`_Tangent`): in `full` mode as (n, d, d)
arrays built from the score Jacobian; in `structured` mode as pairs (alpha, B) meaning
alpha I + Q B Q^T with Q (n, d, m) an orthonormal basis of span{U, x_in} per sample (SPEC 5.3).
After every step the state is checked: non-finite values, or a determinant that is not positive
(the map folded), raise `NumericalError` naming the step and tau.

Notation: a(tau) = sqrt(1 - tau), kappa(u) = 1 / (2 (1 - u)^{3/2}), so that
x(tau_lo) = a_lo [x(tau_hi)/a_hi + int_{tau_lo}^{tau_hi} s(x(u), u) kappa(u) du].
"""

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from . import checks, kernels, schedules

JACOBIAN_MODES = ("none", "full", "structured")


class NumericalError(FloatingPointError):
    """A sampler produced non-finite values or a folded (non-invertible) map."""

    def __init__(self, step, tau_hi, tau_lo, what):
        self.step, self.tau_hi, self.tau_lo = step, tau_hi, tau_lo
        super().__init__(f"step {step} (tau {tau_hi:.6g} -> {tau_lo:.6g}): {what}")


@dataclass
class KnownLogdet:
    """A derivative known only through its log-determinant (Liouville, in `Reference`)."""
    logdet: np.ndarray


@dataclass
class Output:
    x: np.ndarray
    nfe: int
    logdet: np.ndarray | None = None


# -- derivative bookkeeping ----------------------------------------------------------------------

def _span_basis(U, x):
    """Per-sample orthonormal basis Q (n, d, m) of span{U, x}, m = min(m0 + 1, d).

    When x lies in span U (to rounding), any unit vector orthogonal to U completes the basis:
    the structure c I + Q G Q^T is then still exact.
    """
    n, d = x.shape
    m0 = U.shape[1]
    if m0 == d:
        return np.broadcast_to(U, (n, d, d)).copy()
    v = x - (x @ U) @ U.T
    nv = np.linalg.norm(v, axis=1)
    small = nv <= 1e-10 * np.maximum(np.linalg.norm(x, axis=1), 1.0)
    j = np.argmin(np.sum(U * U, axis=1))          # the axis farthest from span U
    e = np.zeros(d)
    e[j] = 1.0
    v[small] = e - U @ (U.T @ e)
    for _ in range(2):                              # re-orthogonalise: v may be tiny
        v -= (v @ U) @ U.T
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.concatenate([np.broadcast_to(U, (n, d, m0)), v[:, :, None]], axis=2)


class _Tangent:
    """Score evaluations with their derivatives w.r.t. x_in, and the NFE count."""

    def __init__(self, mode, target, x_in):
        if mode not in JACOBIAN_MODES:
            raise ValueError(f"jacobian must be one of {JACOBIAN_MODES}, got {mode!r}")
        if mode == "structured" and target.active_basis is None:
            raise ValueError(f"jacobian='structured' needs a target with an active_basis; "
                             f"{type(target).__name__} has none (use 'full')")
        self.mode, self.target, self.nfe = mode, target, 0
        self.n, self.d = x_in.shape
        if mode == "structured":
            self.Q = _span_basis(target.active_basis, x_in)
            self.m = self.Q.shape[2]

    def identity(self):
        if self.mode == "full":
            return np.broadcast_to(np.eye(self.d), (self.n, self.d, self.d)).copy()
        if self.mode == "structured":
            return np.ones(self.n), np.zeros((self.n, self.m, self.m))
        return None

    def lin(self, coefs, Ds):
        """sum_i coefs[i] * Ds[i] (scalar coefficients)."""
        if self.mode == "none":
            return None
        if self.mode == "full":
            out = coefs[0] * Ds[0]
            for c, D in zip(coefs[1:], Ds[1:]):
                out = out + c * D
            return out
        alpha = sum(c * D[0] for c, D in zip(coefs, Ds))
        B = coefs[0] * Ds[0][1]
        for c, D in zip(coefs[1:], Ds[1:]):
            B = B + c * D[1]
        return alpha, B

    def score(self, y, tau, Dy):
        """g = s(y, tau) and its derivative w.r.t. x_in (chain rule through Dy)."""
        self.nfe += 1
        if self.mode == "none":
            return self.target._eval(y, tau, False)[1], None
        if self.mode == "full":
            _, g, J = self.target._eval(y, tau, True)
            return g, np.matmul(J, Dy)
        g, c, G = self.target._structured(y, tau, self.Q)
        alpha, B = Dy
        return g, (c * alpha, c[:, None, None] * B + alpha[:, None, None] * G + np.matmul(G, B))

    def slogdet(self, D):
        if isinstance(D, KnownLogdet):
            return np.ones_like(D.logdet), D.logdet
        if self.mode == "full":
            return np.linalg.slogdet(D)
        alpha, B = D
        sign, ld = np.linalg.slogdet(alpha[:, None, None] * np.eye(self.m) + B)
        k = self.d - self.m
        return sign * np.sign(alpha) ** k, ld + k * np.log(np.abs(alpha))

    def finite(self, D):
        if self.mode == "none" or isinstance(D, KnownLogdet):
            return True
        if self.mode == "full":
            return bool(np.all(np.isfinite(D)))
        return bool(np.all(np.isfinite(D[0])) and np.all(np.isfinite(D[1])))


class Sampler:
    """Base class: subclasses implement `_steps(target, taus, x, Dx, tan, out)`, a generator that
    yields (tau_hi, tau_lo, x, Dx) after each step; it may write its final state into `out`
    (an (n, d) slice of the run's output) rather than a new array, which saves a copy.

    Samples are independent, so a batch larger than `chunk_rows` is run one chunk at a time,
    each through all the steps: a chunk's arrays (the state, the score values, the nodes) then
    stay in the L3 cache from one evaluation to the next, instead of streaming n d floats through
    memory for every operation. Checks run after every step; when several chunks fail, the
    error is the one at the earliest step (and, within it, the first sample), as for one batch.
    Samplers whose steps couple the samples (one adaptive step size, one random stream) set
    `chunked = False`.
    """

    deterministic = True
    multistep = False
    chunked = True
    CHUNK_FLOATS = 2 ** 18      # 2 MiB per (rows, d) array: a chunk's K + 4 arrays fit the L3 cache

    @classmethod
    def chunk_rows(cls, d, jacobian="none"):
        """Rows per chunk: CHUNK_FLOATS floats of state (with its d x d derivative in 'full' mode)."""
        per_row = d * (d + 1) if jacobian == "full" else d
        return max(16, cls.CHUNK_FLOATS // per_row)

    def run(self, target, taus, x, jacobian="none"):
        taus = schedules.validate(taus)
        x = checks.batch(x, target.dim)
        if not self.deterministic and jacobian != "none":
            raise ValueError(f"jacobian must be 'none' for the stochastic sampler {self!r}")
        x = np.ascontiguousarray(x)
        n, d = x.shape
        rows = self.chunk_rows(d, jacobian) if self.chunked else n
        x_out = np.empty((n, d))
        logdet = None if jacobian == "none" else np.empty(n)
        first = None                    # (step, error) of the earliest failure found so far
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for a in range(0, n, rows):
                tan = _Tangent(jacobian, target, x[a:a + rows])
                out = x_out[a:a + rows]
                steps = self._steps(target, taus, x[a:a + rows], tan.identity(), tan, out)
                # after a failure, a later chunk matters only if it fails at an earlier step
                for i, (tau_hi, tau_lo, xc, D) in enumerate(itertools.islice(steps, first and first[0])):
                    error, ld = self._check(tan, a, i, tau_hi, tau_lo, xc, D, taus)
                    if error is not None:
                        first = (i, error)
                        break
                else:
                    if first is None:
                        if xc is not out:
                            if rows >= n:
                                x_out = xc          # one chunk: its own array is the output
                            else:
                                out[...] = xc
                        if ld is not None:
                            logdet[a:a + rows] = ld
                        nfe = tan.nfe
        if first is not None:
            raise first[1]
        return Output(x_out, nfe, logdet)

    def _check(self, tan, a, i, tau_hi, tau_lo, xc, D, taus):
        """(error or None, logdet or None) after step i of the chunk starting at sample a."""
        if not np.all(np.isfinite(xc)) or not tan.finite(D):
            return NumericalError(i, tau_hi, tau_lo, "non-finite values in the state"), None
        # A one-step method folds as soon as one step's map does. A multistep method's state is
        # (x, history): only the final map x_in -> x_out must be invertible.
        if tan.mode == "none" or (self.multistep and tau_lo != taus[-1]):
            return None, None
        sign, ld = tan.slogdet(D)
        bad = (sign <= 0) | ~np.isfinite(ld)
        if np.any(bad):
            return NumericalError(i, tau_hi, tau_lo, f"the map folded (det <= 0) at sample {a + int(np.argmax(bad))}"), None
        return None, ld

    def __repr__(self):
        return type(self).__name__ + "()"


def _a(tau):
    return math.sqrt(1.0 - tau)


# -- HEROISM -------------------------------------------------------------------------------------

def _gauss_legendre(n):
    return np.polynomial.legendre.leggauss(n)


def lagrange_kappa_weights(nodes):
    """W[j, i] = int_{u_j}^{u_0} l_i(u) kappa(u) du for the Lagrange basis l_i on `nodes`
    (u_0 > u_1 > ... , all in (0, 1)), and W0[j] = int_{u_j}^{u_0} kappa = 1/a(u_0) - 1/a(u_j).

    Computed in nu = log(1 - u), where kappa du = -(1/2) e^{-nu/2} d nu and the integrand is an
    entire function of nu; composite Gauss-Legendre with panels of width <= 1/4 and K + 20 points
    each is then exact to rounding for any step (a plain rule in u is not: kappa has a
    singularity at u = 1, close to the first steps).
    """
    u = np.asarray(nodes, dtype=np.float64)
    K = len(u)
    nu = np.log1p(-u)
    t, w = _gauss_legendre(K + 20)
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
    """K nodes u_0 = tau_hi > ... > u_{K-1} = tau_lo, equispaced in tau or Chebyshev-Lobatto."""
    if K == 1:
        return np.array([tau_hi])
    j = np.arange(K)
    if kind == "equispaced":
        u = tau_hi + (tau_lo - tau_hi) * j / (K - 1)
    else:
        u = 0.5 * (tau_hi + tau_lo) + 0.5 * (tau_hi - tau_lo) * np.cos(np.pi * j / (K - 1))
    u[0], u[-1] = tau_hi, tau_lo
    return u


def _lincomb(C, arrays, out):
    """out[j] = sum_i C[j, i] arrays[i] (kernels.lincomb), each distinct array read once: the
    first sweep of a HEROISM step combines x and K copies of g_0, i.e. two arrays, not K + 1."""
    distinct, cols = [], []
    for v in arrays:
        t = next((t for t, u in enumerate(distinct) if u is v), len(distinct))
        if t == len(distinct):
            distinct.append(v)
        cols.append(t)
    Cm = np.zeros((C.shape[0], len(distinct)))
    for i, t in enumerate(cols):
        Cm[:, t] += C[:, i]
    return kernels.lincomb(Cm, tuple(np.ascontiguousarray(v) for v in distinct), out)


@functools.lru_cache(maxsize=4096)
def _heroism_coefficients(tau_hi, tau_lo, K, kind):
    """Nodes u (K,) of a step and the coefficients C of its node updates: row j - 1 holds
    [a_j / a_0, a_j W_j0, ..., a_j W_j,K-1] for j = 1..K-1. For K = 1, the one row
    [a_lo / a_hi, a_lo W0] of the exponential Euler step to tau_lo. Cached (read-only) because
    every chunk of a batch takes the same steps."""
    u = step_nodes(tau_hi, tau_lo, K, kind)
    if K == 1:
        a_hi, a_lo = _a(tau_hi), _a(tau_lo)
        C = np.array([[a_lo / a_hi, a_lo * (1.0 / a_hi - 1.0 / a_lo)]])
    else:
        W, _ = lagrange_kappa_weights(u)
        a = np.sqrt(1.0 - u)
        C = np.concatenate([(a[1:] / a[0])[:, None], a[1:, None] * W[1:]], axis=1)
    u.flags.writeable = C.flags.writeable = False
    return u, C


class Heroism(Sampler):
    """HEROISM of order K with N refinement sweeps (our reading of Li, Zhou, Wei & Chen 2025, Alg. 1).

    On each step tau_hi -> tau_lo, with nodes u_0 = tau_hi > ... > u_{K-1} = tau_lo:

        predictor   g_0 = s(x, tau_hi),  y_j = a(u_j) [x/a(tau_hi) + W0_j g_0]
        sweep n     g_i = s(y_i, u_i) (i >= 1),  y_j = a(u_j) [x/a(tau_hi) + sum_i W_ji g_i]

    where W_ji = int_{u_j}^{tau_hi} l_i kappa (exact Lagrange-interpolant integration). "jacobi"
    evaluates all g_i at the previous sweep's y; "gauss-seidel" updates y_j for j = 1..K-1 in turn
    and evaluates g_j at the new y_j at once (the first sweep starts from g_i = g_0). The output is
    y_{K-1} after N sweeps; NFE per step = 1 + N (K - 1). K = 1 is the exponential Euler step
    with the score held constant in tau. N = "paper" means N = max(1, ceil(log T)), T = steps
    (the theorem's N = C log T with C = 1).

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
        self.K = checks.integer(K, "K", minimum=1)
        if self.K > self.MAX_K:
            raise ValueError(f"K must be <= {self.MAX_K}: higher-order Lagrange weights are numerically unstable")
        if N is None:
            N = self.K
        self.N = N if N == "paper" else checks.integer(N, "N", minimum=0)
        if nodes not in ("equispaced", "chebyshev"):
            raise ValueError(f"nodes must be 'equispaced' or 'chebyshev', got {nodes!r}")
        if sweep not in ("jacobi", "gauss-seidel"):
            raise ValueError(f"sweep must be 'jacobi' or 'gauss-seidel', got {sweep!r}")
        self.nodes, self.sweep = nodes, sweep

    def sweeps(self, steps):
        if self.N == "paper":
            return max(1, int(math.ceil(math.log(steps))))
        return self.N

    def nfe_per_step(self, steps):
        return 1 if self.K == 1 else 1 + self.sweeps(steps) * (self.K - 1)

    def _steps(self, target, taus, x, Dx, tan, out):
        K, N = self.K, self.sweeps(len(taus) - 1)
        for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
            u, C = _heroism_coefficients(tau_hi, tau_lo, K, self.nodes)
            g0, Dg0 = tan.score(x, tau_hi, Dx)
            g, Dg = [g0] * K, [Dg0] * K
            y = np.empty((K - 1, *x.shape))
            Dy = [None] * K

            def update(j0, j1):
                # y_j = a_j [x/a_0 + sum_i W_ji g_i], j0 <= j < j1, in one pass over the samples
                _lincomb(C[j0 - 1:j1 - 1], (x, *g), y[j0 - 1:j1 - 1])
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
            _lincomb(C[-1:], (x, *g), x_lo[None])
            x, Dx = x_lo, tan.lin(list(C[-1]), [Dx] + Dg)
            yield tau_hi, tau_lo, x, Dx

    def __repr__(self):
        return f"Heroism(K={self.K}, N={self.N!r}, nodes={self.nodes!r}, sweep={self.sweep!r})"


# -- baselines -----------------------------------------------------------------------------------

class DDIM(Sampler):
    """DDIM (Song et al. 2021): exponential Euler holding the noise prediction eps = -sqrt(tau) s
    constant in rho = sqrt(tau/(1 - tau)):  x_lo = a_lo D + sqrt(tau_lo) eps,
    D = (x - sqrt(tau_hi) eps)/a_hi. One score evaluation per step."""

    def _steps(self, target, taus, x, Dx, tan, out):
        for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
            g, Dg = tan.score(x, tau_hi, Dx)
            a_hi, a_lo = _a(tau_hi), _a(tau_lo)
            coef = [a_lo / a_hi, a_lo * tau_hi / a_hi - math.sqrt(tau_lo * tau_hi)]
            x, Dx = coef[0] * x + coef[1] * g, tan.lin(coef, [Dx, Dg])
            yield tau_hi, tau_lo, x, Dx


class DPMSolverPP(Sampler):
    """DPM-Solver++ (Lu et al. 2022), multistep, data prediction D = (x + tau s)/a, in
    lambda = log(a / sqrt(tau)); order 2 (2M) or 3 (3M). One score evaluation per step; the first
    steps use the lower orders (1, then 2) while the history fills. Updates as in the authors'
    reference implementation (`multistep_dpm_solver_{second,third}_update`, solver 'dpmsolver').

    Two deviations from the released code, both measured (README, Deviations):
    * coefficient="taylor" (default) multiplies the second-difference term by 2 phi_3: with
      D2 = (D1_0 - D1_1)/(r0 + r1) ~ h^2 m''/2, the exact integral of the quadratic interpolant
      of m(lambda) is -2 a_lo phi_3 D2, while the released update uses -a_lo phi_3 D2, which
      makes "3M" globally second order. coefficient="released" reproduces the released update.
    * The first-order first step has local error O(h^2), so with warmup="lower" (standard) 3M
      is asymptotically second order again, though with a constant scaled by a(tau_max);
      warmup="2s" takes the first step with the singlestep DPM-Solver++(2S) (midpoint in lambda,
      one extra evaluation) and is third order for every h.
    """

    multistep = True

    def __init__(self, order=2, warmup="lower", coefficient="taylor"):
        if order not in (2, 3):
            raise ValueError(f"order must be 2 or 3, got {order!r}")
        if warmup not in ("lower", "2s"):
            raise ValueError(f"warmup must be 'lower' or '2s', got {warmup!r}")
        if coefficient not in ("taylor", "released"):
            raise ValueError(f"coefficient must be 'taylor' or 'released', got {coefficient!r}")
        self.order, self.warmup, self.coefficient = order, warmup, coefficient

    def _data(self, tan, x, tau, Dx):
        g, Dg = tan.score(x, tau, Dx)
        a = _a(tau)
        return (x + tau * g) / a, tan.lin([1.0 / a, tau / a], [Dx, Dg])

    def _steps(self, target, taus, x, Dx, tan, out):
        lam = 0.5 * (np.log1p(-taus) - np.log(taus))
        hist = []                                   # (D, dD) at previous points, newest first
        for i, (tau_hi, tau_lo) in enumerate(zip(taus[:-1], taus[1:])):
            hist.insert(0, self._data(tan, x, tau_hi, Dx))
            del hist[self.order:]
            h = lam[i + 1] - lam[i]
            a_lo, phi1 = _a(tau_lo), math.expm1(-h)
            cx = math.sqrt(tau_lo / tau_hi)
            order = min(self.order, len(hist))
            if order == 1 and self.warmup == "2s":
                # midpoint in lambda: u = (sigma_s/sigma_hi) x - a_s phi1(h/2) m0, x = cx x - a_lo phi1 D(u, s)
                tau_s = 1.0 / (1.0 + math.exp(2.0 * (lam[i] + 0.5 * h)))
                cu = [math.sqrt(tau_s / tau_hi), -_a(tau_s) * math.expm1(-0.5 * h)]
                u = cu[0] * x + cu[1] * hist[0][0]
                ms = self._data(tan, u, tau_s, tan.lin(cu, [Dx, hist[0][1]]))
                coef, terms = [cx, -a_lo * phi1], [(x, Dx), ms]
            elif order == 1:
                coef, terms = [cx, -a_lo * phi1], [(x, Dx), hist[0]]
            elif order == 2:
                r0 = (lam[i] - lam[i - 1]) / h
                # m0 - 0.5 phi1 (m0 - m1)/r0
                c1 = 0.5 / r0
                coef = [cx, -a_lo * phi1 * (1 + c1), a_lo * phi1 * c1]
                terms = [(x, Dx), hist[0], hist[1]]
            else:
                r0 = (lam[i] - lam[i - 1]) / h
                r1 = (lam[i - 1] - lam[i - 2]) / h
                phi2 = phi1 / h + 1.0
                phi3 = phi2 / h - 0.5
                # D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1, D1 = D1_0 + r0/(r0+r1) (D1_0 - D1_1),
                # D2 = (D1_0 - D1_1)/(r0+r1); x = cx x - a phi1 m0 + a phi2 D1 - 2 a phi3 D2
                p = r0 / (r0 + r1)
                q = 1.0 / (r0 + r1)
                # coefficients of (m0, m1, m2) in D1_0 and D1_1
                d10 = np.array([1 / r0, -1 / r0, 0.0])
                d11 = np.array([0.0, 1 / r1, -1 / r1])
                D1 = d10 + p * (d10 - d11)
                D2 = q * (d10 - d11)
                cm = -a_lo * phi1 * np.array([1.0, 0, 0]) + a_lo * phi2 * D1 - (2.0 if self.coefficient == "taylor" else 1.0) * a_lo * phi3 * D2
                coef = [cx] + list(cm)
                terms = [(x, Dx)] + hist[:3]
            x = sum(c * t[0] for c, t in zip(coef, terms))
            Dx = tan.lin(coef, [t[1] for t in terms])
            yield tau_hi, tau_lo, x, Dx

    def __repr__(self):
        return f"DPMSolverPP(order={self.order}, warmup={self.warmup!r}, coefficient={self.coefficient!r})"


def _rho(tau):
    return math.sqrt(tau / (1.0 - tau))


def _tau_of_rho(rho):
    return rho * rho / (1.0 + rho * rho)


class _EDMRungeKutta(Sampler):
    """Explicit Runge-Kutta on the EDM form dz/drho = eps(a z, tau(rho)), z = x/a,
    rho = sqrt(tau/(1 - tau)), eps = -sqrt(tau) s (Karras et al. 2022)."""

    A: list
    b: list
    c: list

    def _steps(self, target, taus, x, Dx, tan, out):
        for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
            r_hi, r_lo = _rho(tau_hi), _rho(tau_lo)
            dr = r_lo - r_hi
            a_hi = _a(tau_hi)
            z, Dz = x / a_hi, tan.lin([1.0 / a_hi], [Dx])
            ks, Dks = [], []
            for st in range(len(self.b)):
                if st == 0:
                    zs, Dzs = z, Dz
                else:
                    coef = [1.0] + [dr * aij for aij in self.A[st]]
                    zs = z + sum(c * k for c, k in zip(coef[1:], ks))
                    Dzs = tan.lin(coef, [Dz] + Dks)
                tau = _tau_of_rho(r_hi + self.c[st] * dr) if self.c[st] != 1.0 else tau_lo
                a = _a(tau)
                g, Dg = tan.score(a * zs, tau, tan.lin([a], [Dzs]))
                ks.append(-math.sqrt(tau) * g)
                Dks.append(tan.lin([-math.sqrt(tau)], [Dg]))
            coef = [1.0] + [dr * bi for bi in self.b]
            z = z + sum(c * k for c, k in zip(coef[1:], ks))
            Dz = tan.lin(coef, [Dz] + Dks)
            a_lo = _a(tau_lo)
            x, Dx = a_lo * z, tan.lin([a_lo], [Dz])
            yield tau_hi, tau_lo, x, Dx


class Heun(_EDMRungeKutta):
    """Heun's method (explicit trapezoid) on the EDM form; 2 score evaluations per step."""
    A = [[], [1.0]]
    b = [0.5, 0.5]
    c = [0.0, 1.0]


class RK4(_EDMRungeKutta):
    """The classical fourth-order Runge-Kutta method on the EDM form; 4 evaluations per step."""
    A = [[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]]
    b = [1 / 6, 1 / 3, 1 / 3, 1 / 6]
    c = [0.0, 0.5, 0.5, 1.0]


class DDPM(Sampler):
    """Ancestral DDPM sampling (Ho et al. 2020) on the schedule: from tau_hi to tau_lo, with
    alpha_t = (1 - tau_hi)/(1 - tau_lo), beta_t = 1 - alpha_t and D = (x + tau_hi s)/a_hi,
        x_lo = [a_lo beta_t D + sqrt(alpha_t) tau_lo x] / tau_hi + sqrt(tau_lo beta_t / tau_hi) Z.
    Stochastic (seeded); no logdet. One evaluation per step."""

    deterministic = False
    chunked = False          # one random stream for the whole batch

    def __init__(self, seed=0):
        self.seed = checks.integer(seed, "seed", minimum=0)

    def _steps(self, target, taus, x, Dx, tan, out):
        rng = np.random.default_rng(self.seed)
        for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
            g, _ = tan.score(x, tau_hi, None)
            a_hi, a_lo = _a(tau_hi), _a(tau_lo)
            alpha = (1.0 - tau_hi) / (1.0 - tau_lo)
            beta = 1.0 - alpha
            D = (x + tau_hi * g) / a_hi
            mean = (a_lo * beta * D + math.sqrt(alpha) * tau_lo * x) / tau_hi
            x = mean + math.sqrt(tau_lo * beta / tau_hi) * rng.standard_normal(x.shape)
            yield tau_hi, tau_lo, x, None

    def __repr__(self):
        return f"DDPM(seed={self.seed})"


class Reference(Sampler):
    """The ground-truth flow: scipy's DOP853 on the ODE in lambda = log((1 - tau)/tau),

        dx/dlambda = tau (x + s(x, tau)) / 2,

    which is non-stiff at both ends. logdet comes from Liouville's formula integrated beside x,
    d logdet / dlambda = tau (d + tr grad s) / 2, with the trace from the full or the structured
    Jacobian. All samples are integrated as one system (one step-size sequence for the batch).
    Only the end point is taken from the schedule."""

    chunked = False          # one step-size sequence for the whole batch

    def __init__(self, rtol=1e-10, atol=1e-12):
        self.rtol = checks.positive(rtol, "rtol")
        self.atol = checks.positive(atol, "atol")
        if self.rtol < 100 * np.finfo(float).eps:
            raise ValueError(f"rtol must be >= {100 * np.finfo(float).eps:.3g} (DOP853's floor), got {rtol!r}")

    def _steps(self, target, taus, x, Dx, tan, out):
        n, d = x.shape
        want = tan.mode != "none"

        def rhs(lam, y):
            tau = 1.0 / (1.0 + math.exp(lam))
            xx = y[: n * d].reshape(n, d)
            tan.nfe += 1
            if tan.mode == "none":
                s = target._eval(xx, tau, False)[1]
                return 0.5 * tau * (xx + s).ravel()
            if tan.mode == "full":
                _, s, J = target._eval(xx, tau, True)
                tr = np.trace(J, axis1=1, axis2=2)
            else:
                s, c, G = target._structured(xx, tau, tan.Q)
                tr = c * d + np.trace(G, axis1=1, axis2=2)
            return np.concatenate([0.5 * tau * (xx + s).ravel(), 0.5 * tau * (d + tr)])

        lam0 = math.log1p(-taus[0]) - math.log(taus[0])
        lam1 = math.log1p(-taus[-1]) - math.log(taus[-1])
        y0 = np.concatenate([x.ravel(), np.zeros(n)]) if want else x.ravel()
        sol = solve_ivp(rhs, (lam0, lam1), y0, method="DOP853", rtol=self.rtol, atol=self.atol)
        if not sol.success:
            raise NumericalError(0, taus[0], taus[-1], f"reference solver failed: {sol.message}")
        y = sol.y[:, -1]
        yield taus[0], taus[-1], y[: n * d].reshape(n, d), KnownLogdet(y[n * d:]) if want else None

    def __repr__(self):
        return f"Reference(rtol={self.rtol:g}, atol={self.atol:g})"


SAMPLER_NAMES = ("heroism", "ddim", "dpm2m", "dpm3m", "heun", "rk4", "ddpm", "reference")


def make(name, K=3, N=None, nodes="equispaced", sweep="jacobi", seed=0):
    """A sampler by name: heroism (K, N, nodes, sweep), ddim, dpm2m, dpm3m, heun, rk4,
    ddpm (seed), reference."""
    if name == "heroism":
        return Heroism(K, N, nodes, sweep)
    simple = {"ddim": DDIM, "heun": Heun, "rk4": RK4, "reference": Reference}
    if name in simple:
        return simple[name]()
    if name == "dpm2m":
        return DPMSolverPP(2)
    if name == "dpm3m":
        return DPMSolverPP(3)
    if name == "ddpm":
        return DDPM(seed)
    raise ValueError(f"sampler must be one of {', '.join(SAMPLER_NAMES)}; got {name!r}")


def parse_N(N, K):
    """N given as an int, "paper", or an expression in K: "K", "K-1", "K+1", "2K"."""
    if isinstance(N, (int, np.integer)) and not isinstance(N, bool) or N == "paper" or N is None:
        return N
    if isinstance(N, str):
        expr = N.replace(" ", "")
        table = {"K": K, "K-1": K - 1, "K+1": K + 1, "2K": 2 * K, "K-2": K - 2}
        if expr in table:
            return max(table[expr], 0)
    raise ValueError(f"N must be an integer, 'paper', or one of K, K-1, K+1, K-2, 2K; got {N!r}")
