"""Samplers against independent computations: a closed-form Gaussian flow, a tight DOP853
reference, finite differences of the whole discrete map, and an independent NFE count."""

import numpy as np
import pytest

from conftest import fd_jacobian
from theory_check import sample, schedules, targets
from theory_check import samplers as S
from theory_check.samplers import (DDIM, DDPM, DEIS, IPNDM, RK4, DPMSolverPP, Heroism, Heun, NumericalError,
                                   Reference, UniPC, lagrange_kappa_weights, step_nodes)


def gaussian_target(d, seed=0, variances=None):
    """N(mu, S) with eigenvalues of S log-spaced from 1 to 10^-1.5 (or as given)."""
    rng = np.random.default_rng(seed)
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.logspace(0, -1.5, d) if variances is None else np.asarray(variances)
    return targets.GaussianMixture([1.0], rng.standard_normal((1, d)), ((R * lam) @ R.T)[None])


def gaussian_flow(t, x, tau0, tau1):
    """The exact probability-flow map of N(mu, S): x1 = a1 mu + C1^{1/2} C0^{-1/2} (x0 - a0 mu)."""
    mu, S = t.means[0], t.covariances[0]
    lam, V = np.linalg.eigh(S)
    a0, a1 = np.sqrt(1 - tau0), np.sqrt(1 - tau1)
    f = np.sqrt((a1 * a1 * lam + tau1) / (a0 * a0 * lam + tau0))
    return a1 * mu + ((x - a0 * mu) @ V * f) @ V.T


def expected_order(K, N):
    """SPEC 5.1: p = min(N + 1, q_K), q_K = K (even K) or K + 1 (odd K, symmetric nodes)."""
    if K == 1:
        return 1
    return min(N + 1, K if K % 2 == 0 else K + 1)


STEPS = (32, 64, 128, 256)
# 3M is super-convergent before h is small (local slopes 3.9, 3.7, 3.5, 3.3, 3.2, 3.1 on the
# Gaussian from 16 to 1024 steps): fit it where it is asymptotic. One NFE per step keeps it cheap.
STEPS_3M = (256, 512, 1024)
STEPS_UNIPC = (64, 128, 256, 512)
SAMPLERS = [("DDIM", DDIM(), 1, STEPS), ("DPM-Solver++ 2M", DPMSolverPP(2), 2, STEPS),
            ("DPM-Solver++ 3M (taylor, 2S warm-up)", DPMSolverPP(3, warmup="2s", coefficient="taylor"), 3, STEPS_3M),
            ("DPM-Solver++ 2S", S.DPMSolverPP2S(), 2, STEPS),
            ("Heun", Heun(), 2, STEPS), ("RK4", RK4(), 4, STEPS),
            # UniPC-p with the corrector is of order p + 1. Its first steps run at orders 1, 2 (each
            # corrected), which bounds the order at 3 for p = 3 asymptotically, but with a constant so
            # small that the local slopes stay at 3.9-4.4 up to 1024 steps on all three problems; below
            # 128 steps they are still 3.4-4.4 (super-convergent start), so fit from 128 to 512.
            ("UniPC bh2 p=3", UniPC(3, "bh2"), 4, STEPS_UNIPC), ("UniPC bh1 p=3", UniPC(3, "bh1"), 4, STEPS_UNIPC),
            ("UniPC bh2 p=2", UniPC(2, "bh2"), 3, STEPS), ("UniPC bh1 p=1", UniPC(1, "bh1"), 2, STEPS),
            ("UniP p=2 (no corrector)", UniPC(2, corrector=False), 2, STEPS),
            ("DEIS 2 (log-rho)", DEIS(2), 2, STEPS),
            ("DEIS 3 tAB (tau)", DEIS(3, basis="tau"), 3, STEPS_3M), ("DEIS 3 rhoAB", DEIS(3, basis="rho"), 3, STEPS_3M),
            # fixed Adams-Bashforth-4 coefficients on a non-uniform grid, after Euler and AB2/AB3
            # warm-up steps: second order on these log-SNR grids (measured 2.0 from 64 to 1024 steps)
            ("iPNDM", IPNDM(), 2, STEPS)]
for _K in range(1, 6):
    for _N in sorted({max(_K - 1, 0), _K, 2 * _K}):
        for _nodes in ("equispaced", "chebyshev"):
            SAMPLERS.append((f"HEROISM K={_K} N={_N} {_nodes}", Heroism(_K, _N, _nodes), expected_order(_K, _N),
                             STEPS))
SAMPLERS.append(("HEROISM K=4 N=4 gauss-seidel", Heroism(4, 4, sweep="gauss-seidel"), 4, STEPS))

FLOOR = 1e-12      # 20x the reference's own error (Reference rtol 1e-13: max error 5e-14 vs rtol 1e-14)


@pytest.fixture(scope="module")
def problems():
    out = {}
    t = gaussian_target(4)
    x = t.sample(32, 1 - 1e-3, np.random.default_rng(1))
    out["gaussian"] = (t, x, gaussian_flow(t, x, 1 - 1e-3, 1e-3))
    for name in ("gmm-iso", "gmm-aniso"):
        t = targets.make(name, 4, 0)
        x = t.sample(32, 1 - 1e-3, np.random.default_rng(1))
        out[name] = (t, x, Reference(1e-13, 1e-15).run(t, schedules.log_snr(1), x).x)
    return out


def measured_slope(problem, sampler, steps=STEPS):
    """Least-squares slope of log RMS error vs log steps over the last 3 points above the floor."""
    t, x, ref = problem
    errs = np.array([np.sqrt(np.mean(np.sum((sampler.run(t, schedules.log_snr(S), x).x - ref) ** 2, 1)))
                     for S in steps])
    keep = errs >= FLOOR
    steps, errs = np.array(steps)[keep][-3:], errs[keep][-3:]
    assert len(steps) >= 2, f"errors below the reference floor: {errs}"
    return -np.polyfit(np.log(steps), np.log(errs), 1)[0], errs


@pytest.mark.parametrize("target", ["gaussian", "gmm-iso", "gmm-aniso"])
@pytest.mark.parametrize("name,sampler,p,steps", SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_convergence_order(problems, target, name, sampler, p, steps):
    slope, errs = measured_slope(problems[target], sampler, steps)
    print(f"ORDER {target:10s} {name:34s} expected {p} measured {slope:.2f}")
    assert abs(slope - p) <= 0.3, (slope, errs)


@pytest.mark.parametrize("target,p", [("gaussian", 2), ("gmm-iso", 3), ("gmm-aniso", 3)])
def test_deis3_log_rho_order(problems, target, p):
    # The released DEIS-3 (log-rho) starts with a first-order step; on the Gaussian its O(h^2)
    # error is reached by 256 steps (local slopes 3.4, 2.8, 2.3, 2.1, 2.0 from 32 to 1024), on the
    # mixtures the third-order term still dominates at 1024 (2.9-3.0).
    slope, errs = measured_slope(problems[target], DEIS(3), STEPS_3M)
    assert abs(slope - p) <= 0.3, (slope, errs)


def test_released_dpm3m_coefficient_is_second_order(problems):
    # The deviation we document: the released 3M update converges at order 2, ours at 3.
    slope, _ = measured_slope(problems["gmm-aniso"], DPMSolverPP(3, coefficient="released"), STEPS_3M)
    assert abs(slope - 2) <= 0.3


def test_heroism_k1_is_exponential_euler_and_ddim_differs():
    # K = 1 holds s constant in tau: x_lo = a_lo [x/a_hi + (1/a_hi - 1/a_lo) s]. DDIM holds
    # eps = -sqrt(tau) s constant in rho and is a different first-order step.
    t = targets.make("gmm-iso", 3, 0)
    x = t.sample(5, 0.6, np.random.default_rng(0))
    taus = np.array([0.6, 0.4])
    s = t.score(x, 0.6)
    a_hi, a_lo = np.sqrt(0.4), np.sqrt(0.6)
    np.testing.assert_allclose(Heroism(1, 0).run(t, taus, x).x, a_lo * (x / a_hi + (1 / a_hi - 1 / a_lo) * s), rtol=1e-14)
    ddim = a_lo * (x + 0.6 * s) / a_hi - np.sqrt(0.6 * 0.4) * s
    np.testing.assert_allclose(DDIM().run(t, taus, x).x, ddim, rtol=1e-14)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")   # quad at its rounding limit
@pytest.mark.parametrize("K", [2, 3, 5, 8])
@pytest.mark.parametrize("nodes", ["equispaced", "chebyshev"])
@pytest.mark.parametrize("step", [(1 - 1e-3, 0.6), (0.3, 0.29), (2e-3, 1e-3), (1 - 1e-4, 1e-4)])
def test_lagrange_kappa_weights_against_quad(K, nodes, step):
    from scipy.integrate import quad
    u = step_nodes(step[0], step[1], K, nodes)
    W, W0 = lagrange_kappa_weights(u)

    def ell(i, v):
        return np.prod([(v - u[m]) / (u[i] - u[m]) for m in range(K) if m != i])

    for j in range(1, K):
        for i in range(K):
            ref, err = quad(lambda v: ell(i, v) / (2 * (1 - v) ** 1.5), u[j], u[0], epsabs=0, epsrel=1e-12, limit=200)
            assert abs(W[j, i] - ref) <= 1e-11 * max(1.0, np.abs(W[j]).max())
        assert abs(W[j].sum() - W0[j]) <= 1e-12 * max(1.0, abs(W0[j]))


class Counting(targets.Target):
    """Counts batch score evaluations independently of the samplers' own bookkeeping."""

    def __init__(self, base):
        self.base, self.dim, self.active_basis, self.calls = base, base.dim, base.active_basis, 0

    def _eval(self, x, tau, want_jac):
        self.calls += 1
        return self.base._eval(x, tau, want_jac)

    def _structured(self, x, tau, Q):
        self.calls += 1
        return self.base._structured(x, tau, Q)


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 20])
def test_nfe_counts(steps):
    t = Counting(targets.make("gmm-iso", 3, 0))
    x = t.base.sample(4, 0.9, np.random.default_rng(0))
    taus = schedules.log_snr(steps, 0.5, 0.9)   # gentle enough that no map folds, even in one step
    cases = [(DDIM(), steps), (DPMSolverPP(2), steps), (DPMSolverPP(3), steps),
             (DPMSolverPP(3, warmup="2s"), steps + 1), (Heun(), 2 * steps), (RK4(), 4 * steps),
             (DDPM(0), steps), (Heroism(1, 3), steps)]
    for K in (2, 3, 5):
        for N in (0, 1, K, 2 * K):
            cases.append((Heroism(K, N), steps * (1 + N * (K - 1))))
            cases.append((Heroism(K, N, sweep="gauss-seidel"), steps * (1 + N * (K - 1))))
        N_paper = max(1, int(np.ceil(np.log(steps))))
        cases.append((Heroism(K, "paper"), steps * (1 + N_paper * (K - 1))))
    for sampler, expected in cases:
        for mode in ("none", "full", "structured") if sampler.deterministic else ("none",):
            t.calls = 0
            out = sampler.run(t, taus, x, jacobian=mode)
            assert out.nfe == t.calls == expected, (sampler, mode)


def _euler(model, x, sigmas):
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (x - model(x, s)) / s * (s_next - s)
    return x


DETERMINISTIC = [DDIM(), DPMSolverPP(2), DPMSolverPP(3), DPMSolverPP(3, warmup="2s", coefficient="taylor"), Heun(), RK4(),
                 Heroism(1, 0), Heroism(2, 2), Heroism(3, 3, "chebyshev"), Heroism(4, 4, sweep="gauss-seidel"),
                 Heroism(5, 2), Heroism("log"), S.DPMSolverPP2S(), UniPC(3), UniPC(2, "bh1"), DEIS(3), DEIS(3, "tau"),
                 IPNDM(), S.from_function(_euler)]


@pytest.mark.parametrize("name", ["gmm-iso", "gmm-aniso", "sphere", "circle", "subspace-gmm", "torus"])
@pytest.mark.parametrize("d", [3, 4])
def test_full_logdet_equals_finite_difference(name, d):
    # Fourth-order stencil with h = 1e-4: truncation ~h^4 |F^(5)| and rounding ~eps/h ~ 1e-12.
    # Ten coarse steps to tau = 0.01 fold some high-order multistep maps on point clouds: then the
    # finite-difference Jacobian of the sample named in the error must have det <= 0 too.
    t = targets.make(name, d, 0)
    x = t.sample(3, 0.999, np.random.default_rng(0))
    taus = schedules.log_snr(10, 0.01)
    for sampler in DETERMINISTIC + [Reference(1e-13, 1e-15)]:
        J = fd_jacobian(lambda z: sampler.run(t, taus, z).x, x, 1e-4)
        sign, ld = np.linalg.slogdet(J)
        try:
            out = sampler.run(t, taus, x, jacobian="full")
        except NumericalError as exc:
            k = int(str(exc).rsplit("sample ", 1)[1])
            assert "folded" in str(exc) and sign[k] <= 0, (sampler, exc, sign)
            continue
        assert np.all(sign > 0)
        assert np.max(np.abs(out.logdet - ld)) <= 1e-6, sampler


@pytest.mark.parametrize("name", ["gmm-iso", "sphere", "circle", "swiss-roll", "torus", "subspace-gmm"])
@pytest.mark.parametrize("d", [3, 5, 8])
def test_structured_equals_full(name, d):
    t = targets.make(name, d, 1)
    x = t.sample(6, 0.999, np.random.default_rng(2))
    taus = schedules.log_snr(40)    # point clouds are stiff near tau = 1e-3: coarser maps fold
    for sampler in DETERMINISTIC + [Reference(1e-12, 1e-14)]:
        full = sampler.run(t, taus, x, jacobian="full")
        st = sampler.run(t, taus, x, jacobian="structured")
        if not isinstance(sampler, Reference):
            # Fixed-step samplers: tracking derivatives must not change x by a single bit.
            # (Reference integrates logdet beside x, so its step-size control sees another state.)
            np.testing.assert_array_equal(full.x, sampler.run(t, taus, x).x)
        np.testing.assert_allclose(st.x, full.x, rtol=0, atol=1e-12 * np.abs(full.x).max())
        assert np.max(np.abs(st.logdet - full.logdet)) <= 1e-9, sampler


@pytest.mark.parametrize("name", ["sphere", "subspace-gmm"])
@pytest.mark.parametrize("sampler", [Heroism(3, 3), UniPC(3)], ids=repr)
def test_structured_logdet_at_d2048_is_exact(name, sampler):
    # A target living in an r-dim subspace U of R^2048 has score s_U(y) U^T - x_perp / tau: the
    # map splits into the r-dim map of y = U^T x (the restricted target) and, in each of the
    # 2048 - r other directions, the same linear map of the pure-noise law N(0, tau), whose log
    # slope log alpha is the logdet of the sampler on the point mass at 0 in d = 1. So
    # logdet = logdet_r(U^T x) + (2048 - r) log alpha exactly, both from small full-Jacobian runs
    # (an off-by-one in the dimension count moves it by |log alpha| ~ 3.5).
    d = 2048
    t = targets.make(name, d, 0)
    U = t.active_basis
    r = U.shape[1]
    if name == "sphere":
        small = targets.Sphere(r, r, t.radius)
    else:
        small = targets.GaussianMixture(t.weights, t.means @ U, np.einsum("ip,kij,jq->kpq", U, t.covariances, U))
    noise = targets.IsotropicGaussianMixture([1.0], [[0.0]], [0.0])
    taus = schedules.log_snr(40)
    x = t.sample(8, taus[0], np.random.default_rng(0))
    st = sampler.run(t, taus, x, jacobian="structured")
    part = sampler.run(small, taus, x @ U, jacobian="full")
    log_alpha = sampler.run(noise, taus, np.ones((1, 1)), jacobian="full").logdet[0]
    np.testing.assert_allclose(st.x @ U, part.x, rtol=0, atol=1e-12 * np.abs(part.x).max())
    exact = part.logdet + (d - r) * log_alpha
    assert abs(log_alpha) > 1.0
    np.testing.assert_allclose(st.logdet, exact, rtol=1e-12, atol=1e-9)


def test_folded_map_raises_with_step_and_tau():
    # 3M on 4 coarse steps folds the map: finite differences of the map confirm det < 0.
    t = targets.make("gmm-iso", 3, 0)
    x = t.sample(4, 0.999, np.random.default_rng(0))
    taus = schedules.log_snr(4, 0.01)
    sampler = DPMSolverPP(3)
    sign, _ = np.linalg.slogdet(fd_jacobian(lambda z: sampler.run(t, taus, z).x, x, 1e-5))
    assert np.any(sign < 0)
    with pytest.raises(NumericalError, match=r"step 3 \(tau 0.151916 -> 0.01\): the map folded"):
        sampler.run(t, taus, x, jacobian="full")


@pytest.mark.parametrize("sampler", [Heroism(3, 2), Heroism(2, 2, sweep="gauss-seidel"), DPMSolverPP(3), RK4()],
                         ids=repr)
@pytest.mark.parametrize("name,jacobian", [("gmm-iso", "none"), ("gmm-iso", "full"), ("gmm-aniso", "structured"),
                                           ("subspace-gmm", "structured")])
def test_chunked_run_equals_one_batch(monkeypatch, sampler, name, jacobian):
    # Samples are independent, so 16-row chunks advanced in lockstep give the same map as one
    # batch: to the bit where every operation is per row (the kernels, lincomb, slogdet), to
    # rounding where a target multiplies the batch by a basis through BLAS.
    t = targets.make(name, 5, 0)
    if jacobian == "structured" and t.active_basis is None:
        jacobian = "full"
    x = t.sample(100, 0.999, np.random.default_rng(0))
    taus = schedules.log_snr(24, 0.01)
    whole = sampler.run(t, taus, x, jacobian=jacobian)
    monkeypatch.setattr(type(sampler), "CHUNK_FLOATS", 1)
    assert type(sampler).chunk_rows(5, jacobian) == 16
    parts = sampler.run(t, taus, x, jacobian=jacobian)
    assert parts.nfe == whole.nfe
    np.testing.assert_allclose(parts.x, whole.x, rtol=0, atol=1e-13 * np.abs(whole.x).max())
    if jacobian != "none":
        np.testing.assert_allclose(parts.logdet, whole.logdet, rtol=0, atol=1e-12)


def test_chunked_run_reports_the_folded_sample_of_the_whole_batch(monkeypatch):
    t = targets.make("gmm-iso", 3, 0)
    x = t.sample(40, 0.999, np.random.default_rng(0))
    taus = schedules.log_snr(4, 0.01)
    with pytest.raises(NumericalError) as whole:
        DPMSolverPP(3).run(t, taus, x, jacobian="full")
    monkeypatch.setattr(DPMSolverPP, "CHUNK_FLOATS", 1)
    with pytest.raises(NumericalError) as parts:
        DPMSolverPP(3).run(t, taus, x, jacobian="full")
    assert str(parts.value) == str(whole.value) and "at sample" in str(whole.value)


def test_perturbed_score_error_is_the_same_in_chunks(monkeypatch):
    p = targets.Perturbed(targets.make("gmm-iso", 4, 0), 0.1, seed=1)
    x = p.sample(90, 0.999, np.random.default_rng(0))
    taus = schedules.log_snr(5)
    Heroism(2, 1).run(p, taus, x)
    whole = p.score_error()
    p.records.clear()
    monkeypatch.setattr(Heroism, "CHUNK_FLOATS", 1)
    Heroism(2, 1).run(p, taus, x)
    assert len(p.records) > 15
    np.testing.assert_allclose(p.score_error()[0], whole[0], rtol=1e-12)
    # the first evaluations (at taus[0], on x itself) recomputed directly
    first = sum(r[2] for r in p.records if r[0] == taus[0])
    p.records.clear()
    direct = np.sum((p.score(x, taus[0]) - p.base.score(x, taus[0])) ** 2)
    np.testing.assert_allclose(first, direct, rtol=1e-12)


def test_non_finite_state_raises_with_step_and_tau():
    class Bad(targets.Target):
        dim = 2

        def _eval(self, x, tau, want_jac):
            s = -x / tau
            if tau < 0.5:
                s[0, 0] = np.nan
            return np.zeros(len(x)), s, np.zeros((len(x), 2, 2))

    with pytest.raises(NumericalError, match=r"step 1 \(tau 0.6 -> 0.1\): non-finite"):
        Heroism(2, 1).run(Bad(), [0.9, 0.6, 0.1], np.ones((3, 2)))


def test_chunked_run_reports_the_earliest_failing_step(monkeypatch):
    # Chunks run one after another through all the steps; the first chunk fails at step 2, the
    # second at step 1. The error must be the one at step 1, as for the batch taken whole.
    class Bad(targets.Target):
        dim = 2

        def _eval(self, x, tau, want_jac):
            s = -x / tau
            s[(x[:, 0] > 0) & (tau < 0.5)] = np.nan     # second chunk: from the evaluation at 0.3
            s[(x[:, 0] < 0) & (tau < 0.2)] = np.nan     # first chunk: from the evaluation at 0.1
            return np.zeros(len(x)), s, np.zeros((len(x), 2, 2))

    x = np.concatenate([-np.ones((16, 2)), np.ones((16, 2))])
    taus = [0.9, 0.6, 0.3, 0.1]
    match = r"step 1 \(tau 0.6 -> 0.3\): non-finite"
    with pytest.raises(NumericalError, match=match):
        Heroism(2, 1).run(Bad(), taus, x)
    monkeypatch.setattr(Heroism, "CHUNK_FLOATS", 1)
    assert Heroism.chunk_rows(2) == 16
    with pytest.raises(NumericalError, match=match):
        Heroism(2, 1).run(Bad(), taus, x)
    with pytest.raises(NumericalError, match=r"step 2 \(tau 0.3 -> 0.1\): non-finite"):
        Heroism(2, 1).run(Bad(), taus, x[:16])


def test_ddpm_is_seeded_and_approximately_exact():
    t = targets.make("gmm-iso", 2, 0)
    taus = schedules.log_snr(200)
    x = t.sample(4000, taus[0], np.random.default_rng(0))
    a, b = DDPM(3).run(t, taus, x).x, DDPM(3).run(t, taus, x).x
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, DDPM(4).run(t, taus, x).x)
    mean, cov = t.mean_cov(taus[-1])
    # 200 stochastic steps: the law is close to q; compare means within MC error + discretisation.
    assert np.all(np.abs(a.mean(0) - mean) <= 5 * np.sqrt(np.diag(cov) / 4000) + 0.05)


@pytest.mark.parametrize("call", [
    lambda: Heroism(0), lambda: Heroism(3, -1), lambda: Heroism(3, 1.5), lambda: Heroism(13),
    lambda: Heroism(3, nodes="gauss"), lambda: Heroism(3, sweep="sor"), lambda: DPMSolverPP(4),
    lambda: Reference(rtol=0), lambda: Reference(rtol=1e-16), lambda: DDPM(-1),
    lambda: DDIM().run(targets.make("gmm-iso", 2), [0.5, 0.6], np.zeros((2, 2))),
    lambda: DDIM().run(targets.make("gmm-iso", 2), [0.5, 0.4], np.zeros((2, 3))),
    lambda: DDIM().run(targets.make("gmm-iso", 2), [0.5, 0.4], np.zeros((2, 2)), jacobian="diag"),
    lambda: DDIM().run(targets.make("gmm-aniso", 2), [0.5, 0.4], np.zeros((2, 2)), jacobian="structured"),
    lambda: DDPM().run(targets.make("gmm-iso", 2), [0.5, 0.4], np.zeros((2, 2)), jacobian="full"),
    lambda: sample(targets.make("gmm-iso", 2), DDIM(), [0.5, 0.4], n=0),
    lambda: sample(targets.make("gmm-iso", 2), DDIM(), [0.5, 0.4], n=5, init="uniform"),
])
def test_bad_sampler_input(call):
    with pytest.raises(ValueError):
        call()
