"""Fits weighted by Monte-Carlo standard errors, against independent computations: the weighted
normal equations, and the coverage of the intervals on simulated data with known errors."""

import json

import numpy as np
import pandas as pd
import pytest

from theory_check import fits


def test_weighted_fit_solves_the_weighted_normal_equations():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 3, 9)
    sig = rng.uniform(0.05, 0.5, 9)
    y = 1.0 + 0.7 * x + sig * rng.standard_normal(9)
    W = np.diag(1 / sig ** 2)
    A = np.column_stack([np.ones(9), x])
    beta = np.linalg.solve(A.T @ W @ A, A.T @ W @ y)
    f = fits.linear_fit(x, y, sigma=sig, n_boot=200)
    assert f["coef"][0] == pytest.approx(beta[1], rel=1e-12)
    assert f["intercept"] == pytest.approx(beta[0], rel=1e-12)
    # the weights matter: the unweighted slope differs here
    assert abs(fits.linear_fit(x, y, n_boot=200)["coef"][0] - beta[1]) > 1e-3


def test_weighted_t_interval_covers_at_its_level():
    # y with known heteroscedastic errors: the 95% t-interval (covariance (A^T W A)^-1 scaled by
    # max(1, chi2_red)) covers the true slope in 93-99% of 400 replicates (binomial sd 1.1%);
    # the Birge scaling only widens, so coverage may exceed 95% but not fall below ~93%.
    rng = np.random.default_rng(1)
    x = np.log([2, 8, 32, 128, 512, 2048, 8192])
    sig = np.array([0.02, 0.02, 0.03, 0.05, 0.08, 0.1, 0.2])
    hits = 0
    for _ in range(400):
        y = 0.3 * x + sig * rng.standard_normal(len(x))
        f = fits.linear_fit(x, y, sigma=sig, n_boot=0)
        hits += f["t_lo"][0] <= 0.3 <= f["t_hi"][0]
    assert 0.93 <= hits / 400 <= 0.995


def test_nfe_min_log_se_from_the_search_bracket():
    # TV 0.02 at 16 steps, 0.005 +- 0.0005 at 32: local slope 2, so se(log steps) = 0.1/2 = 0.05,
    # with the 3% resolution (0.0087) in quadrature.
    row = dict(steps_min=32, search=json.dumps([[2, 0.5, 0.01], [16, 0.02, 0.001], [32, 0.005, 0.0005]]))
    assert fits.nfe_min_log_se(row) == pytest.approx(np.hypot(0.05, 0.03 / np.sqrt(12)), rel=1e-12)
    assert fits.nfe_min_log_se(dict(steps_min=2, search=json.dumps([[2, 0.004, 0.0004]]))) == pytest.approx(
        np.hypot(0.1, 0.03 / np.sqrt(12)), rel=1e-12)


def test_exponent_table_recovers_a_planted_exponent_and_predictions():
    # NFE_min = 10 d^0.25 exactly (K = 3, N = 3: nominal order 4, so 1/(2p) = 0.125; theorem 5/3)
    d = np.array([2, 8, 32, 128, 512, 2048, 8192])
    steps = np.round(10 * d ** 0.25).astype(int)
    rows = pd.DataFrame(dict(target="uniform-cube", target_args="{}", tau_min=1e-3, K=3, N="3", dim=d, eps=1e-2,
                             status="ok", censored=False, nfe_min=7 * steps, steps_min=steps,
                             search=[json.dumps([[int(s), 0.005, 0.0005]]) for s in steps]))
    t = fits.exponent_table(rows)
    assert len(t) == 1
    r = t.iloc[0]
    assert r.fitted == pytest.approx(0.25, abs=0.01)
    assert r.theory == pytest.approx(5 / 3) and r.verdict == "tighter than the bound"
    assert r.prediction == pytest.approx(1 / 8) and r.vs_prediction == "above"


def test_censored_lower_bound_on_the_exponent():
    # K = 2, N = 2: 3 evaluations per step, so max_steps 100 caps the NFE at 300. Instance A:
    # NFE 30 at d = 4, censored at d = 64 -> b > log(300/30)/log(16); instance B: 100 at d = 4,
    # censored at 32 -> log(3)/log(8), smaller. The report must return A's bound.
    from theory_check import report
    base = dict(target="uniform-cube", tau_min=1e-3, K=2, N="2", nodes="equispaced", sweep="jacobi", max_steps=100,
                status="ok")
    rows = pd.DataFrame([dict(base, target_args='{"scale": 1.0}', dim=4, censored=False, nfe_min=30.0),
                         dict(base, target_args='{"scale": 1.0}', dim=64, censored=True, nfe_min=np.nan),
                         dict(base, target_args='{"scale": 4.0}', dim=4, censored=False, nfe_min=100.0),
                         dict(base, target_args='{"scale": 4.0}', dim=32, censored=True, nfe_min=np.nan)])
    b, where = report._censored_bound(rows)
    assert b == pytest.approx(np.log(10) / np.log(16), rel=1e-12)
    assert "scale 1" in where and "d = 64" in where
    assert report._censored_bound(rows[~rows.censored]) is None


def test_dimension_table_names_every_jacobian_mode_with_its_dimensions():
    # gmm-iso runs the full Jacobian at d = 4 (the structured basis would span the space) and the
    # structured one above; the table printed only the first row's mode ("full") for the family.
    from theory_check import report
    sub = pd.DataFrame(dict(dim=[4, 16, 64, 1024], jacobian=["full", "structured", "structured", "structured"]))
    assert report._jacobian_modes(sub) == "full (d 4), structured (d 16–1024)"
    assert report._jacobian_modes(sub.iloc[1:]) == "structured"
