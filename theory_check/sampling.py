"""`sample`: draw x_in from a known law, run a sampler, keep what the metrics need (SPEC 6)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from . import checks, schedules
from .samplers import Sampler
from .targets import LOG_2PI, Target
from .targets.errors import ScoreError

__all__ = ["Result", "sample", "auto_jacobian", "initial", "INITS"]

INITS = ("exact", "gaussian")


@dataclass
class Result:
    """A sampling run: x_in ~ p_in with log p_in(x_in), x_out = map(x_in), log|det dx_out/dx_in|."""
    x_in: np.ndarray
    logp_in: np.ndarray
    x_out: np.ndarray
    logdet: np.ndarray | None
    nfe: int
    taus: np.ndarray
    init: str
    seed: int
    sampler: str
    wall_time: float
    score_error: tuple | None = field(default=None)   # (eps_s^2, eps_J,F^2, eps_J,2^2): error fields only


def initial(target, tau, n, init, rng):
    """n draws from the initial law and their log density: q_tau exactly, or N(0, I).

    Parameters
    ----------
    target : targets.Target
    tau : float
    n : int
    init : {"exact", "gaussian"}
    rng : numpy.random.Generator

    Returns
    -------
    (ndarray (n, d), ndarray (n,))
        The draws and their log density under the initial law.
    """
    if init == "exact":
        x = target._sample(n, tau, rng)
        return x, target.log_density(x, tau)
    if init == "gaussian":
        x = rng.standard_normal((n, target.dim))
        return x, -0.5 * (target.dim * LOG_2PI + np.einsum("nd,nd->n", x, x))
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def auto_jacobian(target: Target, sampler: Sampler | None) -> str:
    """The Jacobian mode "auto" stands for (the command line's and the studies' default): "none"
    for a stochastic sampler (no log-determinant), else the cheapest exact mode the target allows:
    "diagonal" (product targets), "structured" (an active basis smaller than d - 1), else "full"."""
    if not getattr(sampler, "deterministic", True):
        return "none"
    if getattr(target, "diagonal", False):
        return "diagonal"
    U = getattr(target, "active_basis", None)
    return "structured" if U is not None and U.shape[1] + 1 < target.dim else "full"


def sample(target: Target, sampler: Sampler, taus: ArrayLike, n: int, init: str = "exact", seed: int = 0,
           jacobian: str = "auto", rows: int | None = None) -> Result:
    """Run `sampler` on `n` draws from the initial law at taus[0] (or on the first `rows` of them).

    Parameters
    ----------
    target : targets.Target
    sampler : samplers.Sampler
    taus : array_like
        Strictly decreasing noise levels in (0, 1).
    n : int
        Number of samples.
    init : {"exact", "gaussian"}
        "exact" draws x_in from q_{taus[0]} (needs the target's `sample` and `log_density`);
        "gaussian" from N(0, I), the setting of Li, Zhou, Wei & Chen, "Faster Diffusion Models via
        Higher-Order Approximation", arXiv:2506.24042 (2025).
    seed : int
        Seed of x_in; the same seed gives the same numbers.
    jacobian : {"auto", "none", "full", "structured", "diagonal"}
        A Jacobian mode gives the log-determinant that `metrics.tv_kl` needs. "auto" (default, as
        the command line): `auto_jacobian(target, sampler)`; "none" is fastest when only the
        samples are wanted (W2, pathwise error).
    rows : int, optional
        Run on the first `rows` of the n seeded draws only (a prefix of the same sample, as the
        minimal-NFE search's cheap probes do); default all n.

    Returns
    -------
    Result
        x_in, log p_in(x_in), x_out, logdet, nfe, taus, and provenance.

    Examples
    --------
    >>> from theory_check import targets, schedules, samplers, sample
    >>> r = sample(targets.make("gmm-iso", 2, 0), samplers.Heroism(3, 3), schedules.log_snr(20),
    ...            n=100, seed=1, jacobian="full")
    >>> r.x_out.shape, r.nfe
    ((100, 2), 140)
    """
    checks.target(target)
    if not isinstance(sampler, Sampler):
        raise ValueError(f"sampler must be a Sampler, got {type(sampler).__name__}")
    taus = schedules.validate(taus)
    n = checks.integer(n, "n", minimum=1)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    seed = checks.integer(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    try:
        x_in, logp_in = initial(target, taus[0], n, init, rng)
    except NotImplementedError as exc:
        raise ValueError(f"init={init!r}: {exc}") from None
    if rows is not None:
        rows = checks.integer(rows, "rows", minimum=1)
        x_in, logp_in = x_in[:rows], logp_in[:rows]
    if jacobian == "auto":
        jacobian = auto_jacobian(target, sampler)
    if isinstance(target, ScoreError):
        target.records.clear()
    t0 = time.perf_counter()
    try:
        out = sampler.run(target, taus, x_in, jacobian=jacobian)
    except NotImplementedError as exc:
        raise ValueError(f"jacobian={jacobian!r}: {exc}") from None
    wall = time.perf_counter() - t0
    err = target.score_error() if isinstance(target, ScoreError) else None
    return Result(x_in, logp_in, out.x, out.logdet, out.nfe, taus, init, seed, repr(sampler), wall, err)
