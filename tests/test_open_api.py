"""The open API (SPEC 10): registry and aliases, "package.module:attr" samplers, `from_function`
with forward-mode tangents, user targets, NFE accounting, and the new samplers' weights."""

import json
import math
import sys
import textwrap

import numpy as np
import pytest

from conftest import fd_jacobian
from test_samplers import Counting
from theory_check import cli, metrics, runs, sample, schedules, sweep, targets
from theory_check import samplers as S

EULER_SRC = '''
import math
from theory_check.samplers import Sampler


def euler(model, x, sigmas):
    """k-diffusion's sample_euler (no churn), written with NumPy."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - model(x, s)) / s
        x = x + d * (s_next - s)
    return x


def scaled_euler(model, x, sigmas, scale=1.0):
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (x - model(x, s)) / s * (scale * (s_next - s))
    return x


class MyDDIM(Sampler):
    """DDIM as a user's class: exponential Euler in rho on eps."""

    def nfe(self, steps):
        return steps

    def integrate(self, target, taus, x, Dx, tangent, out):
        for tau_hi, tau_lo in zip(taus[:-1], taus[1:]):
            eps, De = tangent.noise(x, tau_hi, Dx)
            a_hi, a_lo = math.sqrt(1 - tau_hi), math.sqrt(1 - tau_lo)
            dr = math.sqrt(tau_lo / (1 - tau_lo)) - math.sqrt(tau_hi / (1 - tau_hi))
            x, Dx = tangent.combine([a_lo / a_hi, a_lo * dr], [(x, Dx), (eps, De)])
            yield tau_hi, tau_lo, x, Dx


NOT_A_SAMPLER = 42
'''


@pytest.fixture
def usermod(tmp_path, monkeypatch):
    name = f"tc_user_{abs(hash(str(tmp_path))) % 10 ** 8}"
    (tmp_path / f"{name}.py").write_text(EULER_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


# -- registry -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,cls,params", [
    ("euler", S.DDIM, {}), ("DDIM", S.DDIM, {}), ("dpmpp_2m", S.DPMSolverPP, dict(order=2)),
    ("DPM-Solver++", S.DPMSolverPP, dict(order=2)), ("dpmpp_3m", S.DPMSolverPP, dict(order=3, coefficient="released")),
    ("dpm3m", S.DPMSolverPP, dict(order=3, coefficient="released", warmup="lower")),
    ("dpmpp_3m_taylor", S.DPMSolverPP, dict(order=3, coefficient="taylor", warmup="2s")),
    ("dpmpp_2s", S.DPMSolverPP2S, {}), ("UniPC", S.UniPC, dict(order=3, variant="bh2")),
    ("unipc_bh1", S.UniPC, dict(variant="bh1")), ("deis", S.DEIS, dict(basis="log-rho")),
    ("deis_tab", S.DEIS, dict(basis="tau")), ("iPNDM", S.IPNDM, {}), ("heun", S.Heun, {}), ("RK4", S.RK4, {}),
    ("heroism", S.Heroism, {}), ("reference", S.Reference, {}), ("ddpm", S.DDPM, {})])
def test_registry_names_and_aliases(name, cls, params):
    s = S.make(name)
    assert type(s) is cls
    for k, v in params.items():
        assert getattr(s, k) == v


def test_registry_passes_parameters_and_names_bad_ones():
    assert S.make("unipc", order=2, variant="bh1").order == 2
    assert S.make("heroism", K="log").order_K(100) == 5        # ceil(log 100) = 5
    with pytest.raises(ValueError, match="sampler_args.*unipc"):
        S.make("unipc", K=3)
    with pytest.raises(ValueError, match="sampler must be one of"):
        S.make("dpmpp_9m")


def test_module_attr_loads_functions_and_sampler_classes_only(usermod):
    assert isinstance(S.make(f"{usermod}:euler"), S.FunctionSampler)
    assert isinstance(S.make(f"{usermod}:MyDDIM"), S.Sampler)
    for bad, match in [("subprocess:Popen", "Popen is a type, not a theory_check Sampler"),
                       (f"{usermod}:NOT_A_SAMPLER", "NOT_A_SAMPLER is a int"),
                       (f"{usermod}:nothing", "has no attribute 'nothing'"),
                       ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
                       ("os:system", "system is a builtin_function_or_method")]:
        with pytest.raises(ValueError, match=match):
            S.make(bad)


def test_nfe_per_step_and_budget():
    for s in [S.DDIM(), S.Heun(), S.RK4(), S.make("dpm2s"), S.make("unipc"), S.make("dpm3m-taylor"),
              S.Heroism(3, 2), S.Heroism("log"), S.Heroism(2, "paper")]:
        for budget in (7, 24, 100, 384):
            steps = s.steps_for_budget(budget)
            assert steps >= 1 and (s.nfe(steps) <= budget or steps == 1)
            assert s.nfe(steps + 1) > budget          # the largest that fits
    assert S.Heun().nfe_per_step(10) == 2 and S.make("dpm3m-taylor").nfe_per_step(10) == 1.1


# -- counting, independently of the samplers' own bookkeeping --------------------------------------

def _euler(model, x, sigmas):
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - model(x, s)) / s
        x = x + d * (s_next - s)
    return x


def _heun(model, x, sigmas):
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - model(x, s)) / s
        x2 = x + d * (s_next - s)
        d2 = (x2 - model(x2, s_next)) / s_next
        x = x + (d + d2) * (0.5 * (s_next - s))
    return x


@pytest.mark.parametrize("steps", [1, 2, 5, 17])
def test_nfe_is_what_the_target_counts(steps):
    t = Counting(targets.make("gmm-iso", 3, 0))
    x = t.base.sample(4, 0.9, np.random.default_rng(0))
    taus = schedules.log_snr(steps, 0.5, 0.9)
    for s in [S.make("dpm2s"), S.make("unipc"), S.UniPC(1), S.make("deis"), S.make("deis-tab"), S.make("ipndm"),
              S.Heroism("log"), S.Heroism("log", N=1, sweep="gauss-seidel"), S.from_function(_euler),
              S.from_function(_heun)]:
        for mode in ("none", "full", "structured"):
            t.calls = 0
            out = s.run(t, taus, x, jacobian=mode)
            assert out.nfe == t.calls == s.nfe(steps), (s, mode)


# -- from_function -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,jacobian", [("gmm-iso", "full"), ("gmm-iso", "structured"), ("gmm-aniso", "full"),
                                           ("sphere", "structured")])
def test_user_euler_function_equals_ddim(name, jacobian):
    # Euler in sigma on the VE form is DDIM: same map to rounding, same logdet to 1e-10.
    t = targets.make(name, 4, 0)
    x = t.sample(50, 0.999, np.random.default_rng(0))
    taus = schedules.log_snr(30)
    mine = S.from_function(_euler).run(t, taus, x, jacobian=jacobian)
    ddim = S.DDIM().run(t, taus, x, jacobian=jacobian)
    np.testing.assert_allclose(mine.x, ddim.x, rtol=0, atol=1e-12 * np.abs(ddim.x).max())
    np.testing.assert_allclose(mine.logdet, ddim.logdet, rtol=0, atol=1e-10)
    assert mine.nfe == ddim.nfe == 30


def test_user_heun_function_equals_heun_and_logdet_equals_finite_differences():
    t = targets.make("gmm-aniso", 3, 0)
    x = t.sample(3, 0.999, np.random.default_rng(0))
    taus = schedules.log_snr(10, 0.01)
    f = S.from_function(_heun)
    out = f.run(t, taus, x, jacobian="full")
    np.testing.assert_allclose(out.x, S.Heun().run(t, taus, x).x, rtol=0, atol=1e-12)
    sign, ld = np.linalg.slogdet(fd_jacobian(lambda z: f.run(t, taus, z).x, x, 1e-4))
    assert np.all(sign > 0) and np.max(np.abs(out.logdet - ld)) <= 1e-6    # 4th-order FD, h = 1e-4


def _clipped(model, x, sigmas):
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = np.clip(x + (x - model(x, s)) / s * (s_next - s), -50, 50)
    return x


def _squared(model, x, sigmas):
    return x * model(x, sigmas[0])


def test_from_function_names_what_it_cannot_differentiate():
    t = targets.make("gmm-iso", 2, 0)
    x = t.sample(5, 0.999, np.random.default_rng(0))
    taus = schedules.log_snr(4)
    with pytest.raises(S.DifferentiationError, match="numpy.clip"):
        S.from_function(_clipped).run(t, taus, x, jacobian="full")
    with pytest.raises(S.DifferentiationError, match="numpy.multiply of a state by another state"):
        S.from_function(_squared).run(t, taus, x, jacobian="full")
    assert S.from_function(_clipped).run(t, taus, x).x.shape == (5, 2)     # jacobian="none" always works
    with pytest.raises(ValueError, match="fn must be a Python function"):
        S.from_function(np.sum)


# -- through a TOML study and the CLI -------------------------------------------------------------

def _study(tmp_path, sampler, extra=""):
    p = tmp_path / f"s_{abs(hash(sampler + extra)) % 10 ** 6}.toml"
    p.write_text(textwrap.dedent(f"""
        [study]
        name = "mine"
        [defaults]
        target = "gmm-aniso"
        dim = 4
        n = 500
        steps = [8, 16]
        metrics = ["tv", "kl"]
        sampler = "{sampler}"
        {extra}
        [[grid]]
    """))
    return p


@pytest.mark.parametrize("attr,extra", [("euler", ""), ("MyDDIM", ""), ("scaled_euler", "sampler_args = { scale = 1.0 }")])
def test_user_sampler_in_a_toml_study_gives_the_rows_of_the_builtin(tmp_path, usermod, attr, extra):
    mine = sweep.run_study(_study(tmp_path, f"{usermod}:{attr}", extra), tmp_path / "a", jobs=1, progress=False)
    ddim = sweep.run_study(_study(tmp_path, "ddim"), tmp_path / "b", jobs=1, progress=False)
    assert list(mine.status) == ["ok", "ok"]
    for col in ("tv", "tv_se", "kl", "nfe"):
        np.testing.assert_allclose(mine[col].to_numpy(float), ddim[col].to_numpy(float), rtol=1e-9, atol=0)
    if extra:
        assert json.loads(mine.sampler_args.iloc[0]) == {"scale": 1.0}


def test_user_sampler_through_the_cli(usermod, capsys):
    args = ["sample", "--target", "gmm-aniso", "--dim", "4", "--steps", "12", "--samples", "400", "--format", "json"]
    assert cli.main(args + ["--sampler", f"{usermod}:euler"]) == 0
    mine = json.loads(capsys.readouterr().out)
    assert cli.main(args + ["--sampler", "euler"]) == 0
    ddim = json.loads(capsys.readouterr().out)
    assert mine["nfe"] == ddim["nfe"] == 12
    assert abs(mine["tv"] - ddim["tv"]) <= 1e-9 * ddim["tv"] and abs(mine["kl"] - ddim["kl"]) <= 1e-9 * abs(ddim["kl"])
    assert cli.main(args + ["--sampler", f"{usermod}:scaled_euler", "--sampler-arg", "scale=1.0"]) == 0
    assert abs(json.loads(capsys.readouterr().out)["tv"] - ddim["tv"]) <= 1e-9 * ddim["tv"]


def test_cli_refuses_a_non_sampler_attribute_with_one_line(capsys):
    assert cli.main(["sample", "--sampler", "subprocess:Popen"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0]


# -- user targets ----------------------------------------------------------------------------------------

def _gaussian_pieces(t):
    """The public methods of a built-in single Gaussian, as plain callables."""
    return dict(score=t.score, score_jacobian=t.score_jacobian, log_density=t.log_density, sample=t.sample)


def test_from_functions_target_gives_the_builtin_tv():
    base = targets.make("gmm-aniso", 3, 0)
    mine = targets.from_functions(3, **_gaussian_pieces(base))
    taus = schedules.log_snr(12)
    r1 = sample(mine, S.Heroism(2, 2), taus, n=800, seed=3, jacobian="full")
    r2 = sample(base, S.Heroism(2, 2), taus, n=800, seed=3, jacobian="full")
    np.testing.assert_allclose(metrics.tv_kl(mine, r1).tv, metrics.tv_kl(base, r2).tv, rtol=1e-12)


def test_metrics_say_what_a_score_only_target_lacks():
    base = targets.make("gmm-iso", 2, 0)
    t = targets.from_functions(2, score=base.score)
    x = base.sample(20, 0.999, np.random.default_rng(0))
    taus = schedules.log_snr(20)
    out = S.DDIM().run(t, taus, x)                                # a sampler needs the score only
    ref = S.Reference(1e-10, 1e-12).run(base, taus, x).x
    assert np.isfinite(np.sqrt(np.mean(np.sum((out.x - ref) ** 2, 1))))
    with pytest.raises(ValueError, match="init='exact'.*no sample"):
        sample(t, S.DDIM(), taus, n=10)
    with pytest.raises(ValueError, match="no score_jacobian"):
        sample(t, S.DDIM(), taus, n=10, init="gaussian", jacobian="full")
    r = sample(targets.from_functions(2, score=base.score, score_jacobian=base.score_jacobian), S.DDIM(), taus, n=10,
               init="gaussian", jacobian="full")
    with pytest.raises(ValueError, match="tv_kl needs the target's closed-form log density"):
        metrics.tv_kl(t, r)


def test_a_user_target_subclass_with_public_methods_runs_everywhere():
    base = targets.make("gmm-aniso", 2, 1)

    class Mine(targets.Target):
        dim = 2

        def score(self, x, tau):
            return base.score(x, tau)

        def score_jacobian(self, x, tau):
            return base.score_jacobian(x, tau)

        def log_density(self, x, tau):
            return base.log_density(x, tau)

        def sample(self, n, tau, rng):
            return base.sample(n, tau, rng)

    taus = schedules.log_snr(10)
    r1 = sample(Mine(), S.make("unipc"), taus, n=300, seed=1, jacobian="full")
    r2 = sample(base, S.make("unipc"), taus, n=300, seed=1, jacobian="full")
    np.testing.assert_allclose(metrics.tv_kl(Mine(), r1).kl, metrics.tv_kl(base, r2).kl, rtol=1e-12)

    class NoScore(targets.Target):
        dim = 2
    with pytest.raises(NotImplementedError, match="must implement score"):
        S.DDIM().run(NoScore(), taus, np.zeros((1, 2)))


# -- weights of the new samplers against independent quadrature ----------------------------------------

@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("basis", ["log-rho", "tau", "rho"])
@pytest.mark.parametrize("points,lo", [([0.999, 0.99, 0.97], 0.95), ([0.3, 0.35, 0.4], 0.25), ([2e-3, 3e-3], 1e-3),
                                       ([0.999], 1e-3)])
def test_ab_weights_against_quad(basis, points, lo):
    from scipy.integrate import quad
    rho = lambda t: math.sqrt(t / (1 - t))                  # noqa: E731
    var = {"log-rho": lambda t: math.log(rho(t)), "rho": rho, "tau": lambda t: t}[basis]
    c = S.ab_weights(points, lo, basis)
    for k in range(len(points)):
        def integrand(r):
            t = r * r / (1 + r * r)
            return np.prod([(var(t) - var(p)) / (var(points[k]) - var(p)) for j, p in enumerate(points) if j != k])
        ref, _ = quad(integrand, rho(points[0]), rho(lo), epsabs=0, epsrel=1e-13, limit=400)
        assert abs(c[k] - ref) <= 1e-11 * max(1.0, abs(ref))


def test_heroism_log_order_grows_with_steps():
    h = S.Heroism("log")
    assert [h.order_K(T) for T in (2, 8, 20, 100, 10 ** 6)] == [2, 3, 3, 5, 12]
    assert h.nfe(20) == 20 * (1 + 3 * 2)
    with pytest.raises(ValueError, match="N must be an integer, 'paper' or 'K' when K = 'log'"):
        runs.normalise(dict(sampler="heroism", K="log", N="K-1"))
