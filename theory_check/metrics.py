"""Error metrics between the sampler's output law p_out and the target marginal q_{tau_end}.

`tv_kl` is exact up to Monte-Carlo error in any dimension: x_in is drawn from a known law and
the sampler's map is invertible with a known log-determinant, so by the change of variables::

    log p_out(x_out) = log p_in(x_in) - log|det d x_out / d x_in|,

and with w = q(x_out) / p_out(x_out), x_out ~ p_out::

    TV(p_out, q) = E[(1 - w)_+],   KL(p_out || q) = E[log p_out - log q] = -E[log w].

Both are plain sample means, so their standard errors are std / sqrt(n). This resolves TV far
below what any estimate from samples alone (histograms, nearest neighbours) can.

Example
-------
>>> from theory_check import targets, schedules, samplers, sample, metrics
>>> t = targets.make("gmm-iso", 2, 0)
>>> r = sample(t, samplers.Heroism(3, 3), schedules.log_snr(20), n=2000, seed=0, jacobian="full")
>>> m = metrics.tv_kl(t, r)
>>> m.tv < 1e-2 and m.tv_se < m.tv
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from . import checks
from .targets import Target

if TYPE_CHECKING:
    from .sampling import Result

__all__ = ["TVKL", "log_ratio", "tv_kl", "weight_diagnostics", "kl_tail_limit", "w2", "w2_report", "coupling_rmse", "bin_masses", "histogram_tv"]


@dataclass
class TVKL:
    """TV and KL of a run with their Monte-Carlo standard errors, the sample size n, and two
    diagnostics of the importance weights w = q / p_out (`weight_diagnostics`): ess, the effective
    sample size fraction (sum w)^2 / (n sum w^2), and kl_tail, the share of the KL terms' sum of
    squared deviations carried by the single largest one; `kl_se_reliable` is False when that share
    is ten times what a light-tailed sample of size n gives (2 ln n / n), i.e. one sample decides
    the standard error."""
    tv: float
    tv_se: float
    kl: float
    kl_se: float
    n: int
    ess: float = float("nan")
    kl_tail: float = float("nan")

    @property
    def kl_se_reliable(self):
        return bool(np.isfinite(self.kl_tail) and self.kl_tail <= kl_tail_limit(self.n))


def kl_tail_limit(n: int) -> float:
    """The largest single-term share of the KL terms' squared deviations that `TVKL.kl_se_reliable`
    accepts: ten times 2 ln(n)/n, the share the largest of n Gaussian terms takes (its square is
    about 2 ln n times the variance), capped at 1 (below n ~ 60 no sample can be told heavy-tailed)."""
    return min(1.0, 20.0 * np.log(max(n, 2)) / max(n, 2))


def weight_diagnostics(log_w: ArrayLike) -> tuple[float, float]:
    """(ess, kl_tail) of the log importance weights log w = log q - log p_out of a run.

    ess = (sum w)^2 / (n sum w^2) (Kong 1992; computed from log w without overflow) is 1 for equal
    weights and about 1/n when one sample carries all the weight. kl_tail = max_i (l_i - mean l)^2 /
    sum_i (l_i - mean l)^2 with l = -log w, the KL terms: O(log n / n) for light tails, O(1) when
    the terms' variance is infinite or one sample sits far out, so the KL's standard error is then
    not to be trusted (heavy-tailed weights).

    >>> ess, tail = weight_diagnostics(np.zeros(4))
    >>> float(ess), bool(np.isnan(tail))
    (1.0, True)
    """
    lw = np.asarray(log_w, float)
    n = len(lw)
    a = lw - np.max(lw)
    ess = float(np.exp(2.0 * np.log(np.sum(np.exp(a))) - np.log(np.sum(np.exp(2.0 * a)))) / n)
    dev = (lw - lw.mean()) ** 2
    tot = float(dev.sum())
    return ess, (float(dev.max() / tot) if tot > 0 else float("nan"))


def log_ratio(target: Target, result: Result) -> np.ndarray:
    """log w = log q_{tau_end}(x_out) - log p_out(x_out) for every sample.

    Parameters
    ----------
    target : targets.Target
    result : sampling.Result
        A run with a log-determinant.

    Returns
    -------
    ndarray (n,)
    """
    if result.logdet is None:
        raise ValueError("result has no logdet: run sample(..., jacobian='full', 'structured' or 'diagonal')")
    logp_out = result.logp_in - result.logdet
    try:
        logq = target.log_density(result.x_out, result.taus[-1])
    except NotImplementedError as exc:
        raise ValueError(f"tv_kl needs the target's closed-form log density: {exc}") from None
    return logq - logp_out


def tv_kl(target: Target, result: Result) -> TVKL:
    """TV(p_out, q) and KL(p_out || q) with Monte-Carlo standard errors (change of variables).

    Parameters
    ----------
    target : targets.Target
        Supplies log q at taus[-1].
    result : sampling.Result
        A run made with a Jacobian mode (it carries the log-determinant).

    Returns
    -------
    TVKL
        tv, tv_se, kl, kl_se (standard errors std / sqrt(n)) and n.

    Assumes the sampler's map is injective, so that p_out(x_out) = p_in(x_in) / |det|: the
    samplers check det > 0 at every sample (a fold there raises), which does not prove the map
    injective away from the samples. Needs the target's `log_density`."""
    if not isinstance(target, Target):
        raise ValueError(f"target must be a Target, got {type(target).__name__}")
    lw, floor = _log_ratio_and_rounding(target, result)
    n = len(lw)
    # (1 - w)_+ = -expm1(log w) where log w < 0: exact to rounding when w is near 1
    tv_terms = np.where(lw < 0, -np.expm1(np.minimum(lw, 0.0)), 0.0)
    kl_terms = -lw

    def se(v):
        # the Monte-Carlo error and, beside it, the rounding of log w (systematic, so it does not
        # shrink with n): below it neither TV nor KL is resolved (|(1 - w)_+ change| <= |log w change|)
        return float(np.hypot(np.std(v, ddof=1) / np.sqrt(n), floor)) if n > 1 else float("nan")
    return TVKL(float(tv_terms.mean()), se(tv_terms), float(kl_terms.mean()), se(kl_terms), n, *weight_diagnostics(lw))


# log w = log q - log p_in + logdet is a difference of terms computed to a few ulps each (sums over
# d coordinates, a slogdet): ROUNDING_ULPS ulps of their mean magnitude bound its systematic error.
ROUNDING_ULPS = 8.0


def _log_ratio_and_rounding(target, result):
    lw = log_ratio(target, result)
    size = np.abs(lw + result.logp_in - result.logdet) + np.abs(result.logp_in) + np.abs(result.logdet)
    return lw, ROUNDING_ULPS * np.finfo(float).eps * float(np.mean(size))


def w2(x: ArrayLike, y: ArrayLike, method: str = "sliced", n_projections: int = 256, seed: int = 0) -> float:
    """Wasserstein-2 distance between the empirical laws of x (n, d) and y (m, d), with POT.

    method="sliced" (default, as the command line's --w2-method): ot.sliced_wasserstein_distance
    with p = 2 and a seeded set of projections, a lower bound on W2 in O(n log n) per projection.
    method="exact": sqrt(ot.emd2) with squared Euclidean costs (O(n^3); n up to a few thousand).
    (Flamary et al., "POT: Python Optimal Transport", JMLR 22(78), 2021.)

    Parameters
    ----------
    x, y : array_like (n, d), (m, d)
    method : {"exact", "sliced"}
    n_projections : int
        Sliced only.
    seed : int
        Seed of the projections (sliced only).

    Returns
    -------
    float

    Raises
    ------
    FloatingPointError
        When POT's network simplex stops before optimality (exact).

    >>> import numpy as np
    >>> x = np.zeros((3, 2)); y = np.ones((3, 2))
    >>> round(w2(x, y, "exact"), 12)              # the shift by (1, 1): sqrt 2
    1.414213562373
    >>> bool(w2(x, y) <= w2(x, y, "exact"))      # sliced W2 (the default) is a lower bound
    True
    """
    x = checks.array(x, "x", ndim=2)
    y = checks.array(y, "y", ndim=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if len(x) == 0 or len(y) == 0:
        raise ValueError("x and y must be non-empty")
    import ot                   # here, not at the top: it costs every sweep worker 0.3 s to start
    if method == "exact":
        a, b = np.full(len(x), 1.0 / len(x)), np.full(len(y), 1.0 / len(y))
        cost, log = ot.emd2(a, b, ot.dist(x, y), numItermax=10_000_000, log=True)
        if log.get("warning") or log.get("result_code", 1) != 1:
            raise FloatingPointError(f"w2: POT's network simplex did not converge ({log.get('warning')}); "
                                     "the distance would be wrong")
        return float(np.sqrt(max(cost, 0.0)))
    if method == "sliced":
        n_projections = checks.integer(n_projections, "n_projections", minimum=1)
        return float(ot.sliced_wasserstein_distance(x, y, n_projections=n_projections, p=2, seed=seed))
    raise ValueError(f"method must be 'exact' or 'sliced', got {method!r}")


def w2_report(target: Target, result: Result, method: str = "sliced", seed: int = 0, **kw) -> tuple[float, float]:
    """W2 between x_out and an independent exact sample of q_{tau_end} of the same size, and the
    noise floor: the same distance between two independent exact samples of that size.

    Parameters
    ----------
    target : targets.Target
        Needs `sample`.
    result : sampling.Result
    method : {"exact", "sliced"}
    seed : int

    Returns
    -------
    (float, float)
        W2 and its noise floor: a W2 near the floor does not resolve the sampler's error.
    """
    rng = np.random.default_rng([checks.integer(seed, "seed", minimum=0), 17])
    tau, n = result.taus[-1], len(result.x_out)
    try:
        y1, y2 = target._sample(n, tau, rng), target._sample(n, tau, rng)
    except NotImplementedError as exc:
        raise ValueError(f"w2 needs exact samples of the target: {exc}") from None
    return w2(result.x_out, y1, method, seed=seed, **kw), w2(y1, y2, method, seed=seed, **kw)


def coupling_rmse(result: Result, reference_x: ArrayLike) -> float:
    """sqrt(E |x_out - Phi_ref(x_in)|^2): pathwise error, an upper bound on W2(p_out, p_ref).

    Parameters
    ----------
    result : sampling.Result
    reference_x : ndarray (n, d)
        The reference flow's image of result.x_in (e.g. `samplers.Reference().run(...).x`).

    Returns
    -------
    float
    """
    reference_x = checks.array(reference_x, "reference_x", shape=result.x_out.shape)
    return float(np.sqrt(np.mean(np.sum((result.x_out - reference_x) ** 2, axis=1))))


def bin_masses(target, tau, edges, refine=16):
    """Masses of q_tau on the cells of a grid (d = 1 or 2) and outside it, by composite
    Gauss-Legendre quadrature of the closed-form density with `refine` nodes per cell and axis.

    Parameters
    ----------
    target : targets.Target
        d = 1 or 2, with `log_density`.
    tau : float
    edges : list of 1-D arrays
        Cell edges per axis.
    refine : int

    Returns
    -------
    ndarray
        Cell masses, shape (cells,) or (cells_x, cells_y).
    """
    t, w = np.polynomial.legendre.leggauss(refine)
    axes = []
    for e in edges:
        half = 0.5 * np.diff(e)
        nodes = (0.5 * (e[:-1] + e[1:]))[:, None] + half[:, None] * t[None, :]
        axes.append((nodes, half[:, None] * w[None, :]))
    if len(edges) == 1:
        (nodes, wt), = axes
        dens = np.exp(target.log_density(nodes.reshape(-1, 1), tau)).reshape(nodes.shape)
        return (dens * wt).sum(axis=1)
    (n0, w0), (n1, w1) = axes
    X, Y = np.meshgrid(n0.ravel(), n1.ravel(), indexing="ij")
    dens = np.exp(target.log_density(np.column_stack([X.ravel(), Y.ravel()]), tau))
    dens = dens.reshape(n0.shape[0], refine, n1.shape[0], refine)
    return np.einsum("iajb,ia,jb->ij", dens, w0, w1)


def histogram_tv(target: Target, result: Result, bins: int = 60, refine: int = 16) -> float:
    """TV between the histogram of x_out and the exact bin masses of q_{tau_end}, for d <= 2.

    Returns (tv, se, bias): the half-L1 distance over the cells plus the mass outside the grid,
    its standard error (delta method on the multinomial counts), and an upper estimate of its
    upward bias from sampling noise, (1/2) sum_b sqrt(2 q_b / (pi n)). Binning biases it down.
    An independent, sample-based cross-check of `tv_kl` for low dimensions.
    """
    x = result.x_out
    n, d = x.shape
    if d > 2:
        raise ValueError(f"histogram_tv needs d <= 2, got d = {d}")
    bins = checks.integer(bins, "bins", minimum=2)
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = 0.05 * (hi - lo) + 1e-9
    edges = [np.linspace(lo[i] - pad[i], hi[i] + pad[i], bins + 1) for i in range(d)]
    counts = np.histogramdd(x, bins=edges)[0].ravel()
    q = bin_masses(target, result.taus[-1], edges, refine).ravel()
    phat = counts / n
    diff = phat - q
    tv = 0.5 * (np.abs(diff).sum() + (1.0 - q.sum()))      # all samples lie inside the grid
    # Var of (1/2) sum_b sign(diff_b) phat_b under the multinomial: (1/4)(sum s^2 p - (sum s p)^2)/n
    s = np.sign(diff)
    var = 0.25 * ((s * s * phat).sum() - (s * phat).sum() ** 2) / n
    bias = 0.5 * np.sqrt(2.0 / (np.pi * n)) * np.sqrt(q).sum()
    return float(tv), float(np.sqrt(var)), float(bias)
