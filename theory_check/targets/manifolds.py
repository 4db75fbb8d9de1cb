"""Point clouds on low-dimensional manifolds (the paper's bounded-support setting): the uniform law
on given points (`PointCloud`) and points on a circle, a swiss roll and a torus embedded in R^d by
a seeded random orthonormal map."""

import numpy as np

from .. import checks
from .mixtures import IsotropicGaussianMixture

__all__ = ["PointCloud", "circle", "swiss_roll", "torus"]


class PointCloud(IsotropicGaussianMixture):
    """The uniform law on given points (finite support): an isotropic mixture with sigma_k = 0."""

    def __init__(self, points):
        points = checks.array(points, "points", ndim=2)
        if points.shape[0] == 0:
            raise ValueError("points must contain at least one point")
        M = points.shape[0]
        super().__init__(np.full(M, 1.0 / M), points, np.zeros(M))


def _embedding(dim, k, seed, name):
    """A seeded random orthonormal map R^k -> R^dim (dim x k)."""
    if dim < k:
        raise ValueError(f"dim must be >= {k} for the {name} target, got {dim}")
    G = checks.rng(seed).standard_normal((dim, k))
    Qm, R = np.linalg.qr(G)
    return Qm * np.sign(np.diag(R))


def circle(dim, n_points=32, radius=2.0, seed=0):
    """n_points equally spaced on a circle of given radius, embedded in R^dim.

    Parameters
    ----------
    dim : int
        Ambient dimension d; the points are embedded by a seeded random orthonormal map.
    n_points : int
        Number of points (the target is the uniform law on them: finite support).
    radius : float
        Radius of the circle.
    seed : int
        Seed of the embedding.

    Returns
    -------
    PointCloud
    """
    dim = checks.integer(dim, "dim", minimum=1)
    n_points = checks.integer(n_points, "n_points", minimum=1)
    radius = checks.positive(radius, "radius")
    theta = 2.0 * np.pi * np.arange(n_points) / n_points
    pts = radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return PointCloud(pts @ _embedding(dim, 2, seed, "circle").T)


def swiss_roll(dim, n_points=64, seed=0):
    """n_points on a swiss roll (a 2-manifold in R^3), scaled to radius ~2, embedded in R^dim.
    Parameters as for `circle` (no radius); `seed` also draws the points. Returns a `PointCloud`."""
    dim = checks.integer(dim, "dim", minimum=1)
    n_points = checks.integer(n_points, "n_points", minimum=1)
    E = _embedding(dim, 3, seed, "swiss-roll")
    u = np.random.default_rng([seed, 1]).random((n_points, 2))
    t = 1.5 * np.pi * (1.0 + 2.0 * u[:, 0])
    pts = np.stack([t * np.cos(t), 10.0 * u[:, 1] - 5.0, t * np.sin(t)], axis=1) / 7.0
    return PointCloud(pts @ E.T)


def torus(dim, n_points=64, R=2.0, r=0.7, seed=0):
    """n_points on a torus with radii R > r > 0 (a 2-manifold in R^3), embedded in R^dim.
    Parameters as for `circle`, with the major and minor radii R > r > 0 instead of the radius;
    `seed` also draws the points. Returns a `PointCloud`."""
    dim = checks.integer(dim, "dim", minimum=1)
    n_points = checks.integer(n_points, "n_points", minimum=1)
    R, r = checks.positive(R, "R"), checks.positive(r, "r")
    if r >= R:
        raise ValueError(f"r must be < R for a torus, got r={r}, R={R}")
    E = _embedding(dim, 3, seed, "torus")
    u = 2.0 * np.pi * np.random.default_rng([seed, 2]).random((n_points, 2))
    pts = np.stack([(R + r * np.cos(u[:, 1])) * np.cos(u[:, 0]),
                    (R + r * np.cos(u[:, 1])) * np.sin(u[:, 0]),
                    r * np.sin(u[:, 1])], axis=1)
    return PointCloud(pts @ E.T)
