"""Noise-level schedules: strictly decreasing arrays `taus` in (0, 1) (SPEC section 4).

A sampler maps samples at taus[0] to samples at taus[-1]; steps = len(taus) - 1.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from . import checks

__all__ = ["paper", "log_snr", "edm", "karras", "sigma_to_tau", "tau_to_sigma", "validate"]


def paper(T: int, c0: float = 2.0, c1: float = 4.0) -> np.ndarray:
    """The learning-rate schedule of Li, Zhou, Wei & Chen, "Faster Diffusion Models via Higher-Order
    Approximation", arXiv:2506.24042 (2025), returned as [tau_T, ..., tau_1].

        beta_1 = T^{-c0},  beta_{t+1} = eta * min(beta_1 (1 + eta)^t, 1),  eta = c1 log T / T,
        alpha_bar_t = prod_{i<=t} (1 - beta_i),  tau_t = 1 - alpha_bar_t.

    T points, T - 1 steps. The end point tau_1 = beta_1 moves with T.

    Deviation (README): for small T the rate eta = c1 log T / T exceeds 1 (T = 4..8 at c1 = 4),
    so beta could reach or exceed 1 and alpha_bar would leave (0, 1). We use
    eta = min(c1 log T / T, 1/2), which equals the paper's rate whenever c1 log T / T <= 1/2
    (T >= 27 at c1 = 4), the regime the theorem is about.
    tau_t is computed as -expm1(sum log1p(-beta)) to keep full relative precision near 0.

    Parameters
    ----------
    T : int
        Number of points (T - 1 steps), >= 2.
    c0, c1 : float
        The paper's constants (beta_1 = T^-c0; growth rate c1 log T / T).

    Returns
    -------
    ndarray (T,)
        Strictly decreasing noise levels [tau_T, ..., tau_1].

    Examples
    --------
    >>> taus = paper(100)
    >>> len(taus), bool(taus[-1] == 1e-4)
    (100, True)
    """
    T = checks.integer(T, "T", minimum=2)
    c0 = checks.positive(c0, "c0")
    c1 = checks.positive(c1, "c1")
    eta = min(c1 * np.log(T) / T, 0.5)
    beta1 = float(T) ** (-c0)
    if not beta1 < 1.0:
        raise ValueError(f"c0 must make beta_1 = T^-c0 < 1, got {beta1}")
    t = np.arange(1, T)
    # log of beta_1 (1 + eta)^t, kept in logs so that large T does not overflow
    growth = np.log(beta1) + t * np.log1p(eta)
    beta = np.concatenate([[beta1], eta * np.exp(np.minimum(growth, 0.0))])
    taus = -np.expm1(np.cumsum(np.log1p(-beta)))[::-1].copy()
    if np.any(np.diff(taus) >= 0) or taus[0] >= 1.0:
        raise ValueError(f"c1 = {c1} is too large for T = {T}: alpha_bar_T = {np.exp(np.sum(np.log1p(-beta))):.1e} "
                         "is below float64 resolution next to 1, so consecutive tau are equal")
    return taus


def log_snr(steps: int, tau_min: float = 1e-3, tau_max: float = 1.0 - 1e-3) -> np.ndarray:
    """Uniform in lambda = log((1 - tau)/tau) from tau_max down to tau_min, end points exact: the
    log-SNR grid of DPM-Solver (Lu, Zhou, Bao, Chen, Li & Zhu, "DPM-Solver: A Fast ODE Solver for
    Diffusion Probabilistic Model Sampling in Around 10 Steps", arXiv:2206.00927, 2022).

    Examples
    --------
    >>> log_snr(2, 0.1, 0.9).round(6).tolist()
    [0.9, 0.5, 0.1]
    """
    steps = checks.integer(steps, "steps", minimum=1)
    tau_min, tau_max = checks.tau(tau_min, "tau_min"), checks.tau(tau_max, "tau_max")
    if not tau_min < tau_max:
        raise ValueError(f"tau_min must be < tau_max, got {tau_min} >= {tau_max}")
    lam = np.linspace(np.log1p(-tau_max) - np.log(tau_max), np.log1p(-tau_min) - np.log(tau_min), steps + 1)
    taus = 1.0 / (1.0 + np.exp(lam))
    taus[0], taus[-1] = tau_max, tau_min
    return _checked(taus)


def edm(steps: int, tau_min: float = 1e-3, tau_max: float = 1.0 - 1e-3, rho: float = 7.0) -> np.ndarray:
    """The EDM schedule of Karras, Aittala, Aila & Laine, "Elucidating the Design Space of
    Diffusion-Based Generative Models", arXiv:2206.00364 (2022): sigma = sqrt(tau/(1-tau)) spaced
    uniformly in sigma^(1/rho) from tau_max down to tau_min, end points exact.

    Parameters
    ----------
    steps : int
    tau_min, tau_max : float
        End points in (0, 1), tau_min < tau_max.
    rho : float
        EDM's rho (7 in the paper).

    Returns
    -------
    ndarray (steps + 1,)
    """
    steps = checks.integer(steps, "steps", minimum=1)
    tau_min, tau_max = checks.tau(tau_min, "tau_min"), checks.tau(tau_max, "tau_max")
    rho = checks.positive(rho, "rho")
    if not tau_min < tau_max:
        raise ValueError(f"tau_min must be < tau_max, got {tau_min} >= {tau_max}")
    smax, smin = np.sqrt(tau_max / (1 - tau_max)), np.sqrt(tau_min / (1 - tau_min))
    sig = (smax ** (1 / rho) + np.linspace(0, 1, steps + 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    taus = sig ** 2 / (1 + sig ** 2)
    taus[0], taus[-1] = tau_max, tau_min
    return _checked(taus)


def _checked(taus):
    if np.any(np.diff(taus) >= 0):
        raise ValueError("taus must be strictly decreasing (steps too many for the tau range in float64)")
    return taus


def validate(taus: ArrayLike) -> np.ndarray:
    """A user-supplied schedule: 1-D, at least 2 points, strictly decreasing, inside [1e-12, 1).

    Parameters
    ----------
    taus : array_like

    Returns
    -------
    ndarray
        float64 copy or view of `taus`.

    Raises
    ------
    ValueError
        Naming `taus` and what is wrong.
    """
    taus = checks.array(taus, "taus", ndim=1)
    if taus.size < 2:
        raise ValueError(f"taus must have at least 2 points (1 step), got {taus.size}")
    if np.any(taus <= 0) or np.any(taus >= 1):
        raise ValueError("taus must lie in the open interval (0, 1)")
    if np.any(taus < checks.TAU_MIN):
        raise ValueError(f"taus must be >= {checks.TAU_MIN:g} (below it the score's scale leaves float64's range)")
    if np.any(np.diff(taus) >= 0):
        raise ValueError("taus must be strictly decreasing")
    return taus


karras = edm            # the name k-diffusion and diffusers give the EDM grid (get_sigmas_karras, use_karras_sigmas)


def tau_to_sigma(tau: ArrayLike) -> np.ndarray | float:
    """The VE noise level sigma = sqrt(tau / (1 - tau)) (k-diffusion's and EDM's sigma) of tau in (0, 1).

    >>> float(tau_to_sigma(0.5))
    1.0
    """
    tau = np.asarray(tau, dtype=float)
    if not np.all((tau > 0) & (tau < 1)):
        raise ValueError(f"tau must lie in (0, 1), got {tau!r}")
    return np.sqrt(tau / (1.0 - tau))


def sigma_to_tau(sigma: ArrayLike) -> np.ndarray | float:
    """The noise level tau = sigma^2 / (1 + sigma^2) of a VE sigma > 0 (the inverse of `tau_to_sigma`):
    a k-diffusion or EDM sigma grid becomes a schedule with `sigma_to_tau(sigmas)`.

    >>> float(sigma_to_tau(1.0))
    0.5
    """
    sigma = np.asarray(sigma, dtype=float)
    if not np.all(np.isfinite(sigma) & (sigma > 0)):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    return sigma ** 2 / (1.0 + sigma ** 2)
