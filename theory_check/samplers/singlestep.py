"""One-step samplers: DDIM, DPM-Solver++(2S), and explicit Runge-Kutta (Heun, RK4) on the EDM form."""

import math

from .base import Sampler, a_of, lambda_of, rho_of, tau_of_lambda, tau_of_rho

__all__ = ["DDIM", "DPMSolverPP2S", "Heun", "RK4"]


class DDIM(Sampler):
    """DDIM (Song, Meng & Ermon, "Denoising Diffusion Implicit Models", arXiv:2010.02502, 2021),
    deterministic (eta = 0): exponential Euler holding the noise prediction eps = -sqrt(tau) s
    constant in rho = sqrt(tau/(1 - tau)),

        x_lo = a_lo D + sqrt(tau_lo) eps,  D = (x - sqrt(tau_hi) eps) / a_hi.

    Equal to Euler in sigma = rho on the EDM form and to diffusers' `DDIMScheduler` (eta = 0,
    clip_sample off). One score evaluation per step.
    """

    def nfe(self, steps):
        return steps

    def integrate(self, target, taus, x, Dx, tan, out):
        for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
            g, Dg = tan.score(x, tau_hi, Dx)
            a_hi, a_lo = a_of(tau_hi), a_of(tau_lo)
            x, Dx = tan.combine([a_lo / a_hi, a_lo * tau_hi / a_hi - math.sqrt(tau_lo * tau_hi)], [(x, Dx), (g, Dg)])
            yield tau_hi, tau_lo, x, Dx


class DPMSolverPP2S(Sampler):
    """DPM-Solver++(2S), singlestep second order with data prediction (Lu, Zhou, Bao, Chen, Li & Zhu,
    "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    arXiv:2211.01095, 2022, Algorithm 1), intermediate point at the fraction r of the step in
    lambda = log(a / sqrt(tau)):

        u = (sigma_s / sigma_hi) x - a_s phi1(r h) D(x, tau_hi),   phi1(z) = expm1(-z)
        x_lo = (sigma_lo / sigma_hi) x - a_lo phi1(h) [(1 - 1/(2r)) D(x) + 1/(2r) D(u, tau_s)]

    with sigma = sqrt(tau). Two evaluations per step. With r = 1/2 a step equals the pair of steps
    of diffusers' `DPMSolverSinglestepScheduler` (solver_order=2, midpoint) over [tau_hi, tau_s, tau_lo].
    """

    def __init__(self, r=0.5):
        r = float(r)
        if not 0.0 < r < 1.0:
            raise ValueError(f"r must lie in (0, 1), got {r!r}")
        self.r = r

    def nfe(self, steps):
        return 2 * steps

    def integrate(self, target, taus, x, Dx, tan, out):
        r = self.r
        for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
            l_hi, l_lo = lambda_of(tau_hi), lambda_of(tau_lo)
            h = l_lo - l_hi
            tau_s = tau_of_lambda(l_hi + r * h)
            m0 = tan.data(x, tau_hi, Dx)
            u = tan.combine([math.sqrt(tau_s / tau_hi), -a_of(tau_s) * math.expm1(-r * h)], [(x, Dx), m0])
            m1 = tan.data(u[0], tau_s, u[1])
            c = -a_of(tau_lo) * math.expm1(-h)
            x, Dx = tan.combine([math.sqrt(tau_lo / tau_hi), c * (1 - 0.5 / r), c * 0.5 / r], [(x, Dx), m0, m1])
            yield tau_hi, tau_lo, x, Dx

    def __repr__(self):
        return f"DPMSolverPP2S(r={self.r!r})"


class _EDMRungeKutta(Sampler):
    """Explicit Runge-Kutta on the EDM form dz/drho = eps(a z, tau(rho)), z = x/a,
    rho = sqrt(tau/(1 - tau)), eps = -sqrt(tau) s (Karras, Aittala, Aila & Laine, "Elucidating the
    Design Space of Diffusion-Based Generative Models", arXiv:2206.00364, 2022)."""

    A: list
    b: list
    c: list

    def nfe(self, steps):
        return steps * len(self.b)

    def integrate(self, target, taus, x, Dx, tan, out):
        # z = x / a and eps = -sqrt(tau) s never materialise: every stage point
        # a_s (z + dr sum_j A_sj eps_j) and the step's end are one fused combination of x and the
        # stages' scores, with the scalings folded into the coefficients
        for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
            r_hi, r_lo = rho_of(tau_hi), rho_of(tau_lo)
            dr = r_lo - r_hi
            a_hi = a_of(tau_hi)
            gs, scale = [], []              # stage scores (g, Dg) and their -sqrt(tau_s)
            for st in range(len(self.b)):
                tau = tau_hi if self.c[st] == 0.0 else tau_lo if self.c[st] == 1.0 else tau_of_rho(r_hi + self.c[st] * dr)
                a = a_of(tau)
                if st == 0:
                    y = (x, Dx)
                else:
                    y = tan.combine([a / a_hi] + [a * dr * aij * sj for aij, sj in zip(self.A[st], scale)],
                                    [(x, Dx)] + gs[:len(self.A[st])])
                gs.append(tan.score(y[0], tau, y[1]))
                scale.append(-math.sqrt(tau))
            a_lo = a_of(tau_lo)
            x, Dx = tan.combine([a_lo / a_hi] + [a_lo * dr * bi * sj for bi, sj in zip(self.b, scale)], [(x, Dx)] + gs)
            yield tau_hi, tau_lo, x, Dx

    def __repr__(self):
        return type(self).__name__ + "()"


class Heun(_EDMRungeKutta):
    """Heun's method (explicit trapezoid) on the EDM form (Karras et al. 2022, arXiv:2206.00364,
    Algorithm 1 without the final Euler step); 2 score evaluations per step. Equal to diffusers'
    `HeunDiscreteScheduler` when its last step is a Heun step too."""
    A = [[], [1.0]]
    b = [0.5, 0.5]
    c = [0.0, 1.0]


class RK4(_EDMRungeKutta):
    """The classical fourth-order Runge-Kutta method on the EDM form; 4 evaluations per step."""
    A = [[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]]
    b = [1 / 6, 1 / 3, 1 / 3, 1 / 6]
    c = [0.0, 0.5, 0.5, 1.0]
