"""Multistep samplers: DPM-Solver++ 2M/3M, UniPC, DEIS and iPNDM.

Each keeps a history of denoiser (D) or noise (eps) predictions at the previous points; the first
steps use the lower orders while the history fills (the warm-up of the reference codes). Every
update is a linear combination of the state and the history with coefficients fixed by the noise
levels, taken through `Tangent.combine`, so the log-determinant is exact.
"""

import functools
import math

import numpy as np

from .. import checks
from .base import Sampler, a_of, lambda_of, rho_of, tau_of_lambda

__all__ = ["DPMSolverPP", "UniPC", "DEIS", "IPNDM", "ab_weights"]


class DPMSolverPP(Sampler):
    """DPM-Solver++ multistep, data prediction D = (x + tau s)/a, in lambda = log(a / sqrt(tau))
    (Lu, Zhou, Bao, Chen, Li & Zhu, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
    Probabilistic Models", arXiv:2211.01095, 2022); order 2 (2M) or 3 (3M). One score evaluation
    per step (plus one with warmup="2s"). The defaults are the released update, equal to
    diffusers' `DPMSolverMultistepScheduler` (lower_order_final off).

    Parameters
    ----------
    order : {2, 3}
    warmup : {"lower", "2s"}
        "lower": the first steps use orders 1, then 2 (the reference code). Its first-order first
        step has local error O(h^2), so 3M is asymptotically second order, with a constant scaled
        by a(tau_max). "2s": the first step is DPM-Solver++(2S) (midpoint in lambda, one extra
        evaluation), which keeps 3M third order for every h.
    coefficient : {"released", "taylor"}
        The 3M second-difference term. "released" (-a phi_3 D2, the authors' code and diffusers)
        makes 3M globally second order; "taylor" (-2 a phi_3 D2: the exact integral of the
        quadratic interpolant, D2 = (D1_0 - D1_1)/(r0 + r1) ~ h^2 m''/2) is third order.
        Registry: "dpm3m" is the released update, "dpm3m-taylor" the third-order variant with
        the 2S warm-up.
    """

    multistep = True

    def __init__(self, order=2, warmup="lower", coefficient="released"):
        order = checks.integer(order, "order")
        if order not in (2, 3):
            raise ValueError(f"order must be 2 or 3, got {order!r}")
        if warmup not in ("lower", "2s"):
            raise ValueError(f"warmup must be 'lower' or '2s', got {warmup!r}")
        if coefficient not in ("taylor", "released"):
            raise ValueError(f"coefficient must be 'taylor' or 'released', got {coefficient!r}")
        self.order, self.warmup, self.coefficient = order, warmup, coefficient

    def nfe(self, steps):
        return steps + (1 if self.warmup == "2s" else 0)

    def integrate(self, target, taus, x, Dx, tan, out):
        lam = 0.5 * (np.log1p(-taus) - np.log(taus))
        hist = []                                   # (D, dD) at previous points, newest first
        for i, (tau_hi, tau_lo) in enumerate(zip(taus[:-1], taus[1:])):
            hist.insert(0, tan.data(x, tau_hi, Dx))
            del hist[self.order:]
            h = lam[i + 1] - lam[i]
            a_lo, phi1 = a_of(tau_lo), math.expm1(-h)
            cx = math.sqrt(tau_lo / tau_hi)
            order = min(self.order, len(hist))
            if order == 1 and self.warmup == "2s":
                # midpoint in lambda: u = (sigma_s/sigma_hi) x - a_s phi1(h/2) m0, x = cx x - a_lo phi1 D(u, s)
                tau_s = tau_of_lambda(lam[i] + 0.5 * h)
                u = tan.combine([math.sqrt(tau_s / tau_hi), -a_of(tau_s) * math.expm1(-0.5 * h)], [(x, Dx), hist[0]])
                coef, terms = [cx, -a_lo * phi1], [(x, Dx), tan.data(u[0], tau_s, u[1])]
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
                # D2 = (D1_0 - D1_1)/(r0+r1); x = cx x - a phi1 m0 + a phi2 D1 - c a phi3 D2
                p = r0 / (r0 + r1)
                q = 1.0 / (r0 + r1)
                d10 = np.array([1 / r0, -1 / r0, 0.0])     # coefficients of (m0, m1, m2)
                d11 = np.array([0.0, 1 / r1, -1 / r1])
                D1 = d10 + p * (d10 - d11)
                D2 = q * (d10 - d11)
                c2 = 2.0 if self.coefficient == "taylor" else 1.0
                cm = -a_lo * phi1 * np.array([1.0, 0, 0]) + a_lo * phi2 * D1 - c2 * a_lo * phi3 * D2
                coef = [cx] + list(cm)
                terms = [(x, Dx)] + hist[:3]
            x, Dx = tan.combine(coef, terms)
            yield tau_hi, tau_lo, x, Dx

    def __repr__(self):
        return f"DPMSolverPP(order={self.order}, warmup={self.warmup!r}, coefficient={self.coefficient!r})"


def _unipc_coefficients(rks, hh, order, variant):
    """R (order x order) and b (order,) of UniPC's B(h) update (Zhao, Bai, Rao, Zhou & Lu 2023,
    Algorithm in the released code): R[i] = rks^i, b_i = i! phi_{i+1}(hh) / B(hh) with
    phi_1 = expm1(hh)/hh etc., B(hh) = hh (bh1) or expm1(hh) (bh2)."""
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    B_h = hh if variant == "bh1" else math.expm1(hh)
    R, b, fact = [], [], 1
    for i in range(1, order + 1):
        R.append(np.power(rks, i - 1))
        b.append(h_phi_k * fact / B_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    return np.array(R), np.array(b), h_phi_1, B_h


@functools.lru_cache(maxsize=4096)
def _unipc_combination(tau_t, tau_s0, lams, lam_t, order, variant, corrected):
    """Coefficients of UniPC's update from s0 to t on [x, m_0 .. m_{order-1}] (+ [m_t] when
    corrected), lams[k] the lambda of m_k; cached, so computed once per step of a run, not once
    per chunk of it."""
    h = lam_t - lams[0]
    rks = [(lams[k] - lams[0]) / h for k in range(1, order)] + [1.0]
    R, b, h_phi_1, B_h = _unipc_coefficients(np.array(rks), -h, order, variant)
    a_t = a_of(tau_t)
    # x_t = (sig_t/sig_s0) x - a_t h_phi_1 m0 - a_t B_h (sum_k rho_k (m_k - m0)/r_k [+ rho_c (m_t - m0)])
    cm = np.zeros(order + 1)                       # coefficients of hist[0..order-1], m_t
    cm[0] = -a_t * h_phi_1
    if not corrected:
        rhos = np.array([0.5]) if order == 2 else (np.linalg.solve(R[:-1, :-1], b[:-1]) if order > 2 else np.zeros(0))
        last = 0.0
    else:
        rhos_all = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
        rhos, last = rhos_all[:-1], rhos_all[-1]
    for k in range(1, order):
        if k - 1 < len(rhos):
            c = -a_t * B_h * rhos[k - 1] / rks[k - 1]
            cm[k] += c
            cm[0] -= c
    if corrected:
        cm[order] += -a_t * B_h * last
        cm[0] -= -a_t * B_h * last
    return tuple([math.sqrt(tau_t / tau_s0)] + list(cm[:order]) + ([cm[order]] if corrected else []))


class UniPC(Sampler):
    """UniPC: the unified predictor-corrector of Zhao, Bai, Rao, Zhou & Lu, "UniPC: A Unified
    Predictor-Corrector Framework for Fast Sampling of Diffusion Models", arXiv:2302.04867 (2023),
    data prediction, B(h) variants bh1 and bh2.

    At each point the evaluation D(x_t) first corrects x_t with UniC (using the same evaluation,
    so the corrector costs no extra NFE), then UniP of order p predicts the next point from the
    corrected x_t and the last p evaluations. The last step is not corrected. With the
    corrector the order is p + 1; the first steps use lower orders while the history fills.
    Follows diffusers' `UniPCMultistepScheduler` (equal to it to rounding in float64).

    Parameters
    ----------
    order : {1, 2, 3}
        Predictor order p (diffusers' solver_order).
    variant : {"bh1", "bh2"}
        B(h) = h (bh1) or e^h - 1 (bh2).
    corrector : bool
        Apply UniC (default). False gives UniP alone.
    lower_order_final : bool
        As diffusers (default True there): the order at step i is min(order, steps - i), so the
        last step is first order. Default False here: it caps the global order at 2.
    """

    multistep = True

    def __init__(self, order=3, variant="bh2", corrector=True, lower_order_final=False):
        order = checks.integer(order, "order")
        if order not in (1, 2, 3):
            raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
        self.order, self.variant = order, variant
        self.corrector = checks.boolean(corrector, "corrector")
        self.lower_order_final = checks.boolean(lower_order_final, "lower_order_final")

    def nfe(self, steps):
        return steps

    def _update(self, tan, x, taus, lam, hist, i_s0, i_t, order, m_t):
        """UniP (m_t None) or UniC update from point i_s0 to i_t; hist[k] at point i_s0 - k."""
        coefs = _unipc_combination(float(taus[i_t]), float(taus[i_s0]), tuple(float(lam[i_s0 - k]) for k in range(order)),
                                   float(lam[i_t]), order, self.variant, m_t is not None)
        terms = [x] + hist[:order] + ([m_t] if m_t is not None else [])
        return tan.combine(list(coefs), terms)

    def integrate(self, target, taus, x, Dx, tan, out):
        lam = 0.5 * (np.log1p(-taus) - np.log(taus))
        steps = len(taus) - 1
        hist, last, this_order = [], None, None       # hist: (D, dD) newest first
        for i in range(steps):
            m = tuple(tan.data(x, taus[i], Dx))     # written once: the corrector and the predictor both read it
            if i > 0 and self.corrector:
                x, Dx = self._update(tan, last, taus, lam, hist, i - 1, i, this_order, m)
            hist.insert(0, m)
            del hist[self.order:]
            this_order = min(self.order, steps - i) if self.lower_order_final else self.order
            this_order = min(this_order, len(hist))
            last = (x, Dx)
            x, Dx = self._update(tan, last, taus, lam, hist, i, i + 1, this_order, None)
            yield taus[i], taus[i + 1], x, Dx

    def __repr__(self):
        return (f"UniPC(order={self.order}, variant={self.variant!r}, corrector={self.corrector}, "
                f"lower_order_final={self.lower_order_final})")


_GL_T, _GL_W = np.polynomial.legendre.leggauss(16)


def ab_weights(points, tau_lo, basis):
    """c_k = int_{rho(points[0])}^{rho(tau_lo)} l_k(v(rho)) d rho for the Lagrange basis l_k on the
    history `points` (noise levels, newest first; points[0] is the start of the step) in the
    variable v = log rho ("log-rho"), rho ("rho") or tau ("tau").

    An Adams-Bashforth step on the EDM form d(x/a)/d rho = eps is then
    x_lo = a_lo [x / a_hi + sum_k c_k eps_k]. Computed in w = log rho, where d rho = e^w dw and
    every integrand is analytic near the real axis (tau(w) = e^{2w}/(1 + e^{2w}) has its poles
    at distance pi/2), by composite 16-point Gauss-Legendre on panels of width <= 1/2: exact to
    rounding (checked against scipy's quad in the tests).

    Parameters
    ----------
    points : array_like (k,)
        Noise levels of the history, newest (the step's start) first.
    tau_lo : float
        The step's end.
    basis : {"log-rho", "rho", "tau"}

    Returns
    -------
    ndarray (k,)

    Examples
    --------
    One point: c = rho(tau_lo) - rho(points[0]), the DDIM step.

    >>> round(float(ab_weights([0.5], 0.2, "tau")[0]), 12)       # rho(0.2) - rho(0.5) = 0.5 - 1
    -0.5
    """
    p = np.asarray(points, float)
    w_hi, w_lo = math.log(rho_of(p[0])), math.log(rho_of(tau_lo))
    panels = max(1, int(math.ceil(abs(w_hi - w_lo) / 0.5)))
    edges = np.linspace(w_hi, w_lo, panels + 1)
    half = 0.5 * np.diff(edges)
    w = (0.5 * (edges[:-1] + edges[1:])[:, None] + half[:, None] * _GL_T[None, :]).ravel()
    wt = (half[:, None] * _GL_W[None, :]).ravel() * np.exp(w)

    def var(wv, tau):
        if basis == "log-rho":
            return wv if tau is None else np.log(np.sqrt(tau / (1 - tau)))
        if basis == "rho":
            return np.exp(wv) if tau is None else np.sqrt(tau / (1 - tau))
        return 1.0 / (1.0 + np.exp(-2.0 * wv)) if tau is None else tau

    vq, vp = var(w, None), var(None, p)
    c = np.empty(len(p))
    for k in range(len(p)):
        lk = np.ones_like(vq)
        for j in range(len(p)):
            if j != k:
                lk *= (vq - vp[j]) / (vp[k] - vp[j])
        c[k] = wt @ lk
    return c


@functools.lru_cache(maxsize=4096)
def _ab_weights_cached(points, tau_lo, basis):
    """`ab_weights` once per step of a run, not once per chunk of it (read-only result)."""
    c = ab_weights(points, tau_lo, basis)
    c.flags.writeable = False
    return c


class DEIS(Sampler):
    """DEIS multistep (Zhang & Chen, "Fast Sampling of Diffusion Models with Exponential
    Integrator", arXiv:2204.13902, 2022): Adams-Bashforth on the EDM form d(x/a)/d rho = eps,
    eps = -sqrt(tau) s, with the last `order` noise predictions interpolated by a polynomial in
    the variable `basis` and integrated exactly (`ab_weights`). One evaluation per step; the first
    steps use lower orders while the history fills.

    Parameters
    ----------
    order : {1, 2, 3}
    basis : {"log-rho", "tau", "rho"}
        "log-rho": the released multistep DEIS, equal to diffusers' `DEISMultistepScheduler`
        (lower_order_final off). "tau": tAB-DEIS with t = tau (the noise level is this project's
        time). "rho": rhoAB-DEIS, which is also the variable-step form of iPNDM.
    """

    multistep = True

    def __init__(self, order=3, basis="log-rho"):
        order = checks.integer(order, "order")
        if order not in (1, 2, 3):
            raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
        if basis not in ("log-rho", "tau", "rho"):
            raise ValueError(f"basis must be 'log-rho', 'tau' or 'rho', got {basis!r}")
        self.order, self.basis = order, basis

    def nfe(self, steps):
        return steps

    def integrate(self, target, taus, x, Dx, tan, out):
        hist = []           # scores (g, Dg) newest first: eps = -sqrt(tau) g is folded into the weights
        for i, (tau_hi, tau_lo) in enumerate(zip(taus[:-1], taus[1:])):
            hist.insert(0, tan.score(x, tau_hi, Dx))
            del hist[self.order:]
            k = len(hist)
            points = tuple(float(t) for t in taus[i::-1][:k])
            c = _ab_weights_cached(points, float(tau_lo), self.basis) * -np.sqrt(points)
            a_hi, a_lo = a_of(tau_hi), a_of(tau_lo)
            x, Dx = tan.combine([a_lo / a_hi] + list(a_lo * c), [(x, Dx)] + hist)
            yield tau_hi, tau_lo, x, Dx

    def __repr__(self):
        return f"DEIS(order={self.order}, basis={self.basis!r})"


class IPNDM(Sampler):
    """iPNDM (Zhang & Chen, arXiv:2204.13902, 2022, Appendix): Adams-Bashforth with the fixed
    coefficients of a uniform grid on the EDM form,

        x_{i+1}/a_{i+1} = x_i/a_i + (rho_{i+1} - rho_i) sum_j b_j eps_{i-j},

    b = [1], [3, -1]/2, [23, -16, 5]/12, [55, -59, 37, -9]/24 as the history fills (order <= 4).
    Fourth order on grids uniform in rho; on other grids the fixed coefficients are consistent
    only to first order (measured in the tests). The variable-step form is `DEIS(basis="rho")`.
    """

    multistep = True
    COEFFICIENTS = ([1.0], [1.5, -0.5], [23 / 12, -16 / 12, 5 / 12], [55 / 24, -59 / 24, 37 / 24, -9 / 24])

    def __init__(self, order=4):
        self.order = checks.integer(order, "order", minimum=1)
        if self.order > 4:
            raise ValueError(f"order must be <= 4, got {order!r}")

    def nfe(self, steps):
        return steps

    def integrate(self, target, taus, x, Dx, tan, out):
        hist = []           # (g, Dg, -sqrt(tau)) newest first: eps = -sqrt(tau) g folded into the weights
        for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
            hist.insert(0, (*tan.score(x, tau_hi, Dx), -math.sqrt(tau_hi)))
            del hist[self.order:]
            b = self.COEFFICIENTS[len(hist) - 1]
            a_hi, a_lo = a_of(tau_hi), a_of(tau_lo)
            dr = rho_of(tau_lo) - rho_of(tau_hi)
            x, Dx = tan.combine([a_lo / a_hi] + [a_lo * dr * bj * sj for bj, (_, _, sj) in zip(b, hist)],
                                [(x, Dx)] + [(g, Dg) for g, Dg, _ in hist])
            yield tau_hi, tau_lo, x, Dx

    def __repr__(self):
        return f"IPNDM(order={self.order})"
