"""Score estimates with errors of controlled size: ŝ = s + δ on a base target, whose truth
(log density, exact draws) stays the base's, so metrics measure the sampler driven by ŝ against
q_tau (SPEC 3, 11)."""

import numpy as np

from .. import checks
from .base import Target

__all__ = ["Perturbed"]


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
