"""Metrics against independent computations: closed-form Gaussian KL and TV (quadrature, large
Monte-Carlo on exact samples), histogram TV, assignment-based and 1-D sorted W2, Bures W2."""

import numpy as np
import pytest
from scipy import integrate, linalg, optimize, stats

from test_samplers import gaussian_flow, gaussian_target
from theory_check import metrics, runs, sample, schedules, targets
from theory_check.samplers import DDIM, RK4, DPMSolverPP, Heroism, Reference

LINEAR = [DDIM(), Heroism(3, 3), Heroism(2, 1, "chebyshev"), DPMSolverPP(2), RK4()]


def affine_map(sampler, t, taus):
    """x_out = A x_in + b exactly (every sampler is affine on a Gaussian target): read A, b off
    the map at 0 and the unit vectors."""
    d = t.dim
    pts = np.vstack([np.zeros(d), np.eye(d)])
    out = sampler.run(t, taus, pts).x
    return (out[1:] - out[0]).T, out[0]


def gauss_kl(m0, S0, m1, S1):
    d = len(m0)
    S1i = np.linalg.inv(S1)
    dm = m1 - m0
    return 0.5 * (np.trace(S1i @ S0) + dm @ S1i @ dm - d + np.linalg.slogdet(S1)[1] - np.linalg.slogdet(S0)[1])


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("sampler", LINEAR, ids=repr)
def test_tv_kl_on_gaussian_output_matches_closed_form(d, sampler):
    # Variances away from 1: with unit variance q_tau = N(a mu, I) for every tau, the score is
    # constant along the exact flow and every sampler with N >= 1 is exact (nothing to resolve).
    t = gaussian_target(d, seed=d, variances=np.logspace(-0.5, -1.5, d))
    taus = schedules.log_snr(4, 0.02)
    A, b = affine_map(sampler, t, taus)
    m_in, C_in = t.mean_cov(taus[0])
    m_out, C_out = A @ m_in + b, A @ C_in @ A.T
    m_q, C_q = t.mean_cov(taus[-1])
    r = sample(t, sampler, taus, n=40000, seed=5, jacobian="full")
    est = metrics.tv_kl(t, r)
    kl = gauss_kl(m_out, C_out, m_q, C_q)
    assert abs(est.kl - kl) <= 4 * est.kl_se, (est, kl)
    p, q = stats.multivariate_normal(m_out, C_out), stats.multivariate_normal(m_q, C_q)
    if d == 1:
        sd = np.sqrt(max(C_out[0, 0], C_q[0, 0]))
        lo, hi = min(m_out[0], m_q[0]) - 12 * sd, max(m_out[0], m_q[0]) + 12 * sd
        tv = 0.5 * integrate.quad(lambda z: abs(p.pdf(z) - q.pdf(z)), lo, hi, limit=500, epsabs=1e-12)[0]
        tv_se = 0.0
    else:
        z = p.rvs(size=2_000_000, random_state=np.random.default_rng(9))
        terms = -np.expm1(np.minimum(q.logpdf(z) - p.logpdf(z), 0))
        tv, tv_se = terms.mean(), terms.std() / np.sqrt(len(z))
    assert tv > 20 * est.tv_se   # a real, resolved error: not zero compared with zero
    assert abs(est.tv - tv) <= 4 * np.hypot(est.tv_se, tv_se), (est, tv)


@pytest.mark.parametrize("d,bins", [(1, 200), (2, 60)])
@pytest.mark.parametrize("steps", [3, 6, 10])
def test_tv_agrees_with_histogram_tv(d, bins, steps):
    t = targets.make("gmm-iso", d, 0)
    r = sample(t, DDIM(), schedules.log_snr(steps), n=400_000, seed=1, jacobian="full")
    est = metrics.tv_kl(t, r)
    tv_h, se_h, bias = metrics.histogram_tv(t, r, bins=bins)
    assert est.tv >= 1e-2
    # combined error: 3 standard errors of each, plus the histogram's noise-bias upper bound
    assert abs(est.tv - tv_h) <= 3 * np.hypot(est.tv_se, se_h) + bias, (est.tv, tv_h, se_h, bias)


def test_bin_masses_sum_to_one():
    t = targets.make("gmm-aniso", 2, 0)
    edges = [np.linspace(-8, 8, 41)] * 2
    assert abs(metrics.bin_masses(t, 0.3, edges).sum() - 1) <= 1e-9


def test_exact_sampler_tv_is_tiny_and_se_shrinks_like_root_n():
    t = targets.make("gmm-aniso", 3, 0)
    # (n = 1000: the reference integrates the batch as one system, whose cost grows faster than n)
    r = sample(t, Reference(1e-12, 1e-14), schedules.log_snr(1), n=1000, seed=3, jacobian="full")
    m = metrics.tv_kl(t, r)
    assert m.tv < 1e-6 and abs(m.kl) < 1e-6
    # A fixed-step sampler is the same map for every batch size, so its TV terms are i.i.d.
    # (Reference's adaptive steps are chosen for the whole batch and change with n.)
    ses = []
    for n in (2000, 8000, 32000):
        r = sample(t, Heroism(4, 4), schedules.log_snr(100), n=n, seed=3, jacobian="full")
        m = metrics.tv_kl(t, r)
        assert m.tv < 1e-6
        ses.append(m.tv_se)
    ratios = np.array(ses[:-1]) / np.array(ses[1:])
    # 4x the samples halves the standard error; the SE estimate itself fluctuates by ~10%
    assert np.all((ratios > 1.6) & (ratios < 2.5)), ratios


def test_w2_equals_emd_and_assignment():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 3)), rng.standard_normal((60, 3)) + 0.5
    # equal uniform weights: optimal transport is an assignment (Birkhoff), solved independently
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    i, j = optimize.linear_sum_assignment(C)
    assert metrics.w2(x, y, "exact") == pytest.approx(np.sqrt(C[i, j].mean()), rel=1e-12)
    # in 1-D the optimal coupling is monotone: sort both
    u, v = rng.standard_normal((200, 1)), 2 * rng.standard_normal((200, 1))
    assert metrics.w2(u, v, "exact") == pytest.approx(np.sqrt(np.mean((np.sort(u[:, 0]) - np.sort(v[:, 0])) ** 2)), rel=1e-10)
    # sliced: on 1-D data every projection is +-1, so sliced W2 equals exact W2
    assert metrics.w2(u, v, "sliced", n_projections=8) == pytest.approx(metrics.w2(u, v, "exact"), rel=1e-10)


def test_w2_of_exact_samples_approaches_bures_distance():
    m1, m2 = np.zeros(2), np.array([1.0, -0.5])
    S1, S2 = np.diag([1.0, 0.3]), np.array([[0.5, 0.2], [0.2, 0.8]])
    r2 = linalg.sqrtm(S2)
    w2_true = np.sqrt(np.sum((m1 - m2) ** 2) + np.trace(S1 + S2 - 2 * np.real(linalg.sqrtm(r2 @ S1 @ r2))))
    errs = []
    for n in (100, 400, 1600):
        e = []
        for s in range(4):
            rng = np.random.default_rng([n, s])
            x = rng.multivariate_normal(m1, S1, n)
            y = rng.multivariate_normal(m2, S2, n)
            e.append(abs(metrics.w2(x, y, "exact") - w2_true))
        errs.append(np.mean(e))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.1 * w2_true, errs


def test_w2_report_floor_and_coupling_rmse():
    t = targets.make("gmm-iso", 2, 0)
    r = sample(t, Heroism(3, 3), schedules.log_snr(30), n=500, seed=0)
    w, floor = metrics.w2_report(t, r)
    assert w > 0 and floor > 0 and abs(w - floor) < 0.5 * floor  # an accurate sampler sits at the floor

def test_coupling_rmse_against_a_closed_form_flow_and_the_w2_bound():
    # On a Gaussian the exact flow is the affine map gaussian_flow: the pathwise error of DDIM is
    # then known independently of the Reference solver. coupling_rmse is an upper bound on
    # W2(p_out, p_ref) between the same samples (W2 takes the optimal coupling, checked by POT).
    t = gaussian_target(3, seed=2)
    taus = schedules.log_snr(12)
    r = sample(t, DDIM(), taus, n=300, seed=1)
    exact = gaussian_flow(t, r.x_in, taus[0], taus[-1])
    c = metrics.coupling_rmse(r, exact)
    ref = Reference(1e-12, 1e-14).run(t, taus, r.x_in).x
    assert c == pytest.approx(metrics.coupling_rmse(r, ref), rel=1e-6)      # reference agrees with the closed form
    assert metrics.w2(r.x_out, exact, "exact") <= c + 1e-12
    # a pure translation by v: every sample moves by |v|, so the RMSE is exactly |v|
    v = np.array([0.3, -0.4, 1.2])
    assert metrics.coupling_rmse(r, r.x_out + v) == pytest.approx(np.linalg.norm(v), rel=1e-12)


def test_exact_w2_refuses_an_unconverged_solver(monkeypatch):
    import ot
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 2)), rng.standard_normal((50, 2))
    real = ot.emd2
    monkeypatch.setattr(ot, "emd2", lambda a, b, M, **kw: real(a, b, M, **{**kw, "numItermax": 3}))
    with pytest.raises(FloatingPointError, match="did not converge"):
        metrics.w2(x, y, "exact")


@pytest.mark.parametrize("call", [
    lambda: metrics.w2(np.zeros((3, 2)), np.zeros((3, 3))),
    lambda: metrics.w2(np.zeros((0, 2)), np.zeros((3, 2))),
    lambda: metrics.w2(np.zeros((3, 2)), np.zeros((3, 2)), method="sinkhorn"),
    lambda: metrics.tv_kl(targets.make("gmm-iso", 2), sample(targets.make("gmm-iso", 2), DDIM(), [0.9, 0.1], 5, jacobian="none")),
    lambda: metrics.histogram_tv(targets.make("gmm-iso", 3), sample(targets.make("gmm-iso", 3), DDIM(), [0.9, 0.1], 5)),
])
def test_bad_metric_input(call):
    with pytest.raises(ValueError):
        call()


def test_weight_diagnostics_against_their_definitions_and_heavy_tails():
    from theory_check.metrics import kl_tail_limit, weight_diagnostics
    rng = np.random.default_rng(5)
    lw = 0.3 * rng.standard_normal(5000)
    w, ell = np.exp(lw), -lw
    ess, tail = weight_diagnostics(lw)
    # the definitions computed directly (moderate weights: no overflow to avoid)
    assert ess == pytest.approx(w.sum() ** 2 / (len(w) * np.sum(w * w)), rel=1e-12)
    assert tail == pytest.approx(np.max((ell - ell.mean()) ** 2) / np.sum((ell - ell.mean()) ** 2), rel=1e-12)
    # light tails pass; a Student-t with 1.5 degrees of freedom (infinite variance) is flagged at n = 20000,
    # where one term carries ~25% of the squared deviations against the limit 20 ln(n)/n ~ 1%
    light = metrics.TVKL(0.0, 0.0, 0.0, 0.0, 5000, ess, tail)
    heavy = metrics.TVKL(0.0, 0.0, 0.0, 0.0, 20000, *weight_diagnostics(0.01 * rng.standard_t(1.5, 20000)))
    assert light.kl_se_reliable and not heavy.kl_se_reliable
    assert kl_tail_limit(20) == 1.0
    # one sample holding all the weight: ess ~ 1/n, computed without overflow from log w ~ 1000
    ess1, _ = weight_diagnostics(np.r_[1000.0, np.zeros(99)])
    assert ess1 == pytest.approx(0.01, rel=1e-9)


def test_a_run_row_carries_the_weight_diagnostics():
    row = runs.evaluate(runs.normalise(dict(target="gmm-aniso", dim=3, sampler="heroism", K=2, steps=24, n=300)))
    assert row["status"] == "ok", row.get("error")
    assert 0 < row["ess"] <= 1 and 0 < row["kl_tail"] < 1 and isinstance(row["kl_se_reliable"], bool)
