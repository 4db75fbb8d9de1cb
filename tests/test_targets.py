"""Targets against independent computations: finite differences, quadrature, closed-form moments."""

import numpy as np
import pytest
from scipy import stats

from conftest import DIMS, TAUS, families, fd_jacobian
from theory_check import targets

CASES = [(d, name, t) for d in DIMS for name, t in families(d)]
IDS = [f"{name}-d{d}" for d, name, _ in CASES]


def _points(t, tau, n=6, seed=0):
    # Typical points of q_tau, plus points off the bulk where the responsibilities mix.
    x = t.sample(n, tau, np.random.default_rng(seed))
    return np.concatenate([x, 0.5 * x[:2] + 0.3])


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("d,name,t", CASES, ids=IDS)
def test_score_is_gradient_of_log_density(d, name, t, tau):
    # Scores are O(tau^-1/2); the stencil h = 1e-3 sqrt(tau) keeps the O((h/sqrt(tau))^4) truncation
    # and the O(eps |log q| / h) rounding both near 1e-10, far below the 1e-6 acceptance bound.
    x = _points(t, tau)
    s = t.score(x, tau)
    fd = fd_jacobian(lambda z: t.log_density(z, tau), x, 1e-3 * np.sqrt(tau))
    scale = np.maximum(np.linalg.norm(s, axis=1), 1 / np.sqrt(tau))
    assert np.max(np.linalg.norm(s - fd, axis=1) / scale) <= 1e-6


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("d,name,t", CASES, ids=IDS)
def test_score_jacobian_is_derivative_of_score(d, name, t, tau):
    x = _points(t, tau)
    J = t.score_jacobian(x, tau)
    fd = fd_jacobian(lambda z: t.score(z, tau), x, 1e-3 * np.sqrt(tau))
    scale = np.maximum(np.linalg.norm(J, axis=(1, 2)), 1 / tau)
    assert np.max(np.linalg.norm(J - fd, axis=(1, 2)) / scale) <= 1e-6
    s2, J2 = t.score_and_jacobian(x, tau)
    np.testing.assert_array_equal(J2, J)
    np.testing.assert_array_equal(s2, t.score(x, tau))


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("d,name,t", [c for c in CASES if c[2].active_basis is not None],
                         ids=[i for c, i in zip(CASES, IDS) if c[2].active_basis is not None])
def test_structured_jacobian_matches_full(d, name, t, tau):
    x = _points(t, tau)
    U = t.active_basis
    Q = []
    for xi in x:
        B, _ = np.linalg.qr(np.column_stack([U, xi]))
        Q.append(B[:, :min(U.shape[1] + 1, d)])
    Q = np.array(Q)
    c, G = t.structured_jacobian(x, tau, Q)
    J = t.score_jacobian(x, tau)
    rebuilt = c[:, None, None] * np.eye(d) + np.einsum("ndi,nij,nej->nde", Q, G, Q)
    scale = np.maximum(np.linalg.norm(J, axis=(1, 2)), 1 / tau)
    assert np.max(np.linalg.norm(rebuilt - J, axis=(1, 2)) / scale) <= 1e-10
    s, _, _ = t._structured(x, tau, Q)
    np.testing.assert_allclose(s, t.score(x, tau), rtol=1e-10, atol=1e-10 / np.sqrt(tau))


def _grid(t, tau, d):
    """A trapezoid grid for q_tau: spacing half the smallest standard deviation (the error of
    the trapezoid rule on a Gaussian of width sigma is ~exp(-2 pi^2 sigma^2 / h^2) ~ 1e-34)."""
    a = np.sqrt(1 - tau)
    if isinstance(t, targets.Sphere):
        reach, sd_min, sd_max = a * t.radius, np.sqrt(tau), np.sqrt(tau)
    elif isinstance(t, targets.GaussianMixture):
        reach = a * np.abs(t.means).max()
        lam = np.concatenate([np.linalg.eigvalsh(c) for c in t.covariances])
        sd_min, sd_max = np.sqrt(a * a * lam.min() + tau), np.sqrt(a * a * lam.max() + tau)
    else:
        reach = a * np.abs(t.means).max()
        sd_min, sd_max = np.sqrt(a * a * t.variances.min() + tau), np.sqrt(a * a * t.variances.max() + tau)
    L = reach + 12 * sd_max
    h = sd_min / 2
    u = np.arange(-L, L + h, h)
    return u, h


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("d,name,t", [c for c in CASES if c[0] <= 2], ids=[i for c, i in zip(CASES, IDS) if c[0] <= 2])
def test_log_density_normalises(d, name, t, tau):
    u, h = _grid(t, tau, d)
    if d == 1:
        mass = np.exp(t.log_density(u[:, None], tau)).sum() * h
    else:
        X, Y = np.meshgrid(u, u, indexing="ij")
        pts = np.column_stack([X.ravel(), Y.ravel()])
        mass = sum(np.exp(t.log_density(c, tau)).sum() for c in np.array_split(pts, 1 + len(pts) // 500000)) * h * h
    assert abs(mass - 1) <= 1e-6


@pytest.mark.parametrize("tau", (1e-3, 0.5, 0.99))
@pytest.mark.parametrize("d,name,t", [c for c in CASES if c[0] in (2, 5)], ids=[i for c, i in zip(CASES, IDS) if c[0] in (2, 5)])
def test_sample_moments_match_closed_form(d, name, t, tau):
    n = 40000
    x = t.sample(n, tau, np.random.default_rng(99))
    mean, cov = t.mean_cov(tau)
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) <= 5 * se_mean)
    xc = x - mean
    prods = xc[:, :, None] * xc[:, None, :]
    se_cov = prods.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(prods.mean(0) - cov) <= 5 * se_cov + 1e-15)


@pytest.mark.parametrize("tau", (1e-3, 0.3, 0.99))
@pytest.mark.parametrize("d,k", [(2, 2), (5, 3), (16, 3)])
def test_sphere_radius_distribution(d, k, tau):
    # |y|^2 / tau is noncentral chi^2 with k degrees of freedom and noncentrality a^2 r^2 / tau.
    t = targets.Sphere(d, k, 2.0, basis=targets._embedding(d, k, 1, "s"))
    x = t.sample(20000, tau, np.random.default_rng(3))
    y2 = np.sum((x @ t.active_basis) ** 2, axis=1)
    res = stats.kstest(y2 / tau, stats.ncx2(k, (1 - tau) * 4.0 / tau).cdf)
    assert res.pvalue > 1e-3


def test_sphere_k1_is_two_point_mixture():
    # S^0 of radius r is the point cloud {-r, +r}: an independent closed form.
    s1 = targets.Sphere(3, 1, 1.3)
    pc = targets.PointCloud([[1.3, 0, 0], [-1.3, 0, 0]])
    x = np.random.default_rng(0).standard_normal((20, 3))
    for tau in TAUS:
        np.testing.assert_allclose(s1.log_density(x, tau), pc.log_density(x, tau), rtol=1e-12)
        np.testing.assert_allclose(s1.score(x, tau), pc.score(x, tau), rtol=1e-9, atol=1e-12)


def test_sphere_small_kappa_branch_is_continuous():
    # Points with kappa just above and below the series threshold agree to the series accuracy.
    t = targets.Sphere(3, 3, 1.0)
    tau = 0.5
    a = np.sqrt(1 - tau)
    rho = np.array([0.9e-6, 1.1e-6]) * tau / a
    x = np.zeros((2, 3))
    x[:, 0] = rho
    lq, s = t.log_density(x, tau), t.score(x, tau)
    assert abs(lq[0] - lq[1]) < 1e-10 and np.allclose(s[0] / rho[0], s[1] / rho[1], rtol=1e-9)


def test_extreme_taus_are_finite():
    for name in targets.NAMES:
        t = targets.make(name, 5, 0)
        for tau in (1e-6, 1 - 1e-6):
            x = t.sample(50, tau, np.random.default_rng(0))
            lq, s, J = t._eval(x, tau, True)
            assert np.all(np.isfinite(lq)) and np.all(np.isfinite(s)) and np.all(np.isfinite(J))


def test_point_cloud_tiny_tau_far_from_points():
    # Far from every point the responsibilities underflow unless computed by log-sum-exp.
    t = targets.circle(2, 8, 1.0, seed=0)
    x = np.array([[30.0, -40.0]])
    lq, s = t.log_density(x, 1e-6), t.score(x, 1e-6)
    assert np.all(np.isfinite(lq)) and np.all(np.isfinite(s))
    # the nearest point dominates: s = -(x - a p*)/tau
    a = np.sqrt(1 - 1e-6)
    p = t.means[np.argmin(np.linalg.norm(x - a * t.means, axis=1))]
    np.testing.assert_allclose(s[0], -(x[0] - a * p) / 1e-6, rtol=1e-9)


@pytest.mark.parametrize("d", (2, 5))
def test_perturbed(d):
    base = targets.make("gmm-iso", d, 0)
    p = targets.Perturbed(base, 0.1, seed=3)
    tau = 0.2
    x = base.sample(2000, 1e-3, np.random.default_rng(4))
    # E|h|^2 ~ 1 under the target: the realised error at tau is eps^2 / tau up to MC error
    delta = p.score(x, tau) - base.score(x, tau)
    np.testing.assert_allclose(np.mean(np.sum(delta ** 2, 1)), 0.01 / tau, rtol=0.1)
    xs = x[:5]
    J = p.score_jacobian(xs, tau)
    fd = fd_jacobian(lambda z: p.score(z, tau), xs, 1e-3 * np.sqrt(tau))
    assert np.max(np.abs(J - fd)) <= 1e-6 * np.max(np.abs(J))
    np.testing.assert_array_equal(p.log_density(xs, tau), base.log_density(xs, tau))
    err, jerr, jop = p.score_error()
    assert err > 0 and jerr >= jop > 0          # |.|_F >= |.|_2


def test_make_is_deterministic_and_seeded():
    a, b, c = (targets.make("gmm-aniso", 4, s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.means, b.means)
    assert not np.array_equal(a.means, c.means)
    cond = np.linalg.cond(a.covariances[0])
    assert cond >= 99.999


@pytest.mark.parametrize("call", [
    lambda: targets.IsotropicGaussianMixture([0.5, 0.6], np.zeros((2, 2)), [1, 1]),
    lambda: targets.IsotropicGaussianMixture([1.5, -0.5], np.zeros((2, 2)), [1, 1]),
    lambda: targets.IsotropicGaussianMixture([0.5, 0.5], np.zeros((2, 2)), [1, -1]),
    lambda: targets.IsotropicGaussianMixture([0.5, 0.5], [[0, np.nan], [0, 0]], [1, 1]),
    lambda: targets.GaussianMixture([1.0], np.zeros((1, 2)), [[[1, 0], [0, -1]]]),
    lambda: targets.GaussianMixture([1.0], np.zeros((1, 2)), [[[1, 0.5], [0, 1]]]),
    lambda: targets.GaussianMixture([1.0], np.zeros((1, 2)), np.eye(3)[None]),
    lambda: targets.Sphere(2, 3),
    lambda: targets.Sphere(3, 2, radius=-1),
    lambda: targets.make("nope", 3),
    lambda: targets.make("circle", 1),
    lambda: targets.make("gmm-iso", 3).score(np.zeros((2, 3)), 1.0),
    lambda: targets.make("gmm-iso", 3).score(np.zeros((2, 3)), 0.0),
    lambda: targets.make("gmm-iso", 3).score(np.zeros((2, 4)), 0.5),
    lambda: targets.make("gmm-iso", 3).log_density(np.full((2, 3), np.inf), 0.5),
    lambda: targets.make("gmm-iso", 3).sample(0, 0.5, 0),
    lambda: targets.make("gmm-aniso", 3).structured_jacobian(np.zeros((1, 3)), 0.5, np.zeros((1, 3, 1))),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()
