"""The ground-truth flow (`Reference`, DOP853) and ancestral sampling (`DDPM`)."""

import math

import numpy as np
from scipy.integrate import solve_ivp

from .. import checks
from .base import KnownLogdet, NumericalError, Sampler, a_of

__all__ = ["Reference", "DDPM"]


class DDPM(Sampler):
    """Ancestral DDPM sampling (Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models",
    arXiv:2006.11239, 2020) on the schedule: from tau_hi to tau_lo, with
    alpha_t = (1 - tau_hi)/(1 - tau_lo), beta_t = 1 - alpha_t and D = (x + tau_hi s)/a_hi,

        x_lo = [a_lo beta_t D + sqrt(alpha_t) tau_lo x] / tau_hi + sqrt(tau_lo beta_t / tau_hi) Z.

    Stochastic (seeded); no logdet. One evaluation per step."""

    deterministic = False
    chunked = False          # one random stream for the whole batch

    def __init__(self, seed=0):
        self.seed = checks.integer(seed, "seed", minimum=0)

    def nfe(self, steps):
        return steps

    def integrate(self, target, taus, x, Dx, tan, out):
        rng = np.random.default_rng(self.seed)
        for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
            g, _ = tan.score(x, tau_hi, None)
            a_hi, a_lo = a_of(tau_hi), a_of(tau_lo)
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
    d logdet / dlambda = tau (d + tr grad s) / 2, with the trace from the full, the structured or the diagonal
    Jacobian. All samples are integrated as one system (one step-size sequence for the batch;
    the error is controlled on that system, so rtol and atol bound the batch's weighted RMS
    error, and one sample's error may be several times larger). Only the end point is taken from
    the schedule; `nfe` counts the solver's right-hand-side evaluations."""

    chunked = False          # one step-size sequence for the whole batch

    def __init__(self, rtol=1e-10, atol=1e-12):
        self.rtol = checks.positive(rtol, "rtol")
        self.atol = checks.positive(atol, "atol")
        if self.rtol < 100 * np.finfo(float).eps:
            raise ValueError(f"rtol must be >= {100 * np.finfo(float).eps:.3g} (DOP853's floor), got {rtol!r}")

    def nfe(self, steps):
        """Not known before the run (adaptive steps): a rough 20 evaluations per schedule step."""
        return 20 * steps

    def integrate(self, target, taus, x, Dx, tan, out):
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
            elif tan.mode == "diagonal":
                _, s, ds = target._eval_diag(xx, tau, True, want_logq=False)
                tr = ds.sum(axis=1)
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
