"""Score-error fields (SPEC 11, targets.errors): Jacobians against finite differences, realised
errors against independent Monte-Carlo estimates and direct recomputation, structured and diagonal
modes against the full one, and the scalings that define each field."""

import numpy as np
import pytest

from theory_check import runs, sample, schedules, targets
from theory_check import samplers as S
from theory_check.targets import errors

from conftest import fd_jacobian

TAU = 0.2


def _fields():
    gmm = targets.make("gmm-iso", 4, 0)
    cube = targets.make("uniform-cube", 3, 0)
    return [("smooth", targets.Perturbed(gmm, 0.1, seed=1)),
            ("fourier", targets.FourierError(gmm, 0.1, omega=3.0, seed=1)),
            ("fourier-separable", targets.FourierError(cube, 0.1, omega=3.0, seed=1, separable=True)),
            ("quantised", targets.QuantisedError(gmm, 20))]


@pytest.mark.parametrize("name,field", _fields(), ids=[n for n, _ in _fields()])
def test_jacobian_against_finite_differences(name, field):
    # 4th-order central differences with h = 1e-3 sqrt(tau): truncation ~h^4 f^(5) (omega = 3 over the
    # data scale ~1 keeps it ~1e-10 relative), rounding ~eps |s| / h ~ 1e-11: 1e-6 relative is slack.
    x = field.base.sample(6, TAU, np.random.default_rng(3))
    J = field.score_jacobian(x, TAU)
    fd = fd_jacobian(lambda z: field.score(z, TAU), x, 1e-3 * np.sqrt(TAU))
    assert np.max(np.abs(J - fd)) <= 1e-6 * np.max(np.abs(J)), name


@pytest.mark.parametrize("name,field", _fields(), ids=[n for n, _ in _fields()])
def test_records_equal_a_direct_recomputation(name, field):
    # one evaluation's record against |s_hat - s|^2 from the public scores and the Frobenius and
    # operator norms of the Jacobians' difference by numpy's SVD
    x = field.base.sample(7, TAU, np.random.default_rng(4))
    field.records.clear()
    field._eval(x, TAU, True)
    tau, n, d2, fro, op = field.records[-1]
    delta = field.score(x, TAU) - field.base.score(x, TAU)
    dJ = field.score_jacobian(x, TAU) - field.base.score_jacobian(x, TAU)
    assert (tau, n) == (TAU, 7)
    np.testing.assert_allclose(d2, np.sum(delta ** 2), rtol=1e-10)
    np.testing.assert_allclose(fro, np.sum(dJ ** 2), rtol=1e-10)
    np.testing.assert_allclose(op, np.sum(np.linalg.svd(dJ, compute_uv=False)[:, 0] ** 2), rtol=1e-10)


def test_fourier_size_is_eps_squared_over_tau_under_the_target():
    # normalised on 4096 draws of q_1e-3; checked on 20000 fresh draws (another seed): MC error ~2%
    base = targets.make("gmm-aniso", 5, 0)
    for separable, b in ((False, base), (True, targets.make("product-gmm", 6, 0))):
        f = targets.FourierError(b, 0.2, omega=5.0, seed=2, separable=separable)
        x = b.sample(20000, 1e-3, np.random.default_rng(99))
        delta = f.score(x, 0.3) - b.score(x, 0.3)
        per = np.mean(delta ** 2, axis=0)
        if separable:           # every coordinate's error is eps
            np.testing.assert_allclose(per, 0.04 / 0.3, rtol=0.1)
        else:
            np.testing.assert_allclose(per.sum(), 0.04 / 0.3, rtol=0.1)


def test_fourier_jacobian_error_grows_like_omega():
    # grad delta = -(omega / l) ... sin(.): at fixed eps its RMS is proportional to omega (the sin and
    # cos features have the same mean square for omega Omega x / l spread over many periods)
    base = targets.make("gmm-iso", 4, 0)
    x = base.sample(4000, 1e-3, np.random.default_rng(5))
    rms = []
    for omega in (8.0, 32.0):
        f = targets.FourierError(base, 0.1, omega=omega, seed=1)
        f._eval(x, TAU, True)
        rms.append(np.sqrt(f.score_error()[1]))
    assert 3.6 < rms[1] / rms[0] < 4.4, rms


def test_quantised_is_exact_at_the_levels_and_jumps_between():
    base = targets.make("gmm-aniso", 3, 0)
    q = targets.QuantisedError(base, 10)
    x = base.sample(5, 0.3, np.random.default_rng(6))
    lv = q.levels
    np.testing.assert_array_equal(q.score(x, lv[4]), base.score(x, lv[4]))
    mid = 0.5 * (lv[4] + lv[5])
    below, above = np.nextafter(mid, 0), np.nextafter(mid, 1)
    np.testing.assert_array_equal(q.score(x, below), base.score(x, lv[4]))
    np.testing.assert_array_equal(q.score(x, above), base.score(x, lv[5]))


def test_ddpm_levels_from_the_definition():
    # tau_t = 1 - prod_{i <= t} (1 - beta_i), beta linear from 1e-4 to 0.02 over 1000 steps, by a loop
    beta = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    abar, taus = 1.0, []
    for b in beta:
        abar *= 1 - b
        taus.append(1 - abar)
    np.testing.assert_allclose(targets.ddpm_levels(1000), taus, rtol=1e-12)
    np.testing.assert_allclose(targets.ddpm_levels(4), [taus[0], taus[333], taus[666], taus[999]], rtol=1e-12)
    with pytest.raises(ValueError, match="M must be <= 1000"):
        targets.ddpm_levels(1001)


@pytest.mark.parametrize("name,field,mode", [
    ("quantised-structured", targets.QuantisedError(targets.make("gmm-iso", 6, 0), 30), "structured"),
    ("quantised-diagonal", targets.QuantisedError(targets.make("uniform-cube", 5, 0), 300), "diagonal"),
    ("fourier-diagonal", targets.FourierError(targets.make("rademacher-cube", 5, 0), 0.05, omega=2.0, seed=3,
                                              separable=True), "diagonal"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_structured_and_diagonal_modes_equal_full(name, field, mode):
    # the same map and logdet through the cheap representation; the records agree too
    x = field.base.sample(40, 0.999, np.random.default_rng(7))
    taus = schedules.log_snr(8)
    out = {}
    for m in ("full", mode):
        field.records.clear()
        out[m] = (S.Heroism(3, 3).run(field, taus, x, jacobian=m), field.score_error())
    np.testing.assert_allclose(out[mode][0].x, out["full"][0].x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[mode][0].logdet, out["full"][0].logdet, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out[mode][1], out["full"][1], rtol=1e-9)


def test_a_run_reports_both_jacobian_errors():
    spec = runs.normalise(dict(target="gmm-aniso", dim=3, score_eps=0.05, score_field="fourier", score_omega=4.0,
                               sampler="ddim", steps=8, n=300))
    row = runs.evaluate(spec)
    assert row["status"] == "ok" and row["score_err"] > 0 and row["jac_err"] >= row["jac_err_op"] > 0
    assert row["score_field"] == "fourier" and row["score_omega"] == 4.0 and row["score_levels"] is None


@pytest.mark.parametrize("spec,match", [
    (dict(score_field="quantised", score_eps=0.1), "score_eps must be 0"),
    (dict(score_field="rough", score_eps=0.1), "score_field must be one of"),
    (dict(score_field="quantised", score_levels=5000), "score_levels must be <= 1000"),
    (dict(score_field="fourier", score_eps=0.1, score_omega=-1.0), "score_omega"),
])
def test_bad_field_parameters(spec, match):
    with pytest.raises(ValueError, match=match):
        runs.normalise(spec)


def test_inactive_field_parameters_do_not_split_keys():
    a = runs.normalise(dict(score_omega=3.0))
    b = runs.normalise(dict())
    assert a == b and a["score_field"] is None


def test_sample_result_carries_the_three_errors():
    f = targets.FourierError(targets.make("gmm-iso", 2, 0), 0.1, omega=2.0)
    r = sample(f, S.DDIM(), schedules.log_snr(4), n=50, jacobian="full")
    assert len(r.score_error) == 3 and r.score_error[1] >= r.score_error[2] > 0
    assert isinstance(f, errors.ScoreError)


@pytest.mark.parametrize("name", ["gmm-iso", "uniform-cube", "gmm-aniso"])
def test_the_keeps_table_matches_the_built_fields(name):
    # runs validates Jacobian modes from targets.KEEPS without building the field: it must say what
    # the fields, as runs builds them, actually keep
    base = targets.make(name, 6, 0)
    built = {"smooth": targets.Perturbed(base, 0.1), "quantised": targets.QuantisedError(base, 20),
             "fourier": targets.FourierError(base, 0.1, separable=base.diagonal)}
    for field, t in built.items():
        keeps = targets.KEEPS[field]
        assert (t.active_basis is not None) == (base.active_basis is not None and "structured" in keeps), field
        assert bool(getattr(t, "diagonal", False)) == (bool(base.diagonal) and "diagonal" in keeps), field
