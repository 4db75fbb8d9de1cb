"""Hostile inputs, property-based checks over random valid mixtures, and faults in sweeps."""

import errno
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from theory_check import metrics, runs, sample, schedules, sweep, targets
from theory_check.samplers import DDIM, Heroism, Reference

GMM = targets.make("gmm-iso", 3, 0)
ANISO = targets.make("gmm-aniso", 3, 0)
X = np.zeros((4, 3))
NAN3 = np.array([[0.0, np.nan, 0.0]])
INF3 = np.array([[0.0, np.inf, 0.0]])

# (call, the parameter name the message must contain)
BATTERY = [
    (lambda: targets.IsotropicGaussianMixture([0.5, 0.6], np.zeros((2, 2)), [1, 1]), "weights"),
    (lambda: targets.IsotropicGaussianMixture([1.2, -0.2], np.zeros((2, 2)), [1, 1]), "weights"),
    (lambda: targets.IsotropicGaussianMixture([np.nan, 1.0], np.zeros((2, 2)), [1, 1]), "weights"),
    (lambda: targets.IsotropicGaussianMixture([0.5, 0.5], np.zeros((3, 2)), [1, 1, 1]), "weights"),
    (lambda: targets.IsotropicGaussianMixture([0.5, 0.5], [[0, np.inf], [0, 0]], [1, 1]), "means"),
    (lambda: targets.IsotropicGaussianMixture([0.5, 0.5], np.zeros((2, 2)), [1, np.nan]), "variances"),
    (lambda: targets.IsotropicGaussianMixture([0.5, 0.5], np.zeros((2, 2)), [1, -1]), "variances"),
    (lambda: targets.IsotropicGaussianMixture([0.5, 0.5], np.zeros((2, 2)), [1, 1, 1]), "variances"),
    (lambda: targets.IsotropicGaussianMixture([1.0], np.zeros((1, 0)), [1]), "means"),
    (lambda: targets.GaussianMixture([1.0], np.zeros((1, 2)), [[[1, 0], [0, -1]]]), "positive semi-definite"),
    (lambda: targets.GaussianMixture([1.0], np.zeros((1, 2)), [[[1, 0.5], [0, 1]]]), "symmetric"),
    (lambda: targets.GaussianMixture([1.0], np.zeros((1, 2)), [[[1, np.nan], [np.nan, 1]]]), "covariances"),
    (lambda: targets.GaussianMixture([1.0], np.zeros((1, 2)), np.eye(3)[None]), "covariances"),
    (lambda: targets.GaussianMixture([1.0], [[np.nan, 0]], np.eye(2)[None]), "means"),
    (lambda: targets.SubspaceGaussianMixture([1.0], np.zeros((1, 2)), np.eye(2)[None], np.ones((4, 2))), "basis"),
    (lambda: targets.SubspaceGaussianMixture([1.0], np.zeros((1, 2)), np.eye(2)[None], np.eye(4)[:, :3]), "basis"),
    (lambda: targets.Sphere(2, 3), "k"),
    (lambda: targets.Sphere(3, 2, radius=0), "radius"),
    (lambda: targets.Sphere(3, 2, radius=np.nan), "radius"),
    (lambda: targets.Sphere(0, 1), "dim"),
    (lambda: targets.PointCloud(np.zeros((0, 2))), "points"),
    (lambda: targets.torus(3, r=3.0, R=2.0), "r"),
    (lambda: targets.circle(1), "dim"),
    (lambda: targets.Perturbed("gmm", 0.1), "base"),
    (lambda: targets.Perturbed(GMM, -0.1), "eps"),
    (lambda: targets.make("nope", 3), "name"),
    (lambda: targets.make("gmm-iso", 0), "dim"),
    (lambda: targets.make("gmm-iso", 2.5), "dim"),
    (lambda: GMM.score(X, 0.0), "tau"),
    (lambda: GMM.score(X, 1.0), "tau"),
    (lambda: GMM.score(X, -0.5), "tau"),
    (lambda: GMM.score(X, np.nan), "tau"),
    (lambda: GMM.score(X, [0.5, 0.6]), "tau"),
    (lambda: GMM.score(np.zeros((4, 2)), 0.5), "x"),
    (lambda: GMM.score(np.zeros(3), 0.5), "x"),
    (lambda: GMM.score(np.zeros((0, 3)), 0.5), "x"),
    (lambda: GMM.log_density(NAN3, 0.5), "x"),
    (lambda: GMM.score_jacobian(INF3, 0.5), "x"),
    (lambda: GMM.sample(-1, 0.5, 0), "n"),
    (lambda: GMM.sample(5, 0.5, None), "rng"),
    (lambda: GMM.structured_jacobian(X, 0.5, np.zeros((3, 3, 1))), "Q"),
    (lambda: ANISO.structured_jacobian(X, 0.5, np.zeros((4, 3, 1))), "active_basis"),
    (lambda: schedules.paper(1), "T"),
    (lambda: schedules.paper(100, c0=0), "c0"),
    (lambda: schedules.paper(100, c1=np.inf), "c1"),
    (lambda: schedules.log_snr(0), "steps"),
    (lambda: schedules.log_snr(5, 0.5, 0.2), "tau_min"),
    (lambda: schedules.log_snr(5, 0.0), "tau_min"),
    (lambda: schedules.log_snr(5, 0.1, 1.0), "tau_max"),
    (lambda: schedules.edm(5, rho=-1), "rho"),
    (lambda: DDIM().run(GMM, [0.5, 0.5], X), "taus"),
    (lambda: DDIM().run(GMM, [0.4, 0.5], X), "taus"),
    (lambda: DDIM().run(GMM, [1.0, 0.5], X), "taus"),
    (lambda: DDIM().run(GMM, [0.5], X), "taus"),
    (lambda: DDIM().run(GMM, [0.5, np.nan], X), "taus"),
    (lambda: DDIM().run(GMM, [0.5, 0.4], NAN3), "x"),
    (lambda: DDIM().run(GMM, [0.5, 0.4], np.zeros((2, 5))), "x"),
    (lambda: DDIM().run(GMM, [0.5, 0.4], X, jacobian="diagonal"), "jacobian"),
    (lambda: Heroism(0), "K"),
    (lambda: Heroism(99), "K"),
    (lambda: Heroism(3, -1), "N"),
    (lambda: Heroism(3, "K*K"), "N"),
    (lambda: Heroism(3, nodes="gauss"), "nodes"),
    (lambda: Heroism(3, sweep="sor"), "sweep"),
    (lambda: Reference(rtol=-1), "rtol"),
    (lambda: Reference(atol=np.nan), "atol"),
    (lambda: sample(GMM, DDIM(), [0.5, 0.4], n=0), "n"),
    (lambda: sample(GMM, DDIM(), [0.5, 0.4], n=5, init="uniform"), "init"),
    (lambda: sample(GMM, DDIM(), [0.5, 0.4], n=5, seed=-3), "seed"),
    (lambda: sample(GMM, "ddim", [0.5, 0.4], n=5), "sampler"),
    (lambda: sample("gmm", DDIM(), [0.5, 0.4], n=5), "target"),
    (lambda: metrics.w2(np.zeros((3, 2)), np.zeros((3, 3))), "dimension"),
    (lambda: metrics.w2(np.zeros((3, 2)), np.full((3, 2), np.nan)), "y"),
    (lambda: metrics.w2(np.zeros((3, 2)), np.zeros((3, 2)), method="sinkhorn"), "method"),
    (lambda: metrics.tv_kl(GMM, sample(GMM, DDIM(), [0.9, 0.1], 5, jacobian="none")), "logdet"),
    (lambda: runs.normalise(dict(bogus=1)), "bogus"),
    (lambda: runs.normalise(dict(metrics=["tv", "fid"])), "metrics"),
    (lambda: runs.normalise(dict(schedule="cosine")), "schedule"),
    (lambda: runs.normalise(dict(mode="minimal", eps=2.0)), "eps"),
    (lambda: runs.normalise(dict(sampler="euler_a")), "sampler"),
    (lambda: sweep.run_study("/nonexistent/study.toml", "/tmp/x"), "study file"),
]


@pytest.mark.parametrize("call,name", BATTERY, ids=[f"{i:02d}-{n}" for i, (_, n) in enumerate(BATTERY)])
def test_bad_input_raises_value_error_naming_the_parameter(call, name):
    with pytest.raises(ValueError) as info:
        call()
    assert name in str(info.value), str(info.value)


CLI_BATTERY = [
    ["sample", "--dim", "0"], ["sample", "--dim", "x"], ["sample", "--target", "nope"], ["sample", "--sampler", "euler_a"],
    ["sample", "--K", "0"], ["sample", "--K", "99"], ["sample", "--N", "-2"], ["sample", "--steps", "-1"],
    ["sample", "--metrics", "tv,fid"], ["sample", "--target", "circle", "--dim", "1"], ["sample", "--samples", "0"],
    ["run", "/nonexistent.toml"], ["fit", "/nonexistent-dir"], ["plot", "/nonexistent-dir"], ["bogus"],
    ["reproduce", "--jobs", "0"], ["run", "x.toml", "--executor", "ray"],
]


@pytest.mark.parametrize("args", CLI_BATTERY, ids=["_".join(a) for a in CLI_BATTERY])
def test_cli_bad_input_exit_2_one_line(args):
    r = subprocess.run([sys.executable, "-m", "theory_check.cli", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_battery_size():
    assert len(BATTERY) + len(CLI_BATTERY) >= 40


# -- property-based tests over random valid mixtures -------------------------------------------

@st.composite
def mixtures(draw, max_dim=3):
    d = draw(st.integers(1, max_dim))
    M = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(M)) * 0.9 + 0.1 / M
    means = rng.normal(scale=draw(st.floats(0.0, 4.0)), size=(M, d))
    if draw(st.booleans()):
        return targets.IsotropicGaussianMixture(w / w.sum(), means, rng.uniform(0, 1.5, M) ** 2)
    A = rng.normal(size=(M, d, d)) * rng.uniform(0.05, 1.0, (M, 1, 1))
    return targets.GaussianMixture(w / w.sum(), means, A @ A.transpose(0, 2, 1))


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(mixtures(), st.floats(1e-5, 1 - 1e-5))
def test_scores_and_samples_are_finite(t, tau):
    x = t.sample(64, tau, np.random.default_rng(0))
    far = 50.0 * np.ones((2, t.dim))                 # far from every mode: log-sum-exp territory
    for pts in (x, far, -far):
        lq, s, J = t._eval(pts, tau, True)
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(lq)) and np.all(np.isfinite(s)) and np.all(np.isfinite(J))


@SETTINGS
@given(mixtures(max_dim=1), st.floats(1e-2, 0.99))
def test_log_densities_normalise(t, tau):
    mean, cov = t.mean_cov(tau)
    a = np.sqrt(1 - tau)
    sd_min = np.sqrt(tau)                             # every component has variance >= tau
    L = a * np.abs(t.means).max() + 12 * np.sqrt(cov[0, 0] + a * a * np.abs(t.means).max() ** 2 + 1)
    u = np.arange(-L, L, sd_min / 2)
    assert abs(np.exp(t.log_density(u[:, None], tau)).sum() * sd_min / 2 - 1) < 1e-6


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixtures(max_dim=2))
def test_heroism_error_shrinks_as_steps_grow(t):
    taus_min, x = 0.05, t.sample(16, 0.95, np.random.default_rng(1))
    ref = Reference(1e-11, 1e-13).run(t, schedules.log_snr(1, taus_min, 0.95), x).x
    errs = [np.sqrt(np.mean(np.sum((Heroism(3, 3).run(t, schedules.log_snr(s, taus_min, 0.95), x).x - ref) ** 2, 1)))
            for s in (8, 32)]
    # fourth order: 4x the steps cuts the error ~256x; demand at least 10x unless both are at rounding
    assert errs[1] <= max(errs[0] / 10, 1e-9), errs


# -- faults in sweeps ---------------------------------------------------------------------------

STUDY = """
[study]
name = "f"
[[grid]]
target = "gmm-iso"
dim = 2
n = 200
steps = [16, 24]
K = 2
"""


def test_full_disk_is_a_clear_error_and_nothing_is_half_written(tmp_path, monkeypatch):
    p = tmp_path / "f.toml"
    p.write_text(STUDY)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sweep.os, "fsync", full)
    with pytest.raises(sweep.SweepError, match="No space left"):
        sweep.run_study(p, tmp_path / "out", jobs=1, progress=False)
    rundir = tmp_path / "out" / "runs" / "f"
    assert not list(rundir.iterdir())                 # no row, no temporary file
    monkeypatch.undo()
    df = sweep.run_study(p, tmp_path / "out", jobs=1, progress=False)
    assert len(df) == 2 and (df.status == "ok").all()


def test_unwritable_output_folder_is_a_clear_error(tmp_path):
    p = tmp_path / "f.toml"
    p.write_text(STUDY)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(sweep.SweepError, match="out: cannot write"):
        sweep.run_study(p, blocker / "out", jobs=1, progress=False)


def test_numerical_failure_is_recorded_and_the_sweep_goes_on(tmp_path):
    p = tmp_path / "f.toml"
    p.write_text(STUDY.replace("steps = [16, 24]", "steps = [1, 16]"))
    df = sweep.run_study(p, tmp_path / "out", jobs=1, progress=False)
    bad = df[df.status != "ok"]
    assert len(bad) == 1 and "step 0" in bad.error.iloc[0] and "tau" in bad.error.iloc[0]
    assert (df[df.status == "ok"].steps == 16).all()
