"""Product targets (SPEC 9) and the "diagonal" Jacobian mode, each against an independent computation:
finite differences, quadrature of the 1-D density, mpmath, the NumPy/SciPy twins, the "full" mode,
and finite differences of the whole discrete map."""

import mpmath as mp
import numpy as np
import pytest
from scipy import integrate, stats

from theory_check import kernels, runs, samplers as S, schedules, targets
from theory_check.targets import products
from theory_check.targets.products import Mixture1D, Product, Rademacher, Uniform

FAMILIES = products.NAMES
LAWS = [Uniform(1.0), Uniform(0.3), Rademacher(1.0), Rademacher(2.5),
        Mixture1D([0.5, 0.3, 0.2], [-1.0, 0.4, 1.25], [0.09, 0.0225, 0.2025]), Mixture1D([0.6, 0.4], [0.0, 2.0], [0.0, 0.5])]
TAUS = [1e-3, 0.05, 0.4, 0.9]


def _p0(law):
    """The law's density (or atoms) for the convolution integral, written from its definition."""
    if isinstance(law, Uniform):
        return lambda a, tau, x: integrate.quad(lambda y: stats.norm.pdf(x, a * y, np.sqrt(tau)) / (2 * law.c),
                                                -law.c, law.c, epsabs=0, epsrel=1e-13, limit=200)[0]
    if isinstance(law, Rademacher):
        return lambda a, tau, x: 0.5 * (stats.norm.pdf(x, a * law.c, np.sqrt(tau)) + stats.norm.pdf(x, -a * law.c, np.sqrt(tau)))
    return lambda a, tau, x: sum(w * stats.norm.pdf(x, a * m, np.sqrt(a * a * v + tau)) for w, m, v in zip(law.w, law.m, law.v))


@pytest.mark.parametrize("law", LAWS, ids=repr)
@pytest.mark.parametrize("tau", TAUS)
def test_density_is_the_convolution_and_integrates_to_one(law, tau):
    # q1 = int p0(y) N(x; a y, tau) dy by quadrature (the uniform) or the definition (the atoms and
    # mixtures); normalisation by quadrature of exp(log q1). Quadrature at rtol 1e-13: tolerance 1e-10.
    a = np.sqrt(1 - tau)
    xs = np.linspace(-3, 3, 13)
    lq = law.eval(xs, tau)[0]
    ref = np.array([_p0(law)(a, tau, x) for x in xs])
    np.testing.assert_allclose(np.exp(lq), ref, rtol=1e-10)
    mass = sum(integrate.quad(lambda x: np.exp(law.eval(x, tau)[0][0]), lo, hi, epsabs=1e-14, limit=400)[0]
               for lo, hi in [(-np.inf, -4), (-4, 0), (0, 4), (4, np.inf)])
    assert mass == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("tau", TAUS)
def test_score_and_jacobian_against_finite_differences(name, tau):
    # central differences at h = 1e-5 sqrt(tau): truncation ~h^2 |q'''|, rounding ~eps |log q| / h
    t = targets.make(name, 4)
    x = t.sample(20, tau, np.random.default_rng(3))
    h = 1e-5 * np.sqrt(tau)
    s, ds = t.score_diagonal(x, tau)
    E = np.eye(4)
    fd = np.stack([(t.log_density(x + h * E[i], tau) - t.log_density(x - h * E[i], tau)) / (2 * h) for i in range(4)], 1)
    np.testing.assert_allclose(s, fd, rtol=1e-6, atol=1e-6 / np.sqrt(tau))
    J = np.stack([(t.score(x + h * E[i], tau) - t.score(x - h * E[i], tau)) / (2 * h) for i in range(4)], 2)
    np.testing.assert_allclose(t.score_jacobian(x, tau), J, rtol=1e-6, atol=1e-6 / tau)
    np.testing.assert_allclose(np.diagonal(t.score_jacobian(x, tau), axis1=1, axis2=2), ds, rtol=0, atol=0)
    np.testing.assert_allclose(t.score(x, tau), s, rtol=0, atol=0)


def _uniform_mp(x, tau, c=1.0):
    mp.mp.dps = 60
    x, tau, c = mp.mpf(abs(x)), mp.mpf(tau), mp.mpf(c)
    b, rt = mp.sqrt(1 - tau) * c, mp.sqrt(tau)
    lq = lambda y: mp.log((mp.erfc((y - b) / (rt * mp.sqrt(2))) - mp.erfc((y + b) / (rt * mp.sqrt(2)))) / 2) - mp.log(2 * b)  # noqa: E731
    return float(lq(x)), float(mp.diff(lq, x)), float(mp.diff(lq, x, 2))


@pytest.mark.parametrize("tau", [1e-6, 1e-4, 1e-2, 0.3, 0.9, 0.999])
@pytest.mark.parametrize("c", [0.25, 1.0, 4.0])
def test_uniform_accurate_in_the_tails_against_mpmath(tau, c):
    # Issue 12: finite and relative 1e-10 for |x| <= 40 and tau >= 1e-6 (log q, s and s').
    # s and s' are compared relative to their natural scales 1/sqrt(tau) and 1/tau where they pass
    # through 0 (at x = 0, and deep inside the support where s' is exponentially small).
    for x in [0.0, 0.3, 0.999, 1.0, 1.001, 1.5, 3.0, 10.0, 25.0, 40.0, -40.0, -2.0]:
        got = Uniform(c).eval(x, tau)
        ref = _uniform_mp(x, tau, c)
        ref = (ref[0], ref[1] * (-1.0 if x < 0 else 1.0), ref[2])
        for g, e, scale in zip(got, ref, [1.0, 1 / np.sqrt(tau), 1 / tau]):
            assert np.isfinite(g[0])
            assert abs(g[0] - e) <= 1e-10 * max(abs(e), 1e-6 * scale), (x, tau, c, g[0], e)


@pytest.mark.parametrize("law", LAWS, ids=repr)
@pytest.mark.parametrize("tau", TAUS)
def test_kernel_equals_its_numpy_twin(law, tau):
    # The twins use SciPy's log_ndtr (uniform) and broadcasting over components (atoms, mixtures);
    # on |x| <= a c + 4 sqrt(tau) the uniform twin has no cancellation: 1e-12 relative to scale.
    xs = np.linspace(-1, 1, 41) * (np.sqrt(1 - tau) * getattr(law, "c", 2.0) + 4 * np.sqrt(tau))
    if isinstance(law, Uniform):
        twin = kernels.uniform_numpy(xs, tau, law.c)
    elif isinstance(law, Rademacher):
        twin = kernels.rademacher_numpy(xs, tau, law.c)
    else:
        twin = kernels.gmm1_numpy(xs, tau, law.w, law.m, law.v)
    for g, e, scale in zip(law.eval(xs, tau), twin, [1.0, 1 / np.sqrt(tau), 1 / tau]):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12 * scale)


@pytest.mark.parametrize("name", FAMILIES)
def test_exact_sampling(name):
    # Each coordinate's empirical law against the cdf from quadrature of q1 (KS at n = 4000, the
    # test's p-value > 1e-3 fails by chance once in 1000), and the moments against mean_cov (5 se).
    tau = 0.1
    t = targets.make(name, 3)
    x = t.sample(4000, tau, np.random.default_rng(11))
    law = t.laws[0]
    cdf = lambda v: integrate.quad(lambda y: np.exp(law.eval(y, tau)[0][0]), -np.inf, v, epsabs=1e-13, limit=400)[0]  # noqa: E731
    grid = np.linspace(-6, 6, 241)
    F = np.array([cdf(v) for v in grid])
    for j in range(3):
        p = stats.kstest(x[:, j], lambda v: np.interp(v, grid, F)).pvalue
        assert p > 1e-3
    mean, cov = t.mean_cov(tau)
    se = np.sqrt(np.diag(cov) / len(x))
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("sampler", [n for n in S.REGISTRY if n != "ddpm"])
def test_diagonal_mode_equals_full(name, sampler):
    # Same arithmetic on the diagonal of a diagonal matrix: agreement to rounding (1e-9, SPEC 9).
    t = targets.make(name, 5)
    x = t.sample(40, 0.999, np.random.default_rng(1))
    smp = S.Reference(1e-9, 1e-11) if sampler == "reference" else S.make(sampler)
    taus = schedules.log_snr(40)
    a, b = smp.run(t, taus, x, jacobian="full"), smp.run(t, taus, x, jacobian="diagonal")
    np.testing.assert_allclose(b.x, a.x, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.logdet, a.logdet, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("sampler", ["heroism", "dpm3m", "unipc", "rk4"])
def test_diagonal_logdet_against_finite_differences_of_the_map(name, sampler):
    # The whole map x_in -> x_out differentiated by central differences (h = 1e-6: error ~1e-8
    # relative in each entry, ~1e-7 in log det over d = 3); its off-diagonal entries must vanish.
    t = targets.make(name, 3)
    smp = S.make(sampler)
    taus = schedules.log_snr(30)
    x = t.sample(6, 0.999, np.random.default_rng(2))
    out = smp.run(t, taus, x, jacobian="diagonal")
    h = 1e-6
    J = np.stack([(smp.run(t, taus, x + h * e).x - smp.run(t, taus, x - h * e).x) / (2 * h) for e in np.eye(3)], 2)
    off = J - np.einsum("nii->ni", J)[:, :, None] * np.eye(3)
    assert np.abs(off).max() < 1e-7
    np.testing.assert_allclose(out.logdet, np.linalg.slogdet(J)[1], rtol=0, atol=1e-6)


def test_diagonal_slogdet_counts_negative_entries():
    t = targets.make("uniform-cube", 3)
    tan = S.Tangent("diagonal", t, np.zeros((3, 3)))
    sign, ld = tan.slogdet(np.array([[1.0, 2.0, 3.0], [-1.0, 2.0, 3.0], [-1.0, -2.0, 0.5]]))
    np.testing.assert_array_equal(sign, [1.0, -1.0, 1.0])
    np.testing.assert_allclose(ld, np.log([6.0, 6.0, 1.0]))


def test_diagonal_mode_refused_for_other_targets():
    with pytest.raises(ValueError, match="jacobian='diagonal' needs a product target"):
        S.make("ddim").run(targets.make("gmm-iso", 3), schedules.log_snr(4), np.zeros((2, 3)), jacobian="diagonal")


def test_large_dimension_runs_in_diagonal_mode():
    # d = 1e4 (a full Jacobian would need 800 MB per sample batch of 1): auto picks "diagonal";
    # the logdet of a product map is the sum of the 1-D maps' logdets, computed here at d = 1.
    spec = runs.normalise(dict(target="uniform-cube", dim=10_000, K=2, N=2, steps=8, n=20))
    row = runs.evaluate(spec)
    assert row["status"] == "ok" and row["jacobian"] == "diagonal"
    t = targets.make("uniform-cube", 10_000)
    t1 = targets.make("uniform-cube", 1)
    x = t.sample(3, 0.999, np.random.default_rng(0))
    smp = S.make("heroism", K=2, N=2)
    taus = schedules.log_snr(8)
    ld = smp.run(t, taus, x, jacobian="diagonal").logdet
    # The 1-D maps of all 3 x 1e4 coordinates in one batch of the d = 1 target (full Jacobian).
    ld1 = smp.run(t1, taus, x.reshape(-1, 1), jacobian="full").logdet.reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(ld, ld1, rtol=1e-12)


@pytest.mark.parametrize("bad, match", [
    (dict(target="uniform-cube", target_args={"width": 2.0}), "width is not a parameter of uniform-cube"),
    (dict(target="gmm-iso", target_args={"scale": 2.0}), "scale is not a parameter of gmm-iso"),
    (dict(target="product-gmm", target_args={"scale": -1.0}), "scale"),
    (dict(target="rademacher-cube", target_args={"scale": [1, 2]}), "target_args: scale"),
])
def test_target_args_are_validated(bad, match):
    with pytest.raises(ValueError, match=match):
        runs.normalise(bad)


def test_target_args_change_the_instance():
    a = targets.make("product-gmm", 2, scale=2.0, width=0.5).laws[0]
    np.testing.assert_allclose(a.m, 2.0 * np.array(products.PRODUCT_GMM["m"]))
    np.testing.assert_allclose(np.sqrt(a.v), 0.5 * np.array(products.PRODUCT_GMM["sd"]))


def test_general_product_of_different_laws():
    # one law per coordinate: log q is the sum of the 1-D log densities, computed one law at a time
    laws = [Uniform(1.0), Rademacher(0.5), LAWS[4], Uniform(1.0)]
    t = Product(laws)
    x = t.sample(10, 0.2, np.random.default_rng(0))
    lq = t.log_density(x, 0.2)
    ref = sum(law.eval(x[:, j], 0.2)[0] for j, law in enumerate(laws))
    np.testing.assert_allclose(lq, ref, rtol=1e-13)
    s = t.score(x, 0.2)
    np.testing.assert_allclose(s[:, 1], laws[1].eval(x[:, 1], 0.2)[1], rtol=1e-13)


def test_cli_target_arg(tmp_path):
    import json
    import subprocess
    import sys
    base = [sys.executable, "-m", "theory_check", "sample", "--target", "product-gmm", "--dim", "4", "--K", "3",
            "--steps", "40", "--samples", "200", "--format", "json"]
    rows = [json.loads(subprocess.run(base + extra, capture_output=True, text=True, check=True).stdout)
            for extra in ([], ["--target-arg", "width=0.5"])]
    assert rows[0]["jacobian"] == "diagonal" and rows[0]["tv"] != rows[1]["tv"]
    bad = subprocess.run(base + ["--target-arg", "depth=2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "depth is not a parameter of product-gmm" in bad.stderr
