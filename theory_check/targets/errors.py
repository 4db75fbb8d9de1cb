"""Score estimates with errors of controlled size and regularity (SPEC 3 and 11).

A field wraps a base target: the samplers see the estimate s_hat = s + delta (its `score` and
Jacobians), while `log_density` and `sample` stay the base's truth, so TV and KL measure the map
driven by s_hat against q_tau. Every score evaluation records, summed over its batch,
|delta|^2, |grad delta|_F^2 and |grad delta|_2^2 (operator norm), so a run reports the realised
eps_s^2 = mean E|s_hat - s|^2 over its evaluations and both readings of the Jacobian error
(`ScoreError.score_error`).

* `Perturbed` (field "smooth"): delta = eps tau^(-1/2) R tanh(A x + b), one smooth feature map.
* `FourierError` (field "fourier", rough in x): delta = eps tau^(-1/2) sqrt(2/m) R cos(omega Omega x / l + b)
  with random Fourier features; at fixed eps the Jacobian error grows like omega and the second
  derivatives like omega^2, so eps ~ 1/omega holds eps_J fixed while only the higher derivatives grow.
* `QuantisedError` (field "quantised", rough in tau): s_hat(x, tau) = s(x, tau_k) at the nearest of M
  training levels (the timesteps of DDPM's 1000-step linear-beta grid, M of them evenly spaced):
  smooth in x, exact at the levels, jumps between them, as a network trained at discrete timesteps.

Example
-------
>>> import numpy as np
>>> from theory_check import targets
>>> base = targets.make("gmm-iso", 3, 0)
>>> f = FourierError(base, 0.1, omega=4.0, seed=1)
>>> x = base.sample(5, 0.3, np.random.default_rng(0))
>>> f.score(x, 0.3).shape, len(f.records)
((5, 3), 1)
"""

import numpy as np

from .. import checks
from .base import Target

__all__ = ["ScoreError", "Perturbed", "FourierError", "QuantisedError", "ddpm_levels", "FIELDS"]

NORMALISING_DRAWS = 4096        # exact draws from q_{1e-3} that set each field's scale and normalisation
NORMALISING_TAU = 1e-3


def _draws(base, seed):
    return base.sample(NORMALISING_DRAWS, NORMALISING_TAU, np.random.default_rng([checks.integer(seed, "seed"), 7]))


def _data_scale(x0):
    """l: the RMS coordinate of the target's draws (the scale on which the features vary)."""
    return float(np.sqrt(np.mean(np.sum(x0 * x0, axis=1)) / x0.shape[1])) + 1e-12


class ScoreError(Target):
    """Base of the score-error fields: s_hat = s + delta on `base` (a `Target`).

    Subclasses implement `_delta(x, tau, want_jac) -> (delta (n, d), grad delta (n, d, d) or None)`,
    and, where the field keeps a structure of the base's Jacobian, `_delta_diag` (products:
    a diagonal grad delta). `records` holds one tuple (tau, n, sum |delta|^2, sum |grad delta|_F^2,
    sum |grad delta|_2^2) per evaluation (NaN where no Jacobian was asked for).
    """

    def __init__(self, base):
        if not isinstance(base, Target):
            raise ValueError(f"base must be a Target, got {type(base).__name__}")
        self.base, self.dim = base, base.dim
        self.records = []

    def log_density(self, x, tau):
        return self.base.log_density(x, tau)

    def _sample(self, n, tau, rng):
        return self.base._sample(n, tau, rng)

    def mean_cov(self, tau):
        return self.base.mean_cov(tau)

    def _record(self, tau, delta, dJ, diagonal=False):
        if dJ is None:
            fro = op = np.nan
        elif diagonal:                          # grad delta = diag(dJ): |.|_F^2 = sum, |.|_2^2 = max
            fro, op = float(np.sum(dJ * dJ)), float(np.sum(np.max(dJ * dJ, axis=1)))
        else:
            fro = float(np.sum(dJ * dJ))
            # (a non-finite field is the sampler's NumericalError to report, with its step; SVD would raise)
            op = float(np.sum(np.linalg.norm(dJ, 2, axis=(1, 2)) ** 2)) if np.isfinite(fro) and dJ.size else np.nan
        self.records.append((tau, len(delta), float(np.sum(delta * delta)), fro, op))

    def _eval(self, x, tau, want_jac):
        logq, s, J = self.base._eval(x, tau, want_jac)
        delta, dJ = self._delta(x, tau, want_jac)
        self._record(tau, delta, dJ)
        return logq, s + delta, (J + dJ) if want_jac else J

    def score_error(self, band=None):
        """Realised errors over the recorded evaluations, averaged over every (evaluation, sample)
        pair (so a batch run in chunks gives the same): (eps_s^2 = mean |s_hat - s|^2,
        mean |grad s_hat - grad s|_F^2, mean |grad s_hat - grad s|_2^2); the last two NaN when no
        evaluation carried a Jacobian. `band` (lo, hi): only the evaluations with lo <= tau < hi
        (all NaN when there are none)."""
        if not self.records:
            raise ValueError("no score evaluations recorded yet")
        rec = np.array(self.records)
        if band is not None:
            rec = rec[(rec[:, 0] >= band[0]) & (rec[:, 0] < band[1])]
            if not len(rec):
                return np.nan, np.nan, np.nan
        has_jac = np.isfinite(rec[:, 3])
        jac = [float(rec[has_jac, k].sum() / rec[has_jac, 1].sum()) if has_jac.any() else np.nan for k in (3, 4)]
        return float(rec[:, 2].sum() / rec[:, 1].sum()), jac[0], jac[1]


class Perturbed(ScoreError):
    """A score estimate s_hat = s + delta with a smooth, seeded, bounded error field (the score-error
    setting of Li, Zhou, Wei & Chen, "Faster Diffusion Models via Higher-Order Approximation",
    arXiv:2506.24042, 2025): the field "smooth".

    delta(x, tau) = eps tau^{-1/2} h(x), h(x) = R tanh(A x + b), R scaled so that E|h(X)|^2 = 1
    for X ~ q_{1e-3} of the base (estimated once from 4096 exact draws).
    """

    def __init__(self, base, eps, seed=0, width=None):
        super().__init__(base)
        self.eps = checks.positive(eps, "eps", allow_zero=True)
        width = max(self.dim, 8) if width is None else checks.integer(width, "width", minimum=1)
        rng = checks.rng(seed)
        x0 = _draws(base, seed)
        self.A = rng.standard_normal((width, self.dim)) / (_data_scale(x0) * np.sqrt(self.dim))
        self.b = rng.standard_normal(width)
        R = rng.standard_normal((self.dim, width))
        h = np.tanh(x0 @ self.A.T + self.b) @ R.T
        self.R = R / np.sqrt(np.mean(np.sum(h * h, axis=1)))

    def __repr__(self):
        return f"Perturbed({self.base!r}, eps={self.eps:g})"

    def _delta(self, x, tau, want_jac):
        t = np.tanh(x @ self.A.T + self.b)
        f = self.eps / np.sqrt(tau)
        # R diag(1 - t^2) A per sample as one batched GEMM (a three-operand einsum loops in C: O(n d^2 p)
        # without BLAS, which made d = 2048 run for minutes per chunk)
        dJ = f * np.matmul(self.R * (1.0 - t * t)[:, None, :], self.A) if want_jac else None
        return f * t @ self.R.T, dJ


class FourierError(ScoreError):
    """Random-Fourier-feature error, rough in x: the field "fourier".

    delta(x, tau) = eps tau^{-1/2} sqrt(2/m) R cos(omega Omega x / l + b), Omega ~ N(0, I) (m, d),
    b ~ U(0, 2 pi), l the data scale, R (d, m) scaled so that E|delta|^2 = eps^2/tau under q_{1e-3}.
    grad delta = -eps tau^{-1/2} sqrt(2/m) (omega/l) R diag(sin(.)) Omega: its size grows like omega,
    the second derivatives like omega^2.

    `separable=True` makes every coordinate's error a function of that coordinate alone,
    delta_i = eps tau^{-1/2} sqrt(2/m) sum_j R_ij cos(omega Omega_ij x_i / l + b_ij), with
    E delta_i^2 = eps^2/tau for every i (the per-coordinate error is eps, the total grows like d);
    on a product base its Jacobian stays diagonal (jacobian="diagonal").
    """

    def __init__(self, base, eps, omega=1.0, m=None, seed=0, separable=False):
        super().__init__(base)
        self.eps = checks.positive(eps, "eps", allow_zero=True)
        self.omega = checks.positive(omega, "omega")
        self.m = (64 if not separable else 16) if m is None else checks.integer(m, "m", minimum=1)
        self.separable = checks.boolean(separable, "separable")
        self.diagonal = self.separable and getattr(base, "diagonal", False)
        rng = checks.rng(seed)
        x0 = _draws(base, seed)
        self.scale = _data_scale(x0)
        shape = (self.dim, self.m) if self.separable else (self.m, self.dim)
        self.Omega = rng.standard_normal(shape)
        self.b = rng.uniform(0.0, 2.0 * np.pi, self.m if not self.separable else shape)
        R = rng.standard_normal((self.dim, self.m))
        # every coordinate normalised when separable (its own E delta_i^2), the whole vector otherwise;
        # in blocks of draws: the separable features of 4096 draws at d = 4096 would take 2 GiB at once
        sq = np.zeros(self.dim)
        for i in range(0, len(x0), 256):
            h = self._features(x0[i:i + 256], R, 1.0, False)[0]
            sq += np.sum(h * h, axis=0)
        sq /= len(x0)
        self.R = R / (np.sqrt(sq)[:, None] if self.separable else np.sqrt(sq.sum()))

    def __repr__(self):
        return (f"FourierError({self.base!r}, eps={self.eps:g}, omega={self.omega:g}, m={self.m}"
                + (", separable=True)" if self.separable else ")"))

    def _features(self, x, R, f, want_jac, diagonal=False):
        """(delta, grad delta) for the amplitude f; grad delta (n, d) when diagonal."""
        k = self.omega / self.scale
        c = np.sqrt(2.0 / self.m) * f
        if self.separable:
            theta = k * x[:, :, None] * self.Omega + self.b                  # (n, d, m)
            delta = c * np.sum(R * np.cos(theta), axis=2)
            if not want_jac:
                return delta, None
            ds = -c * k * np.sum(R * self.Omega * np.sin(theta), axis=2)      # d delta_i / d x_i
            if diagonal:
                return delta, ds
            dJ = np.zeros((*x.shape, x.shape[1]))
            idx = np.arange(x.shape[1])
            dJ[:, idx, idx] = ds
            return delta, dJ
        theta = k * (x @ self.Omega.T) + self.b                              # (n, m)
        delta = c * np.cos(theta) @ R.T
        dJ = -c * k * np.matmul(R * np.sin(theta)[:, None, :], self.Omega) if want_jac else None
        return delta, dJ

    def _delta(self, x, tau, want_jac):
        return self._features(x, self.R, self.eps / np.sqrt(tau), want_jac)

    def _eval_diag(self, x, tau, want_ds, want_logq=True):
        """The diagonal mode's fused path (a separable field on a product base)."""
        logq, s, ds = self.base._eval_diag(x, tau, want_ds, want_logq)
        delta, dd = self._features(x, self.R, self.eps / np.sqrt(tau), want_ds, diagonal=True)
        self._record(tau, delta, dd, diagonal=True)
        return logq, s + delta, (ds + dd) if want_ds else None


def ddpm_levels(M=1000):
    """The M training noise levels of a network trained on DDPM's 1000-step linear-beta schedule
    (beta from 1e-4 to 0.02; Ho, Jain & Abbeel 2020): tau_t = 1 - prod_{i <= t}(1 - beta_i) at the
    timesteps round(linspace(0, 999, M)), increasing. M = 1000 is every timestep.

    >>> lv = ddpm_levels(10)
    >>> len(lv), bool(lv[0] == 1e-4), bool(0.9999 < lv[-1] < 1)
    (10, True, True)
    """
    M = checks.integer(M, "M", minimum=1)
    if M > 1000:
        raise ValueError(f"M must be <= 1000 (the timesteps of the 1000-step grid), got {M}")
    beta = np.linspace(1e-4, 0.02, 1000)
    tau = -np.expm1(np.cumsum(np.log1p(-beta)))
    return tau[np.unique(np.round(np.linspace(0, 999, M)).astype(int))]


class QuantisedError(ScoreError):
    """The exact score at the nearest training level, rough in tau: the field "quantised".

    s_hat(x, tau) = s(x, tau_k), tau_k the level of `ddpm_levels(M)` nearest to tau. Its Jacobian
    in x is the base's at tau_k, so every structure of the base's Jacobian is kept (structured and
    diagonal modes work as on the base). The truth s(x, tau) is evaluated beside it for the records
    (instrumentation, not counted as a score evaluation).
    """

    def __init__(self, base, M=1000):
        super().__init__(base)
        self.levels = ddpm_levels(M)
        self.M = len(self.levels)
        self.active_basis = getattr(base, "active_basis", None)
        self.diagonal = getattr(base, "diagonal", False)

    def __repr__(self):
        return f"QuantisedError({self.base!r}, M={self.M})"

    def level(self, tau):
        """The training level nearest to tau."""
        return float(self.levels[np.argmin(np.abs(self.levels - tau))])

    def _eval(self, x, tau, want_jac):
        tk = self.level(tau)
        _, s_hat, J_hat = self.base._eval(x, tk, want_jac)
        logq, s, J = self.base._eval(x, tau, want_jac)
        self._record(tau, s_hat - s, (J_hat - J) if want_jac else None)
        return logq, s_hat, J_hat

    def _eval_diag(self, x, tau, want_ds, want_logq=True):
        tk = self.level(tau)
        _, s_hat, ds_hat = self.base._eval_diag(x, tk, want_ds, False)
        logq, s, ds = self.base._eval_diag(x, tau, want_ds, want_logq)
        self._record(tau, s_hat - s, (ds_hat - ds) if want_ds else None, diagonal=True)
        return logq, s_hat, ds_hat

    def _structured(self, x, tau, Q):
        tk = self.level(tau)
        s_hat, c_hat, G_hat = self.base._structured(x, tk, Q)
        s, c, G = self.base._structured(x, tau, Q)
        # grad delta = dc I + Q dG Q^T: |.|_F^2 = (d - m) dc^2 + |dc I_m + dG|_F^2, |.|_2 = max of both parts
        dc, dG = c_hat - c, G_hat - G
        m = Q.shape[2]
        inner = dG + dc[:, None, None] * np.eye(m)
        delta = s_hat - s
        fro = float(np.sum((self.dim - m) * dc * dc) + np.sum(inner * inner))
        op = float(np.sum(np.maximum(np.linalg.norm(inner, 2, axis=(1, 2)), np.abs(dc) if self.dim > m else 0.0) ** 2))
        self.records.append((tau, len(delta), float(np.sum(delta * delta)), fro, op))
        return s_hat, c_hat, G_hat


FIELDS = ("smooth", "fourier", "quantised", "learned")
# The structure of the base's score Jacobian each field keeps, as runs build them (fourier is
# separable on the products, so it keeps their diagonal; smooth features couple every coordinate).
KEEPS = {None: ("structured", "diagonal"), "smooth": (), "fourier": ("diagonal",), "quantised": ("structured", "diagonal"),
         "learned": ()}
