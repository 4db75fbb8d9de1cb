import decimal
import math

import numpy as np
import pytest

from theory_check import schedules


def _paper_naive(T, c0=2.0, c1=4.0):
    # The product formula of SPEC section 4, literally, with the product in 50-digit decimals
    # (a float product would lose relative precision in 1 - alpha_bar near tau = 0).
    eta = c1 * math.log(T) / T
    beta = [T ** -c0]
    for t in range(1, T):
        beta.append(eta * min(beta[0] * (1 + eta) ** t, 1.0))
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        taus, abar = [], decimal.Decimal(1)
        for b in beta:
            abar *= 1 - decimal.Decimal(b)
            taus.append(float(1 - abar))
    return np.array(taus[::-1])


@pytest.mark.parametrize("T", [27, 50, 100, 1000, 5000])
def test_paper_reproduces_product_formula(T):
    # paper() sums T log1p terms: relative rounding at most ~T eps (we allow 4 T eps).
    np.testing.assert_allclose(schedules.paper(T), _paper_naive(T), rtol=4 * T * np.finfo(float).eps, atol=0)


@pytest.mark.parametrize("c0,c1", [(2.0, 4.0), (1.0, 2.0), (3.0, 4.0)])
def test_paper_strictly_decreasing_in_unit_interval(c0, c1):
    Ts = sorted(set(range(2, 300)) | set(np.unique(np.logspace(2.5, 5, 25).astype(int)).tolist()))
    for T in Ts:
        taus = schedules.paper(T, c0, c1)
        assert taus.shape == (T,)
        assert np.all(taus > 0) and np.all(taus < 1), T
        assert np.all(np.diff(taus) < 0), T
        assert taus[-1] == pytest.approx(T ** -c0, rel=1e-12)


def test_paper_refuses_schedules_below_float64_resolution():
    # c1 = 8: alpha_bar_T ~ T^-5 ~ 1e-15 at T = 825, so 1 - alpha_bar rounds to equal values.
    with pytest.raises(ValueError, match="c1"):
        schedules.paper(825, 3.0, 8.0)


def test_log_snr_end_points_and_uniform_lambda():
    for steps in (1, 7, 100, 2000):
        taus = schedules.log_snr(steps, 1e-4, 0.9999)
        assert taus[0] == 0.9999 and taus[-1] == 1e-4 and len(taus) == steps + 1
        lam = np.log((1 - taus) / taus)
        np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-8)


def test_edm_end_points_and_monotone():
    taus = schedules.edm(30)
    assert taus[0] == 1 - 1e-3 and taus[-1] == 1e-3 and np.all(np.diff(taus) < 0)
    sig = np.sqrt(taus / (1 - taus)) ** (1 / 7)
    np.testing.assert_allclose(np.diff(sig), np.diff(sig)[0], rtol=1e-8)


@pytest.mark.parametrize("call", [
    lambda: schedules.paper(1), lambda: schedules.paper(10.5), lambda: schedules.paper(10, c0=-1),
    lambda: schedules.log_snr(0), lambda: schedules.log_snr(5, 0.5, 0.1), lambda: schedules.log_snr(5, 0.0),
    lambda: schedules.validate([0.5]), lambda: schedules.validate([0.5, 0.6]),
    lambda: schedules.validate([1.0, 0.5]), lambda: schedules.validate([0.5, np.nan]),
])
def test_bad_schedule_input(call):
    with pytest.raises(ValueError):
        call()
