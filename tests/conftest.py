import numpy as np
import pytest

from theory_check import targets

TAUS = (1e-3, 0.1, 0.5, 0.99)
DIMS = (1, 2, 5, 16)


def families(dim):
    """One instance of every target family valid in this dimension (name, target)."""
    out = [("gmm-iso", targets.make("gmm-iso", dim, 1)),
           ("gmm-aniso", targets.make("gmm-aniso", dim, 2)),
           ("subspace-gmm", targets.make("subspace-gmm", dim, 3)),
           ("sphere", targets.make("sphere", dim, 4)),
           ("pointcloud", targets.PointCloud(np.random.default_rng(5).standard_normal((7, dim))))]
    if dim >= 2:
        out.append(("circle", targets.make("circle", dim, 6)))
    if dim >= 3:
        out.append(("swiss-roll", targets.make("swiss-roll", dim, 7)))
        out.append(("torus", targets.make("torus", dim, 8)))
    if dim >= 2:
        # a sphere whose subspace is smaller than the space, and a singular full-rank-space GMM
        out.append(("sphere-k2", targets.Sphere(dim, 2, 1.5, basis=targets._embedding(dim, 2, 9, "s"))))
        cov = np.zeros((2, dim, dim))
        cov[0, 0, 0] = 0.5
        cov[1] = 0.3 * np.eye(dim)
        out.append(("gmm-singular", targets.GaussianMixture([0.6, 0.4], np.ones((2, dim)) * [[1.0], [-1.0]], cov)))
    return out


def fd_jacobian(f, x, h):
    """Fourth-order central finite differences of f: (n, d) -> (n, ...) along each coordinate.

    Returns (n, ..., d): derivative of every output component with respect to x_j in the last axis.
    Truncation error O(h^4 f^(5)); rounding O(eps |f| / h).
    """
    cols = []
    for j in range(x.shape[1]):
        e = np.zeros_like(x)
        e[:, j] = h
        cols.append((f(x - 2 * e) - 8 * f(x - e) + 8 * f(x + e) - f(x + 2 * e)) / (12 * h))
    return np.stack(cols, axis=-1)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
