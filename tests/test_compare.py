"""Built-in samplers against Hugging Face diffusers' schedulers (an independent implementation),
and `compare.DiffusersSampler`'s exact log-determinant. Needs the `[compare]` extra (CI installs it)."""

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="the [compare] extra (diffusers, torch) is not installed")

from theory_check import compare, metrics, sample, schedules, targets  # noqa: E402
from theory_check import samplers as S  # noqa: E402

D = diffusers
# diffusers' defaults that change the order near the end are turned off where our samplers do not
# have them; final_sigmas_type="sigma_min" keeps DPM-Solver's last step at its order.
CASES = [
    ("DDIM", lambda: D.DDIMScheduler(clip_sample=False, set_alpha_to_one=False), S.DDIM()),
    ("Euler", lambda: D.EulerDiscreteScheduler(), S.DDIM()),
    ("Heun", lambda: D.HeunDiscreteScheduler(), S.Heun()),
    ("DPM-Solver++ 2M", lambda: D.DPMSolverMultistepScheduler(lower_order_final=False, final_sigmas_type="sigma_min"),
     S.make("dpm2m")),
    ("DPM-Solver++ 3M", lambda: D.DPMSolverMultistepScheduler(solver_order=3, lower_order_final=False,
                                                              final_sigmas_type="sigma_min"), S.make("dpm3m")),
    ("UniPC bh2 order 3", lambda: D.UniPCMultistepScheduler(solver_order=3, lower_order_final=False), S.make("unipc")),
    ("UniPC bh1 order 3", lambda: D.UniPCMultistepScheduler(solver_order=3, solver_type="bh1", lower_order_final=False),
     S.make("unipc-bh1")),
    ("UniPC bh2 order 2, lower_order_final", lambda: D.UniPCMultistepScheduler(solver_order=2),
     S.UniPC(2, lower_order_final=True)),
    ("UniPC bh1 order 1", lambda: D.UniPCMultistepScheduler(solver_order=1, solver_type="bh1"), S.UniPC(1, "bh1")),
    ("UniP order 3, no corrector", lambda: D.UniPCMultistepScheduler(solver_order=3, lower_order_final=False,
                                                                     disable_corrector=list(range(100))),
     S.UniPC(3, corrector=False)),
    ("DEIS order 3", lambda: D.DEISMultistepScheduler(solver_order=3, lower_order_final=False), S.make("deis")),
    ("DEIS order 2", lambda: D.DEISMultistepScheduler(solver_order=2, lower_order_final=False), S.DEIS(2)),
]


def _problem(name, d):
    t = targets.make(name, d, 0)
    return t, t.sample(40, 0.999, np.random.default_rng(0))


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("target,d", [("gmm-aniso", 4), ("gmm-iso", 3), ("sphere", 3)])
@pytest.mark.parametrize("name,scheduler,ours", CASES, ids=[c[0] for c in CASES])
def test_builtin_equals_diffusers(target, d, name, scheduler, ours):
    # Float64 on both sides, the same tau sequence: equal to rounding. The bound 1e-10 is ~1e5 ulps:
    # DEIS's closed-form weights (differences of x log x terms) against our quadrature lose ~1e-13.
    t, x = _problem(target, d)
    for taus in (schedules.log_snr(20), schedules.edm(16, 0.002, 0.995)):
        theirs = compare.DiffusersSampler(scheduler()).run(t, taus, x, jacobian="full")
        mine = ours.run(t, taus, x, jacobian="full")
        assert theirs.nfe == mine.nfe == ours.nfe(len(taus) - 1)
        assert np.abs(theirs.x - mine.x).max() <= 1e-10 * max(1.0, np.abs(mine.x).max()), name
        assert np.abs(theirs.logdet - mine.logdet).max() <= 1e-10 * max(1.0, np.abs(mine.logdet).max()), name


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("target,d", [("gmm-aniso", 4), ("gmm-iso", 3)])
def test_dpm2s_equals_diffusers_singlestep_on_the_interleaved_grid(target, d):
    # Our 2S step over [tau_hi, tau_lo] with its lambda-midpoint tau_s is diffusers' pair of
    # singlestep stages (order list 1, 2, 1, 2, ...) over [tau_hi, tau_s, tau_lo].
    t, x = _problem(target, d)
    taus = schedules.log_snr(12)
    lam = 0.5 * (np.log1p(-taus) - np.log(taus))
    mid = 1.0 / (1.0 + np.exp(lam[:-1] + lam[1:]))
    grid = np.empty(2 * len(taus) - 1)
    grid[0::2], grid[1::2] = taus, mid
    sched = D.DPMSolverSinglestepScheduler(solver_order=2, lower_order_final=False, final_sigmas_type="sigma_min")
    theirs = compare.DiffusersSampler(sched).run(t, grid, x, jacobian="full")
    mine = S.make("dpm2s").run(t, taus, x, jacobian="full")
    assert theirs.nfe == mine.nfe == 24
    assert np.abs(theirs.x - mine.x).max() <= 1e-10 * max(1.0, np.abs(mine.x).max())
    assert np.abs(theirs.logdet - mine.logdet).max() <= 1e-10


@pytest.mark.filterwarnings("ignore")
def test_tv_of_diffusers_dpm_2m_equals_the_builtin():
    t = targets.make("gmm-aniso", 8, 0)
    taus = schedules.log_snr(20)
    sched = D.DPMSolverMultistepScheduler(lower_order_final=False, final_sigmas_type="sigma_min")
    theirs = metrics.tv_kl(t, sample(t, compare.DiffusersSampler(sched), taus, n=4000, seed=0, jacobian="full"))
    mine = metrics.tv_kl(t, sample(t, S.DPMSolverPP(2), taus, n=4000, seed=0, jacobian="full"))
    assert abs(theirs.tv - mine.tv) <= 1e-9 and abs(theirs.kl - mine.kl) <= 1e-9
    assert theirs.tv > 10 * theirs.tv_se          # a resolved TV, not noise


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("scheduler,match", [
    (lambda: D.DDIMScheduler(), "not linear"),                                  # clip_sample=True by default
    (lambda: D.DPMSolverMultistepScheduler(thresholding=True, sample_max_value=1.0), "refused"),
    (lambda: D.DDPMScheduler(), "not supported"),
    (lambda: D.DPMSolverMultistepScheduler(prediction_type="v_prediction"), "prediction_type must be 'epsilon'"),
])
def test_nonlinear_or_unsupported_schedulers_are_refused(scheduler, match):
    t, x = _problem("gmm-iso", 2)
    with pytest.raises(ValueError, match=match):
        compare.DiffusersSampler(scheduler()).run(t, schedules.log_snr(6), x, jacobian="full")


@pytest.mark.filterwarnings("ignore")
def test_schedule_taus_reads_the_schedulers_own_grid():
    # diffusers' default linear-beta grid: tau_t = 1 - alpha_bar_t at its timesteps, recomputed here
    sched = D.DPMSolverMultistepScheduler()
    taus = compare.schedule_taus(sched, 10)
    betas = np.linspace(sched.config.beta_start, sched.config.beta_end, 1000, dtype=np.float32).astype(float)
    abar = np.cumprod(1 - betas)
    ts = np.linspace(0, 999, 11).round()[::-1][:-1].astype(int)
    # diffusers takes the cumulative product of 1000 float32 factors (~1e-5 relative on alpha_bar)
    # and holds alpha_bar in float32, whose spacing near 1 is 6e-8: 1 - alpha_bar to ~1e-7 absolute
    np.testing.assert_allclose(taus[:-1], 1 - abar[ts], rtol=1e-4, atol=1e-7)
    assert len(taus) == 11 and taus[-1] == pytest.approx(1 - abar[0], rel=1e-4, abs=1e-7)
    assert np.all(np.diff(taus) < 0)


@pytest.mark.filterwarnings("ignore")
def test_diagonal_mode_through_diffusers_equals_full():
    # a product target: the tangent rows of the diagonal mode ride in the batch like the full
    # mode's d columns; both give the same map and log-determinant
    t = targets.make("uniform-cube", 5)
    x = t.sample(30, 0.999, np.random.default_rng(0))
    smp = compare.DiffusersSampler(D.DPMSolverMultistepScheduler(lower_order_final=False, final_sigmas_type="sigma_min"))
    a, b = smp.run(t, schedules.log_snr(20), x, jacobian="full"), smp.run(t, schedules.log_snr(20), x, jacobian="diagonal")
    np.testing.assert_allclose(b.x, a.x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.logdet, a.logdet, rtol=0, atol=1e-10)
    mine = S.make("dpm2m").run(t, schedules.log_snr(20), x, jacobian="diagonal")
    np.testing.assert_allclose(b.logdet, mine.logdet, rtol=0, atol=1e-10)
