"""Targets whose every noised marginal q_tau is known in closed form.

Convention (SPEC section 2): X(tau) = a X0 + sqrt(tau) Z with a = sqrt(1 - tau), Z ~ N(0, I_d).
Every target provides, for a batch x of shape (n, d) and a scalar tau in (0, 1):

    log_density(x, tau) -> (n,)        log q_tau(x)
    score(x, tau)       -> (n, d)      grad_x log q_tau(x)
    score_jacobian(x, tau) -> (n, d, d)
    sample(n, tau, rng) -> (n, d)      exact draws from q_tau
    mean_cov(tau)       -> (mean (d,), covariance (d, d)) of q_tau, in closed form

and, where the score Jacobian has the structure c I + Q G Q^T of SPEC section 5.3 (every
iterate of a sampler stays in span{U, x_in}), an orthonormal `active_basis` U (d, m0) and
`structured_jacobian(x, tau, Q) -> (c (n,), G (n, m, m))`.

Example
-------
>>> import numpy as np
>>> from theory_check import targets
>>> t = targets.make("gmm-iso", dim=2, seed=0)
>>> x = t.sample(4, 0.5, np.random.default_rng(1))
>>> t.score(x, 0.5).shape
(4, 2)

Modules, one concept each: `base` (the `Target` contract, `from_functions`), `mixtures`
(isotropic, full and subspace Gaussian mixtures), `manifolds` (point clouds on curves and
surfaces), `sphere`, `products` (independent coordinates, SPEC 9), `errors` (score estimates with
errors of set size and regularity: `Perturbed`, `FourierError`, `QuantisedError`), `learned`
(`LearnedScore`, an MLP trained by denoising score matching; torch for training only); `make` and `NAMES` here name the benchmark instances.
"""

from __future__ import annotations

import numpy as np

from .. import checks
from . import products
from .base import LOG_2PI, FunctionTarget, Target, from_functions  # noqa: F401 -- LOG_2PI: sampling uses it
from .errors import FIELDS, KEEPS, FourierError, Perturbed, QuantisedError, ScoreError, ddpm_levels
from .learned import LearnedScore
from .manifolds import PointCloud, _embedding, circle, swiss_roll, torus
from .mixtures import GaussianMixture, IsotropicGaussianMixture, SubspaceGaussianMixture
from .sphere import Sphere, _bessel_ratio  # noqa: F401 -- _bessel_ratio: its mpmath tests

__all__ = ["Target", "FunctionTarget", "from_functions", "IsotropicGaussianMixture", "PointCloud", "GaussianMixture",
           "SubspaceGaussianMixture", "Sphere", "ScoreError", "Perturbed", "FourierError", "QuantisedError", "LearnedScore",
           "ddpm_levels", "FIELDS", "canonical", "circle", "swiss_roll", "torus", "make", "NAMES",
           "products"]


# -- named benchmark instances -----------------------------------------------------------------

NAMES = ("gmm-iso", "gmm-aniso", "circle", "swiss-roll", "torus", "sphere", "subspace-gmm",
         "rademacher-cube", "uniform-cube", "product-gmm")


def _spread_means(dim, M, radius, rng):
    """M well-separated means of norm `radius`: orthogonal directions when dim >= M, else
    equally spaced on a randomly rotated circle (dim >= 2) or on a line (dim = 1)."""
    if dim == 1:
        return np.linspace(-radius, radius, M)[:, None]
    if dim >= M:
        E, _ = np.linalg.qr(rng.standard_normal((dim, M)))
        return radius * E.T
    E, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
    theta = 2 * np.pi * np.arange(M) / M
    return radius * np.stack([np.cos(theta), np.sin(theta)], 1) @ E.T


def _random_cov(dim, cond, rng):
    lam = np.logspace(0.0, -np.log10(cond), dim) if dim > 1 else np.ones(1)
    R, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (R * lam) @ R.T


def canonical(name: str) -> str:
    """A target name as `NAMES` spells it: case-insensitive, '_' and '-' alike (as sampler names).

    >>> canonical("Swiss_Roll")
    'swiss-roll'
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be one of {', '.join(NAMES)}; got {name!r}")
    key = name.strip().lower().replace("_", "-")
    return key if key in NAMES else name


def make(name: str, dim: int, seed: int = 0, **params) -> Target:
    """A named benchmark instance in R^dim, deterministic in `seed`::

        gmm-iso       4 well-separated isotropic modes, weights .4/.3/.2/.1, sd .2/.3/.45/.6
        gmm-aniso     3 modes with full random covariances of condition number 100 (d >= 2)
        circle        32 points on a circle of radius 2 (dim >= 2)
        swiss-roll    64 points on a swiss roll (dim >= 3)
        torus         64 points on a torus R=2, r=0.7 (dim >= 3)
        sphere        uniform on S^{k-1}, k = min(dim, 3), radius 2, random subspace
        subspace-gmm  3 full-covariance modes in a random r = min(dim, 3) dim subspace
        rademacher-cube, uniform-cube, product-gmm
                      product targets (`products.make`, SPEC 9): d non-Gaussian directions

    Parameters
    ----------
    name : str
        One of `NAMES`.
    dim : int
        Dimension d.
    seed : int
        Seed of the instance (means, covariances, embeddings; the products have none).
    **params
        The product families' shape parameters (`products.PARAMS`: scale, width).

    Returns
    -------
    Target

    Examples
    --------
    >>> make("sphere", 5, seed=1)
    Sphere(dim=5, k=3, radius=2)
    """
    name = canonical(name)
    if name not in NAMES:
        raise ValueError(f"name must be one of {', '.join(NAMES)}; got {name!r}")
    dim = checks.integer(dim, "dim", minimum=1)
    rng = checks.rng(seed)
    allowed = products.PARAMS.get(name, ())
    bad = sorted(set(params) - set(allowed))
    if bad:
        raise ValueError(f"target_args: {bad[0]} is not a parameter of {name} "
                         f"({', '.join(allowed) if allowed else 'it takes none'})")
    if name in products.NAMES:
        return products.make(name, dim, **params)
    if name == "gmm-iso":
        return IsotropicGaussianMixture([0.4, 0.3, 0.2, 0.1], _spread_means(dim, 4, 3.0, rng),
                                        np.array([0.2, 0.3, 0.45, 0.6]) ** 2)
    if name == "gmm-aniso":
        means = 1.5 * rng.standard_normal((3, dim)) / np.sqrt(max(dim, 1) / 2.0)
        covs = np.array([_random_cov(dim, 100.0, rng) for _ in range(3)])
        return GaussianMixture([0.5, 0.3, 0.2], means, covs)
    if name == "circle":
        return circle(dim, 32, 2.0, seed)
    if name == "swiss-roll":
        return swiss_roll(dim, 64, seed)
    if name == "torus":
        return torus(dim, 64, 2.0, 0.7, seed)
    if name == "sphere":
        k = min(dim, 3)
        return Sphere(dim, k, 2.0, basis=_embedding(dim, k, seed, "sphere"))
    r = min(dim, 3)
    U = _embedding(dim, r, seed, "subspace-gmm")
    means = _spread_means(r, 3, 2.0, rng)
    covs = np.array([0.3 * _random_cov(r, 10.0, rng) for _ in range(3)])
    return SubspaceGaussianMixture([0.5, 0.3, 0.2], means, covs, U)
