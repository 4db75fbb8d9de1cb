"""The sampler contract: `Sampler` (the public base class), `Tangent` (derivatives carried through
every operation of a step) and `NumericalError`.

A sampler maps samples at taus[0] to samples at taus[-1] of the probability-flow ODE
dx/dtau = -(x + s(x, tau)) / (2 (1 - tau)) (SPEC section 2). `Sampler.run` validates the input,
splits a large batch into cache-sized chunks, drives the subclass's `integrate` generator, and
checks the state after every step. A subclass implements two things:

* `integrate(target, taus, x, Dx, tangent, out)`: a generator that takes the steps and yields
  `(tau_hi, tau_lo, x, Dx)` after each. Every score evaluation goes through `tangent.score`
  (or `tangent.data` / `tangent.noise`), every linear combination of states through
  `tangent.lin` / `tangent.combine`: that is all it takes for the exact NFE count and the exact
  log-determinant of the discrete map in every Jacobian mode.
* `nfe(steps)`: the number of score evaluations of a run of `steps` steps.

Derivative modes (SPEC 5.3, 9): "full" carries d x / d x_in as (n, d, d) arrays; "structured" as
pairs (alpha, B) meaning alpha I + Q B Q^T with Q (n, d, m) an orthonormal basis of
span{U, x_in} per sample (targets with an `active_basis` U); "diagonal" as (n, d) arrays, the
diagonal of a map that acts on each coordinate alone (product targets, `target.diagonal`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .. import checks, kernels, schedules

if TYPE_CHECKING:
    from ..targets import Target

__all__ = ["JACOBIAN_MODES", "fused", "Combination", "NumericalError", "Output", "KnownLogdet", "Tangent", "Sampler", "a_of", "rho_of",
           "tau_of_rho", "lambda_of", "tau_of_lambda"]

JACOBIAN_MODES = ("none", "full", "structured", "diagonal")


class NumericalError(FloatingPointError):
    """A sampler produced non-finite values or a folded (non-invertible) map.

    Attributes `step`, `tau_hi`, `tau_lo` locate the step where it happened.
    """

    def __init__(self, step, tau_hi, tau_lo, what):
        self.step, self.tau_hi, self.tau_lo = step, tau_hi, tau_lo
        super().__init__(f"step {step} (tau {tau_hi:.6g} -> {tau_lo:.6g}): {what}")


@dataclass
class KnownLogdet:
    """A derivative known only through its log-determinant (Liouville's formula, in `Reference`)."""
    logdet: np.ndarray


@dataclass
class Output:
    """What `Sampler.run` returns: the samples at taus[-1], the number of score evaluations of the
    batch, and log|det d x_out / d x_in| per sample (None when jacobian="none")."""
    x: np.ndarray
    nfe: int
    logdet: np.ndarray | None = None


# -- noise-level conversions (SPEC 2) ----------------------------------------------------------

def a_of(tau):
    """a(tau) = sqrt(1 - tau), the signal scale (float -> float).

    >>> a_of(0.75)
    0.5
    """
    return math.sqrt(1.0 - tau)


def rho_of(tau):
    """rho = sqrt(tau / (1 - tau)): the VE noise level sigma of k-diffusion and EDM (float -> float).

    >>> rho_of(0.5)
    1.0
    """
    return math.sqrt(tau / (1.0 - tau))


def tau_of_rho(rho):
    """The inverse of `rho_of`: tau = rho^2 / (1 + rho^2).

    >>> tau_of_rho(1.0)
    0.5
    """
    return rho * rho / (1.0 + rho * rho)


def lambda_of(tau):
    """Half log-SNR lambda = log(a / sqrt(tau)) (DPM-Solver's lambda; float -> float).

    >>> lambda_of(0.5)
    0.0
    """
    return 0.5 * (math.log1p(-tau) - math.log(tau))


def tau_of_lambda(lam):
    """The inverse of `lambda_of`: tau = 1 / (1 + e^(2 lambda)).

    >>> tau_of_lambda(0.0)
    0.5
    """
    return 1.0 / (1.0 + math.exp(2.0 * lam))


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


def fused(coefs, arrays, out=None):
    """sum_i coefs[i] * arrays[i] in one pass over memory (`kernels.lincomb`), each distinct
    array read once (a list may hold the same array twice: HEROISM's first sweep combines x and
    K copies of g_0). Separate NumPy operations would read and write the whole state once per
    term; on a sampler's step that costs as much as a score evaluation (benchmarks item 7).

    Parameters
    ----------
    coefs : sequence of float (p,), or ndarray (m, p) for m combinations of the same arrays
    arrays : sequence of p ndarrays of one shape (n, ...) (C-contiguous: full-mode derivatives
        (n, d, d) are combined as (n, d d))
    out : ndarray (n, ...) or (m, n, ...), optional

    >>> fused([2.0, -1.0], [np.ones((2, 3)), np.full((2, 3), 0.5)])[0]
    array([1.5, 1.5, 1.5])
    """
    C = np.asarray(coefs, dtype=np.float64)
    single = C.ndim == 1
    C = C.reshape(1, -1) if single else C
    distinct, cols = [], []
    for v in arrays:
        t = next((t for t, u in enumerate(distinct) if u is v), len(distinct))
        if t == len(distinct):
            distinct.append(v)
        cols.append(t)
    Cm = np.zeros((C.shape[0], len(distinct)))
    for i, t in enumerate(cols):
        Cm[:, t] += C[:, i]
    shape, m = distinct[0].shape, C.shape[0]
    flat = tuple(np.ascontiguousarray(v).reshape(shape[0], -1) for v in distinct)
    fresh = out is None
    if fresh:
        out = np.empty((m, *shape))
    elif not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous (it is written through a reshaped view)")
    kernels.lincomb(Cm, flat, out.reshape(m, shape[0], -1))
    return out[0] if fresh and single else out


class Combination:
    """A linear combination sum_i coefs[i] (v_i, D_i) of a tangent's terms, kept unevaluated: as a
    term of `Tangent.combine` it is expanded, so a step's update reads the score and the state in
    one pass instead of first writing the denoiser D = (y + tau g)/a (one pass over the chunk per
    evaluation: Heun's time outside the score went from 22.7 to 11.8 %, DPM-Solver++ 2S's from
    26.1 to 14.8 %, benchmarks item 7). Unpacked (`v, D = c`) or indexed, it is evaluated once and
    behaves as the pair (value, derivative)."""

    __slots__ = ("tangent", "coefs", "terms", "_pair")

    def __init__(self, tangent, coefs, terms):
        self.tangent, self.coefs, self.terms, self._pair = tangent, [float(c) for c in coefs], list(terms), None

    def pair(self):
        if self._pair is None:
            self._pair = self.tangent.combine(self.coefs, self.terms)
        return self._pair

    def __iter__(self):
        return iter(self.pair())

    def __getitem__(self, i):
        return self.pair()[i]

    def __len__(self):
        return 2


class Tangent:
    """Score evaluations with their derivatives with respect to x_in, and the NFE count.

    One `Tangent` serves one chunk of one run. A derivative `D` is None (mode "none"), an
    (n, d, d) array ("full"), a pair (alpha (n,), B (n, m, m)) ("structured") or an (n, d)
    array ("diagonal"); samplers never look inside it, they only pass it to the methods below.

    Parameters
    ----------
    mode : {"none", "full", "structured", "diagonal"}
    target : targets.Target
    x_in : ndarray (n, d)
        The chunk's initial samples (the structured basis is built from them).

    Examples
    --------
    One DDIM step written with a tangent (what `DDIM.integrate` does):

    >>> import numpy as np
    >>> from theory_check import targets
    >>> t = targets.make("gmm-iso", 2, 0)
    >>> x = np.zeros((3, 2)); tan = Tangent("full", t, x)
    >>> eps, Deps = tan.noise(x, 0.5, tan.identity())
    >>> x1, D1 = tan.combine([np.sqrt(0.6 / 0.5), np.sqrt(0.4) - np.sqrt(0.6)], [(x, tan.identity()), (eps, Deps)])
    >>> tan.nfe, D1.shape
    (1, (3, 2, 2))
    """

    def __init__(self, mode, target, x_in):
        if mode not in JACOBIAN_MODES:
            raise ValueError(f"jacobian must be one of {JACOBIAN_MODES}, got {mode!r}")
        if mode == "structured" and target.active_basis is None:
            raise ValueError(f"jacobian='structured' needs a target with an active_basis; "
                             f"{type(target).__name__} has none (use 'full')")
        if mode == "diagonal" and not getattr(target, "diagonal", False):
            raise ValueError(f"jacobian='diagonal' needs a product target (its score Jacobian diagonal); "
                             f"{type(target).__name__} is not one (use 'full')")
        self.mode, self.target, self.nfe = mode, target, 0
        self.n, self.d = x_in.shape
        if mode == "structured":
            self.Q = _span_basis(target.active_basis, x_in)
            self.m = self.Q.shape[2]

    def identity(self):
        """The derivative of x_in with respect to itself."""
        if self.mode == "full":
            return np.broadcast_to(np.eye(self.d), (self.n, self.d, self.d)).copy()
        if self.mode == "structured":
            return np.ones(self.n), np.zeros((self.n, self.m, self.m))
        if self.mode == "diagonal":
            return np.ones((self.n, self.d))
        return None

    def lin(self, coefs, Ds):
        """The derivative of sum_i coefs[i] * v_i given the derivatives Ds[i] of v_i (scalar coefs)."""
        if self.mode == "none":
            return None
        if self.mode in ("full", "diagonal"):
            return fused(coefs, Ds)
        alpha = sum(c * D[0] for c, D in zip(coefs, Ds))
        return alpha, fused(coefs, [D[1] for D in Ds])

    def combine(self, coefs, terms):
        """(sum_i coefs[i] v_i, its derivative) for terms [(v_i, D_i), ...], each sum in one pass.
        A term may be an unevaluated `Combination` (what `data` and `noise` return): it is
        expanded into its own terms, so the denoiser is never written out on its way into a
        step's update."""
        flat_c, flat_t = self._expand(coefs, terms)
        return fused(flat_c, [v for v, _ in flat_t]), self.lin(flat_c, [D for _, D in flat_t])

    @staticmethod
    def _expand(coefs, terms):
        """coefs, terms with every unevaluated Combination replaced by its own (scaled) terms."""
        flat_c, flat_t = [], []
        for c, t in zip(coefs, terms):
            if isinstance(t, Combination) and t._pair is None:
                sc, st = Tangent._expand(t.coefs, t.terms)
                flat_c += [float(c) * ci for ci in sc]
                flat_t += st
            else:
                flat_c.append(float(c))
                flat_t.append(t)
        return flat_c, flat_t

    def score(self, y, tau, Dy):
        """(g, Dg): g = s(y, tau) and its derivative with respect to x_in (chain rule through Dy).
        One score evaluation of the batch (counted in `nfe`)."""
        self.nfe += 1
        if self.mode == "none":
            return self.target._eval(y, tau, False)[1], None
        if self.mode == "full":
            _, g, J = self.target._eval(y, tau, True)
            J, Dy = np.ascontiguousarray(J), np.ascontiguousarray(Dy)
            return g, kernels.chain(J, Dy, np.empty_like(J))
        if self.mode == "diagonal":
            _, g, ds = self.target._eval_diag(y, tau, True, want_logq=False)
            ds *= Dy
            return g, ds
        g, c, G = self.target._structured(y, tau, self.Q)
        alpha, B = Dy
        return g, (c * alpha, c[:, None, None] * B + alpha[:, None, None] * G + np.matmul(G, B))

    def data(self, y, tau, Dy):
        """The Tweedie denoiser D = (y + tau s(y, tau)) / a(tau) and its derivative (one evaluation)."""
        g, Dg = self.score(y, tau, Dy)
        a = a_of(tau)
        return Combination(self, [1.0 / a, tau / a], [(y, Dy), (g, Dg)])

    def noise(self, y, tau, Dy):
        """The noise prediction eps = -sqrt(tau) s(y, tau) and its derivative (one evaluation)."""
        g, Dg = self.score(y, tau, Dy)
        return Combination(self, [-math.sqrt(tau)], [(g, Dg)])

    def slogdet(self, D):
        if isinstance(D, KnownLogdet):
            return np.ones_like(D.logdet), D.logdet
        if self.mode == "full":
            sign, ld = np.empty(len(D)), np.empty(len(D))
            kernels.slogdet(np.ascontiguousarray(D), sign, ld)
            return sign, ld
        if self.mode == "diagonal":
            sign = np.where(np.any(D == 0, axis=1), 0.0, 1.0 - 2.0 * (np.count_nonzero(D < 0, axis=1) % 2))
            with np.errstate(divide="ignore"):
                return sign, np.sum(np.log(np.abs(D)), axis=1)
        alpha, B = D
        sign, ld = np.linalg.slogdet(alpha[:, None, None] * np.eye(self.m) + B)
        k = self.d - self.m
        return sign * np.sign(alpha) ** k, ld + k * np.log(np.abs(alpha))

    def finite(self, D):
        if self.mode == "none" or isinstance(D, KnownLogdet):
            return True
        if self.mode in ("full", "diagonal"):
            return checks.all_finite(D)
        return checks.all_finite(D[0]) and checks.all_finite(D[1])


class Sampler:
    """Base class of every sampler: subclass it to bring your own.

    Subclasses implement `integrate` and `nfe`, and may set the class attributes below.
    `run`, chunking, validation and the checks after every step come from this class.

    Attributes
    ----------
    deterministic : bool
        False for stochastic samplers (no log-determinant; `run` refuses a Jacobian mode).
    multistep : bool
        True when the state carries a history: only the final map must be invertible, so the
        fold check (det > 0) runs on the final map only.
    chunked : bool
        Samples are independent, so a batch larger than `chunk_rows` runs one chunk at a time,
        each through all the steps (its arrays stay in the L3 cache). Samplers whose steps couple
        the samples (one adaptive step size, one random stream) set False.

    Examples
    --------
    Euler in rho on the EDM form, written against this contract (this equals `DDIM`):

    >>> import math
    >>> from theory_check import targets, schedules
    >>> class MyEuler(Sampler):
    ...     def nfe(self, steps):
    ...         return steps
    ...     def integrate(self, target, taus, x, Dx, tangent, out):
    ...         for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
    ...             eps, De = tangent.noise(x, tau_hi, Dx)
    ...             a_hi, a_lo = math.sqrt(1 - tau_hi), math.sqrt(1 - tau_lo)
    ...             dr = math.sqrt(tau_lo / (1 - tau_lo)) - math.sqrt(tau_hi / (1 - tau_hi))
    ...             x, Dx = tangent.combine([a_lo / a_hi, a_lo * dr], [(x, Dx), (eps, De)])
    ...             yield tau_hi, tau_lo, x, Dx
    >>> t = targets.make("gmm-iso", 2, 0)
    >>> x = t.sample(4, 0.999, np.random.default_rng(0))
    >>> out = MyEuler().run(t, schedules.log_snr(10), x, jacobian="full")
    >>> out.nfe, out.logdet.shape
    (10, (4,))
    """

    deterministic = True
    multistep = False
    chunked = True
    CHUNK_FLOATS = 2 ** 18      # 2 MiB per (rows, d) array: a chunk's K + 4 arrays fit the L3 cache

    # -- extension points ------------------------------------------------------------------------
    def integrate(self, target, taus, x, Dx, tangent, out):
        """Take the steps of `taus`; yield (tau_hi, tau_lo, x, Dx) after each.

        Parameters
        ----------
        target : targets.Target
        taus : ndarray (steps + 1,)
            Strictly decreasing noise levels in (0, 1), validated.
        x : ndarray (rows, d)
            The chunk's samples at taus[0] (read-only: do not modify in place).
        Dx : derivative
            Derivative of x with respect to x_in (`tangent.identity()`), opaque.
        tangent : Tangent
            Evaluate the score only through it; combine states through `tangent.combine`.
        out : ndarray (rows, d)
            The chunk's slice of the run's output. The last step may write its state into it
            (and yield `out`), which saves a copy; yielding a new array is fine too.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement integrate()")

    def nfe(self, steps: int) -> int:
        """Score evaluations (of the batch) of a run of `steps` steps."""
        raise NotImplementedError(f"{type(self).__name__} must implement nfe(steps)")

    def nfe_per_step(self, steps: int) -> float:
        """nfe(steps) / steps: evaluations per step, averaged over a run of `steps` steps."""
        steps = checks.integer(steps, "steps", minimum=1)
        return self.nfe(steps) / steps

    def steps_for_budget(self, budget: int) -> int:
        """The largest number of steps whose run costs at most `budget` evaluations (at least 1)."""
        budget = checks.integer(budget, "nfe_budget", minimum=1)
        steps = max(1, int(budget // max(self.nfe_per_step(max(1, budget // 4)), 1e-12)))
        while steps > 1 and self.nfe(steps) > budget:
            steps -= 1
        while self.nfe(steps + 1) <= budget:
            steps += 1
        return steps

    # -- the driver ---------------------------------------------------------------------------------
    @classmethod
    def chunk_rows(cls, d, jacobian="none"):
        """Rows per chunk: CHUNK_FLOATS floats of state (with its d x d derivative in 'full' mode)."""
        per_row = d * (d + 1) if jacobian == "full" else 2 * d if jacobian == "diagonal" else d
        return max(16, cls.CHUNK_FLOATS // per_row)

    def run(self, target: Target, taus: ArrayLike, x: ArrayLike, jacobian: str = "none") -> Output:
        """Map samples x at taus[0] to samples at taus[-1].

        Parameters
        ----------
        target : targets.Target
        taus : array_like (steps + 1,)
            Strictly decreasing, in (0, 1).
        x : array_like (n, d)
        jacobian : {"none", "full", "structured", "diagonal"}
            "full", "structured" or "diagonal" (product targets) also returns
            log|det d x_out / d x_in| per sample.

        Returns
        -------
        Output
            x (n, d), nfe, logdet (n,) or None.

        Raises
        ------
        NumericalError
            Non-finite values, or a map that folded (det <= 0), with the step and tau.
        """
        checks.target(target)
        taus = schedules.validate(taus)
        x = checks.batch(x, target.dim)
        if not self.deterministic and jacobian != "none":
            raise ValueError(f"jacobian must be 'none' for the stochastic sampler {self!r}: it has no "
                             "log-determinant, so TV and KL cannot be computed (use metrics w2 or coupling)")
        if not (x.flags.writeable and x.flags.c_contiguous):
            x = np.array(x, order="C")      # read-only input (np.load mmap_mode='r'): kernels take writable arrays
        n, d = x.shape
        rows = self.chunk_rows(d, jacobian) if self.chunked else n
        x_out = np.empty((n, d))
        logdet = None if jacobian == "none" else np.empty(n)
        first = None                    # (step, error) of the earliest failure found so far
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for a in range(0, n, rows):
                tan = Tangent(jacobian, target, x[a:a + rows])
                out = x_out[a:a + rows]
                steps = self.integrate(target, taus, x[a:a + rows], tan.identity(), tan, out)
                if steps is None or not hasattr(steps, "__next__"):
                    raise TypeError(f"{type(self).__name__}.integrate() must be a generator that yields "
                                    "(tau_hi, tau_lo, x, Dx) after each step; it returned "
                                    f"{type(steps).__name__}")
                xc = None
                # after a failure, a later chunk matters only if it fails at an earlier step
                for i, (tau_hi, tau_lo, xc, D) in enumerate(itertools.islice(steps, first and first[0])):
                    error, ld = self._check(tan, a, i, tau_hi, tau_lo, xc, D, taus)
                    if error is not None:
                        first = (i, error)
                        break
                else:
                    if xc is None and first is None:
                        raise TypeError(f"{type(self).__name__}.integrate() yielded no step; it must yield "
                                        "(tau_hi, tau_lo, x, Dx) after each of the schedule's steps")
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
        if not checks.all_finite(xc) or not tan.finite(D):
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
        params = getattr(self, "__dict__", {})
        return type(self).__name__ + "(" + ", ".join(f"{k}={v!r}" for k, v in params.items() if not k.startswith("_")) + ")"
