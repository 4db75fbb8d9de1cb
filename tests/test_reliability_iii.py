"""Reliability III: the hostile cases of the third round (issue 25), by group. Each reproduction of
the issue is a test here, written so that it failed before its fix."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import mpmath as mp
import numpy as np
import pytest

from theory_check import cli, metrics, runs, sample, schedules, sweep, targets
from theory_check.targets import products
from theory_check import samplers as S


def _cli(capsys, *args):
    code = cli.main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _one_line(code, err, expect=2, match=None):
    assert code == expect, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    if match:
        assert match in err[0], err


# -- 1. product log densities outside the studied range, against mpmath -------------------------------

def _rademacher_mp(x, tau, c):
    tau, x = mp.mpf(tau), mp.mpf(x)
    b = mp.sqrt(1 - tau) * c
    return mp.log((mp.npdf(x, b, mp.sqrt(tau)) + mp.npdf(x, -b, mp.sqrt(tau))) / 2)


@pytest.mark.parametrize("c,tau", [(1e4, 1e-3), (1e6, 1e-3), (1.0, 1e-12), (30.0, 1e-12)])
def test_rademacher_log_density_at_extreme_scales(c, tau):
    # Was |error| 6.5e-6, 1.6e-3 and 0.08 at scale 1e4 ... 1e6 (x^2/(2 tau) - b|x|/tau cancelled).
    # What remains is the conditioning of the input: x and b = a c carry c eps of rounding, and
    # d log q / dx ~ sqrt(tau)/tau, so |error| <= 10 c eps / sqrt(tau) (+ 1e-13 for the sums).
    mp.mp.dps = 60
    rng = np.random.default_rng(0)
    x = np.sqrt(1 - tau) * c * np.sign(rng.standard_normal(6)) + np.sqrt(tau) * rng.standard_normal(6)
    lq = products.Rademacher(c).eval(x, tau)[0]
    bound = 10 * c * np.finfo(float).eps / np.sqrt(tau) + 1e-13 * np.abs(lq).max()
    err = max(abs(float(lq[i] - _rademacher_mp(x[i], tau, c))) for i in range(len(x)))
    assert err <= bound, (err, bound)


def _uniform_mp(x, tau, c):
    """(log q1, s1, s1') from the truncated-normal moments at 80 digits (no cancellation left)."""
    mp.mp.dps = 80
    tau, x = mp.mpf(tau), mp.mpf(x)
    b, rt = mp.sqrt(1 - tau) * mp.mpf(c), mp.sqrt(tau)
    al, be = (-b - x) / rt, (b - x) / rt
    Z = mp.ncdf(be) - mp.ncdf(al)
    pa, pb = mp.npdf(al), mp.npdf(be)
    E = (pa - pb) / Z
    V = 1 + (al * pa - be * pb) / Z - E ** 2
    return mp.log(Z / (2 * b)), E / rt, (V - 1) / tau


@pytest.mark.parametrize("c", [1e-8, 1e-6, 1e-3, 0.03])
@pytest.mark.parametrize("tau", [1e-6, 1e-3, 0.5, 0.999])
def test_uniform_near_a_point_mass_against_mpmath(c, tau):
    # Was s' wrong by 1% ... 450% (and 195x at worst) for scale 1e-6 ... 1e-8. Relative 1e-10 at the
    # natural scales 1, 1/sqrt(tau), 1/tau (s and s' pass through 0), as for scale >= 0.25.
    rt = np.sqrt(tau)
    for x in [0.0, 0.3 * rt, 2 * rt, 5 * rt, -8 * rt, 39 * rt]:
        got = [float(v[0]) for v in products.Uniform(c).eval(np.array([x]), tau)]
        ref = [float(v) for v in _uniform_mp(x, tau, c)]
        for g, e, scale in zip(got, ref, [1.0, 1 / rt, 1 / tau]):
            assert abs(g - e) <= 1e-10 * max(abs(e), 1e-6 * scale), (x, g, e)


def test_a_near_point_mass_uniform_cube_runs_like_a_gaussian():
    # scale 1e-7 gave TV 0.265 +- 0.006 where scale 1e-3 gives 0.006. Both laws are within 1e-6 of
    # the point mass at 0 in W2, whose flow DDIM integrates with an error of the order of scale 1e-3's.
    tv = {}
    for scale in (1e-7, 1e-3):
        spec = runs.normalise(dict(target="uniform-cube", dim=4, target_args={"scale": scale}, sampler="ddim",
                                   steps=16, n=4000))
        row = runs.evaluate(spec)
        tv[scale] = (row["tv"], row["tv_se"])
    assert abs(tv[1e-7][0] - tv[1e-3][0]) <= 4 * np.hypot(tv[1e-7][1], tv[1e-3][1]) + 1e-3, tv


def test_kl_standard_error_covers_the_rounding_of_log_w():
    # product-gmm at width 1e10 is a Gaussian to 1e-20, sampled exactly to rounding: KL was
    # -8.8e-15 +- 1.9e-16 (46 se below a quantity that cannot be negative). The se now carries the
    # rounding floor of log w beside the Monte-Carlo error.
    spec = runs.normalise(dict(target="product-gmm", dim=4, target_args={"width": 1e10}, sampler="ddim", steps=16,
                               n=2000))
    row = runs.evaluate(spec)
    assert row["status"] == "ok"
    assert abs(row["kl"]) <= 3 * row["kl_se"] and row["tv"] <= 3 * row["tv_se"] + 1e-12, row


# -- 2. the run cache and a user's sampler's dependencies ------------------------------------------------

EULER = """
def euler(model, x, sigmas):
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - model(x, s)) / s
        x = x + d * (s_next - s) * C
    return x
"""


@pytest.mark.parametrize("layout", ["module importing a helper", "package re-exporting a module"])
def test_an_edited_dependency_of_a_user_sampler_changes_its_key(tmp_path, monkeypatch, layout):
    # The key hashed only the named module's file: editing helper.py (or upkg/impl.py behind
    # upkg/__init__.py) reused the old rows (TV 0.228, 0.111 vs 0.413, 0.379 fresh).
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    if layout.startswith("module"):
        (tmp_path / "helper.py").write_text("C = 1.0\n")
        (tmp_path / "umod.py").write_text("from helper import C\n" + EULER)
        name, dep = "umod:euler", tmp_path / "helper.py"
    else:
        (tmp_path / "upkg").mkdir()
        (tmp_path / "upkg" / "__init__.py").write_text("from .impl import euler\n")
        (tmp_path / "upkg" / "impl.py").write_text("C = 1.0\n" + EULER)
        name, dep = "upkg:euler", tmp_path / "upkg" / "impl.py"
    spec = dict(sampler=name)
    before = sweep.user_source_hash(spec)
    unchanged = sweep.user_source_hash(spec)
    dep.write_text(dep.read_text().replace("C = 1.0", "C = 0.5"))
    after = sweep.user_source_hash(spec)
    assert before == unchanged and before != after


def test_a_user_sampler_without_sources_is_not_cached():
    # A module with no file (built in) cannot be hashed: refused rather than cached blindly.
    with pytest.raises(ValueError, match="cannot be read"):
        sweep.user_source_hash(dict(sampler="sys:exit"))


# -- 3. signals: an interrupted run is never a cached failed row -----------------------------------------

class _Interrupted(S.DDIM):
    """What a SIGINT arriving inside a Numba kernel looks like to Python."""

    def integrate(self, target, taus, x, Dx, tan, out):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise SystemError("CPUDispatcher(<function lincomb>) returned a result with an exception set") from exc
        yield


def test_a_signal_inside_a_kernel_interrupts_instead_of_failing(monkeypatch):
    spec = runs.normalise(dict(sampler="ddim", steps=4, n=50))
    monkeypatch.setattr(runs, "make_sampler", lambda spec: _Interrupted())
    with pytest.raises(KeyboardInterrupt):
        runs.evaluate(spec)


def test_sample_under_timeout_exits_with_the_signal(tmp_path):
    # `timeout 5 theory-check sample ...` printed a failed row ("SystemError: CPUDispatcher ...")
    # and exit 1; SIGTERM now ends it with 143 and one line.
    proc = subprocess.Popen([sys.executable, "-m", "theory_check.cli", "sample", "--target", "gmm-aniso", "--dim", "8",
                             "--steps", "4000", "--samples", "50000", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(6)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().splitlines() == ["theory-check sample: terminated; rerun to resume"], \
        (proc.returncode, out[-300:], err[-600:])


# -- 4. provenance: what runs is what the row says ---------------------------------------------------------

@pytest.mark.parametrize("spec,match", [
    (dict(sampler="heroism", K=3, sampler_args={"K": 5}), "sampler_args: K is a run parameter"),
    (dict(sampler="heroism", sampler_args={"nodes": "chebyshev"}), "sampler_args: nodes is a run parameter"),
    (dict(sampler="ddpm", metrics=["w2"], sampler_args={"seed": 3}), "sampler_args: seed is a run parameter"),
    (dict(sampler="unipc", sampler_args={"lower_order_final": "false"}), "lower_order_final must be true or false"),
    (dict(sampler="unipc", sampler_args={"corrector": "no"}), "corrector must be true or false"),
    (dict(target="rademacher-cube", target_args={"dim": 5}), "target_args: dim is not a shape parameter"),
    (dict(target="rademacher-cube", target_args={"seed": 3}), "target_args: seed is not a shape parameter"),
    (dict(target="rademacher-cube", target_args={"scale": True}), "scale must be a real number"),
    (dict(target="gmm-iso", dim=8, jacobian="diagonal"), "jacobian: 'diagonal' needs a product target"),
    (dict(target="gmm-aniso", jacobian="structured"), "jacobian: 'structured' needs a target with an active basis"),
    (dict(mode="minimal", eps=0.1, n=1), "n must be >= 2"),
    (dict(metrics=["tv", "kl"], jacobian="none"), "metrics: tv and kl need the map's log-determinant"),
    (dict(sampler="ddpm", metrics=["tv"]), "use metrics w2 or coupling"),
])
def test_conflicts_and_wrong_types_are_refused_before_the_run(spec, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace("'", "'")):
        runs.normalise(spec)


def test_a_silently_dropped_metric_is_exit_2(capsys):
    # `sample --metrics tv,kl --jacobian none` printed a row with status ok and no TV, exit 0.
    _one_line(*_cli(capsys, "sample", "--metrics", "tv,kl", "--jacobian", "none", "--samples", "50"),
              match="jacobian = 'none' does not compute")
    _one_line(*_cli(capsys, "sample", "--sampler", "unipc", "--sampler-arg", "corrector=no", "--samples", "50"),
              match="corrector must be true or false")
    _one_line(*_cli(capsys, "sample", "--target", "uniform-cube", "--target-arg", "dim=5", "--samples", "50"),
              match="--dim")


@pytest.mark.parametrize("a,b", [
    (dict(target="product-gmm", target_args={"scale": 1}), dict(target="product-gmm", target_args={"scale": 1.0})),
    (dict(target="product-gmm", target_args={}), dict(target="product-gmm", target_args={"scale": 1.0, "width": 1})),
    (dict(sampler="unipc", sampler_args={"order": 2}), dict(sampler="unipc", sampler_args={"order": 2.0})),
])
def test_one_run_one_key(a, b):
    assert sweep.run_key(runs.normalise(a), "src") == sweep.run_key(runs.normalise(b), "src")


# -- 5. memory: every path estimated, and refused before anything is allocated -------------------------

@pytest.mark.parametrize("spec", [
    dict(target="uniform-cube", dim=96, score_eps=0.01, n=200, steps=2, sampler="ddim"),      # perturbed, full
    dict(target="gmm-iso", dim=512, score_eps=0.1, n=100, steps=2, sampler="ddim", metrics=["w2"]),
    dict(target="gmm-aniso", dim=64, n=1500, steps=2, sampler="ddim"),                        # exact draws, full
    dict(target="subspace-gmm", dim=400, n=1000, steps=2, sampler="dpm3m"),                   # structured
    dict(target="uniform-cube", dim=1000, n=1000, steps=2, sampler="heroism", K=2),           # diagonal
], ids=["perturbed-full", "perturbed-none", "gmm-aniso-full", "structured", "diagonal"])
def test_the_memory_estimate_bounds_the_measured_peak(spec):
    # tracemalloc counts NumPy's allocations: the estimate must be at least the peak of the run
    # (it was 6x and 13x too small on the first three: gmm-aniso's exact draws gathered n r^2 floats).
    s = runs.normalise(spec)
    runs.evaluate(dict(s, n=20))            # compile first: Numba's own memory is not the run's
    tracemalloc.start()
    try:
        runs.evaluate(s)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert runs.memory_estimate(s) >= peak, (runs.memory_estimate(s) / 2 ** 20, peak / 2 ** 20)


@pytest.mark.parametrize("spec", [
    dict(target="subspace-gmm", dim=50000, jacobian="structured"),
    dict(target="gmm-iso", dim=30000, score_eps=0.1),
    dict(target="uniform-cube", dim=20000, score_eps=0.1),
    dict(target="uniform-cube", dim=200000, n=20000),
])
def test_hopeless_runs_are_refused_before_allocation(spec, monkeypatch):
    monkeypatch.setattr(runs, "available_memory", lambda: 24 * 2 ** 30)    # this machine's size, whatever is free
    with pytest.raises(ValueError, match="GiB"):
        runs.normalise(spec)


def test_a_huge_nfe_budget_is_refused_before_the_run():
    # nfe_budget = 1e9 became a MemoryError row at run time (a schedule of 1e9 steps)
    with pytest.raises(ValueError, match="nfe_budget"):
        runs.normalise(dict(sampler="ddim", nfe_budget=10 ** 9))


# -- 6. Dask workers and the rows folder -------------------------------------------------------------------

def test_a_worker_reports_its_code_hash():
    src, where, row = sweep.evaluate_on_worker(runs.normalise(dict(sampler="ddim", steps=2, n=20)))
    assert src == sweep.source_hash() and row["status"] == "ok" and where


def test_a_worker_with_other_code_is_refused(tmp_path, monkeypatch, capsys):
    # A worker whose theory_check differs computed rows stamped with the client's hash.
    distributed = pytest.importorskip("distributed", reason="the [dask] extra is not installed")
    study = tmp_path / "s.toml"
    study.write_text("[study]\nname = 's'\n[defaults]\nsampler = 'ddim'\nn = 20\n[[grid]]\nsteps = [2, 3]\n")
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    try:
        real = sweep.source_hash
        monkeypatch.setattr(sweep, "evaluate_on_worker", lambda spec: ("0" * 16, "tcp://worker:1", runs.evaluate(spec)))
        with pytest.raises(sweep.SweepError, match="worker tcp://worker:1 runs other theory_check code"):
            sweep.run_study(study, tmp_path / "o", executor="dask", scheduler=cluster.scheduler_address, progress=False)
        assert real() == sweep.source_hash()
        assert not list((tmp_path / "o" / "runs" / "s").glob("*.json"))
    finally:
        cluster.close()


SMALL = "[study]\nname = 'small'\n[defaults]\nsampler = 'ddim'\nn = 20\n[[grid]]\nsteps = [2, 3, 4, 5]\n"


@pytest.fixture
def small(tmp_path):
    p = tmp_path / "small.toml"
    p.write_text(SMALL)
    return p


def test_a_rows_folder_swapped_for_a_link_is_never_written_through(tmp_path, small, monkeypatch):
    # runs/<study> replaced by a link to an outside folder mid-sweep: 5 rows were written outside.
    outside = tmp_path / "outside"
    outside.mkdir()
    rundir = tmp_path / "o" / "runs" / "small"
    real = runs.evaluate
    calls = []

    def evaluate(spec):
        calls.append(1)
        if len(calls) == 2:             # after the first row: swap the folder for a link
            rundir.rename(tmp_path / "moved")
            rundir.symlink_to(outside)
        return real(spec)
    monkeypatch.setattr(runs, "evaluate", evaluate)
    with pytest.raises(sweep.SweepError, match="was replaced or moved"):
        sweep.run_study(small, tmp_path / "o", jobs=1, progress=False)
    assert not list(outside.iterdir())


def test_a_row_file_deleted_mid_sweep_is_recomputed(tmp_path, small, monkeypatch):
    rundir = tmp_path / "o" / "runs" / "small"
    real = runs.evaluate
    calls = []

    def evaluate(spec):
        calls.append(1)
        if len(calls) == 3:
            next(rundir.glob("*.json")).unlink()
        return real(spec)
    monkeypatch.setattr(runs, "evaluate", evaluate)
    df = sweep.run_study(small, tmp_path / "o", jobs=1, progress=False)
    assert len(df) == 4 and (df.status == "ok").all() and len(calls) == 5


@pytest.mark.parametrize("tamper", ["no status", "fifo", "huge sparse file"])
def test_tampered_row_files_are_recomputed_without_hanging(tmp_path, small, tamper):
    df = sweep.run_study(small, tmp_path / "o", jobs=1, progress=False)
    victim = sorted((tmp_path / "o" / "runs" / "small").glob("*.json"))[0]
    if tamper == "no status":
        doc = json.loads(victim.read_text())
        row = {k: v for k, v in doc["row"].items() if k != "status"}
        victim.write_text(json.dumps({"row": row, "sha256": sweep._digest(row)}, default=str))
    elif tamper == "fifo":
        victim.unlink()
        os.mkfifo(victim)
    else:
        with open(victim, "r+b") as f:
            f.truncate(6 * 2 ** 30)
    t0 = time.time()            # none of these is a row: each is recomputed, and the rename replaces it
    df2 = sweep.run_study(small, tmp_path / "o", jobs=1, progress=False)
    assert time.time() - t0 < 60 and (df2.status == "ok").all() and len(df2) == len(df)


def test_removing_the_lock_does_not_let_a_second_sweep_in(tmp_path, small):
    out = tmp_path / "o"
    out.mkdir()
    with sweep.locked(out):
        (out / ".lock").unlink()
        with pytest.raises(sweep.SweepError, match="another sweep is running"):
            sweep.run_study(small, out, jobs=1, progress=False)


# -- 7. user code that raises, exits, or is incomplete ---------------------------------------------------

USER = """
import sys
import numpy as np
from theory_check import samplers

def raises(model, x, sigmas):
    raise RuntimeError("boom")

def exits(model, x, sigmas):
    sys.exit(7)

class NoNfe(samplers.Sampler):
    def integrate(self, target, taus, x, Dx, tan, out):
        yield taus[0], taus[-1], x, Dx

class Nothing(samplers.DDIM):
    def integrate(self, target, taus, x, Dx, tan, out):
        return
        yield
"""


@pytest.fixture
def user(tmp_path, monkeypatch):
    (tmp_path / "usamp.py").write_text(USER)
    (tmp_path / "uexit.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_raising_or_exiting_user_sampler_is_a_failed_row(user, jobs):
    # --jobs 2 was a traceback and exit 1 (ordering the runs called the function); sys.exit(7) ended
    # the sweep with exit 7 and no rows.
    (user / "s.toml").write_text(textwrap.dedent("""
        [study]
        name = "s"
        [defaults]
        n = 20
        steps = 2
        metrics = ["coupling"]
        [[grid]]
        sampler = ["usamp:raises", "usamp:exits"]
        """))
    df = sweep.run_study(user / "s.toml", user / "o", jobs=jobs, progress=False)
    err = dict(zip(df.sampler, df.error))
    assert (df.status == "failed").all(), err
    assert "RuntimeError: boom" in err["usamp:raises"] and "sys.exit(7)" in err["usamp:exits"]


def test_system_exit_at_import_is_a_value_error(user):
    with pytest.raises(ValueError, match=r"cannot import module 'uexit' \(sys.exit\(3\)\)"):
        S.make("uexit:anything")


def test_incomplete_user_samplers_say_what_is_missing(user):
    with pytest.raises(ValueError, match="must implement nfe"):
        runs.normalise(dict(sampler="usamp:NoNfe"))
    t = targets.make("gmm-iso", 2, 0)
    with pytest.raises(TypeError, match="yielded no step"):
        S.make("usamp:Nothing").run(t, schedules.log_snr(3), np.zeros((4, 2)))


def test_a_file_in_the_working_directory_does_not_shadow_a_package(tmp_path, small):
    # A tqdm.py in the working directory was imported by every sweep (the CLI put the working
    # directory first on the import path); the console script now finds installed packages first.
    import shutil
    (tmp_path / "tqdm.py").write_text("raise ImportError('the shadowing tqdm.py was imported')\n")
    exe = shutil.which("theory-check")
    assert exe, "the console script is installed with the package"
    done = subprocess.run([exe, "run", str(small), "--out", str(tmp_path / "o"), "--no-progress"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "shadowing" not in done.stderr, done.stderr[-800:]


# -- 8. from_function and from_functions check what the user's code hands back --------------------------

def _run_fn(fn, jacobian="none"):
    t = targets.make("gmm-iso", 3, 0)
    x = t.sample(8, 0.999, np.random.default_rng(0))
    return S.from_function(fn).run(t, schedules.log_snr(4), x, jacobian=jacobian)


@pytest.mark.parametrize("body,match", [
    ("model(x, True)", "sigma must be a number"),
    ("model(x.T, sigmas[0])", "x must be the batch's real array"),
    ("model(x[:, :2], sigmas[0])", "x must be the batch's real array"),
    ("model(x.astype(complex), sigmas[0])", "x must be the batch's real array"),
])
def test_bad_model_calls_are_value_errors(body, match):
    # each returned finite numbers 25-120 away from Euler's
    def fn(model, x, sigmas):
        eval(body)
        return x
    with pytest.raises(ValueError, match=match):
        _run_fn(fn)


def test_a_complex_result_is_refused():
    with pytest.raises(ValueError, match="complex"):
        _run_fn(lambda model, x, sigmas: x + 0j)


@pytest.mark.parametrize("op", ["x.T", "x.mean()", "x.reshape(-1)"])
def test_attribute_access_on_a_state_is_a_differentiation_error(op):
    def fn(model, x, sigmas):
        eval(op)
        return x
    with pytest.raises(S.DifferentiationError, match="cannot differentiate the state's"):
        _run_fn(fn, jacobian="full")


def test_a_sampler_arg_the_function_does_not_take_is_refused_before_any_run():
    def euler(model, x, sigmas, churn=0.0):
        return x
    S.from_function(euler, churn=0.5)
    with pytest.raises(ValueError, match="does not take"):
        S.from_function(euler, order=2)


def _target(**over):
    d = 2
    fns = dict(score=lambda x, tau: -x, score_jacobian=lambda x, tau: -np.broadcast_to(np.eye(d), (len(x), d, d)),
               log_density=lambda x, tau: -0.5 * np.sum(x * x, 1) - np.log(2 * np.pi),
               sample=lambda n, tau, rng: rng.standard_normal((n, d)))
    fns.update(over)
    return targets.from_functions(d, **fns)


@pytest.mark.parametrize("over,match", [
    (dict(log_density=lambda x, tau: np.zeros((len(x), 1))), r"log_density: .* shape \(8, 1\), expected \(8,\)"),
    (dict(log_density=lambda x, tau: np.full(len(x), np.inf)), r"log_density: .*\+inf"),
    (dict(sample=lambda n, tau, rng: rng.standard_normal((n - 1, 2))), r"sample: .* shape \(7, 2\), expected \(8, 2\)"),
    (dict(sample=lambda n, tau, rng: rng.standard_normal((n, 1))), r"sample: .* shape \(8, 1\)"),
    (dict(score=lambda x, tau: -x + 0j), r"score: .* complex"),
])
def test_from_functions_checks_every_callable(over, match):
    t = _target(**over)
    with pytest.raises(ValueError, match=match):
        r = sample(t, S.DDIM(), schedules.log_snr(3), n=8, seed=0, jacobian="full")
        metrics.tv_kl(t, r)


@pytest.mark.parametrize("bad", [lambda x, tau: -x, object()])
def test_a_score_callable_as_target_says_how_to_wrap_it(bad):
    with pytest.raises(ValueError, match="targets.from_functions"):
        S.DDIM().run(bad, schedules.log_snr(3), np.zeros((2, 2)))


# -- 9. the user's own studies: SUMMARY, duplicate names, figures with K = "log" --------------------------

def test_reproduce_of_a_users_studies_speaks_only_of_them(tmp_path, small):
    from theory_check import report
    studies = tmp_path / "mine"
    studies.mkdir()
    (studies / "small.toml").write_text(SMALL)
    sweep.run_study(studies / "small.toml", tmp_path / "o", jobs=1, progress=False)
    report.summary(tmp_path / "o", False, 0.0, studies)
    text = (tmp_path / "o" / "SUMMARY.md").read_text()
    assert "not run" not in text and "order" not in text.split("##")[0]
    (studies / "copy.toml").write_text(SMALL)
    with pytest.raises(ValueError, match="both name their study 'small'"):
        report.reproduce(tmp_path / "o2", studies_dir=studies, progress=False)
    assert not (tmp_path / "o2").exists()


def test_plot_of_a_dimension_study_with_k_log(tmp_path, capsys):
    # exited 2 with "invalid literal for int() with base 10: 'log'" (fit on the same folder worked)
    (tmp_path / "dimension.toml").write_text(textwrap.dedent("""
        [study]
        name = "dimension"
        [defaults]
        target = "gmm-iso"
        mode = "minimal"
        eps = 0.3
        n = 200
        max_steps = 32
        [[grid]]
        K = ["log", 2]
        dim = [2, 3]
        """))
    sweep.run_study(tmp_path / "dimension.toml", tmp_path / "o", jobs=1, progress=False)
    code = cli.main(["plot", str(tmp_path / "o")])
    out = capsys.readouterr()
    assert code == 0 and "dimension.png" in out.out, out.err


def test_the_paper_schedule_names_steps():
    with pytest.raises(ValueError, match="steps"):
        runs.normalise(dict(schedule="paper", steps=2_000_000))


# -- 10. faults of a run in progress: signals with --jobs 1, a Dask scheduler that dies ----------------------

FAST = ("[study]\nname = 'fast'\n[defaults]\ntarget = 'gmm-aniso'\ndim = 4\nn = 1000\n"
        "[[grid]]\nK = [3]\nsteps = [30, 31, 32, 33, 34, 35]\n")


def _rows(rundir):
    return [sweep.read_row(p) for p in sorted(rundir.glob("*.json"))]


def test_ctrl_c_with_one_job_caches_no_failed_row_and_resumes_exactly(tmp_path):
    # SIGINT with --jobs 1 turned the interrupted run into a cached failed row ("SystemError:
    # CPUDispatcher(...) returned a result with an exception set") and the sweep exited 0.
    study = tmp_path / "fast.toml"
    study.write_text(FAST)
    rundir = tmp_path / "o" / "runs" / "fast"
    proc = subprocess.Popen([sys.executable, "-m", "theory_check.cli", "run", str(study), "--out", str(tmp_path / "o"),
                             "--jobs", "1", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(rundir.glob("*.json"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines() == ["theory-check run: interrupted; rerun to resume"], err
    kept = _rows(rundir)
    assert 0 < len(kept) < 6 and all(r["status"] == "ok" for r in kept)
    resumed = sweep.run_study(study, tmp_path / "o", jobs=1, progress=False)
    fresh = sweep.run_study(study, tmp_path / "ref", jobs=1, progress=False)
    cols = ["run_key", "tv", "tv_se", "kl", "kl_se", "nfe"]
    assert (resumed.status == "ok").all()
    assert resumed.sort_values("run_key")[cols].reset_index(drop=True).equals(
        fresh.sort_values("run_key")[cols].reset_index(drop=True))


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _dask_cluster(cwd, **scheduler_env):
    """A scheduler and one worker (with a nanny) as processes on loopback: (address, scheduler process)."""
    pytest.importorskip("distributed", reason="the [dask] extra is not installed")
    address = f"tcp://127.0.0.1:{_free_port()}"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                              address.rsplit(":", 1)[1], "--no-dashboard"], **quiet, env=dict(os.environ, **scheduler_env))
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--no-dashboard"], **quiet)
    try:
        yield address, sched
    finally:
        for p in (sched, worker):
            p.kill()
            p.wait()


def _run_dask(study, out, address):
    return [sys.executable, "-m", "theory_check.cli", "run", str(study), "--out", str(out), "--executor", "dask",
            "--scheduler", address, "--no-progress"]


def test_a_dask_scheduler_killed_mid_run_is_one_line(tmp_path):
    # was 53 lines of distributed's log ending "Client lost the connection", rc 1
    study = tmp_path / "fast.toml"
    study.write_text(FAST.replace("n = 1000", "n = 20000"))
    with _dask_cluster(tmp_path) as (address, sched):
        run = subprocess.Popen(_run_dask(study, tmp_path / "o", address), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        rundir = tmp_path / "o" / "runs" / "fast"
        deadline = time.time() + 120
        while time.time() < deadline and not list(rundir.glob("*.json")) and run.poll() is None:
            time.sleep(0.05)
        sched.kill()
        out, err = run.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, err[-2000:]
    assert "the Dask cluster failed" in lines[0] and "rerun to resume" in lines[0], lines
    assert all(r["status"] == "ok" for r in _rows(rundir))


def test_a_worker_killed_repeatedly_is_one_line(tmp_path):
    # a run that kills its worker every time ended in a KilledWorker traceback
    (tmp_path / "udie.py").write_text("import os\n\ndef dies(model, x, sigmas):\n    os._exit(1)\n")
    study = tmp_path / "k.toml"
    study.write_text("[study]\nname = 'k'\n[defaults]\nsampler = 'udie:dies'\nn = 20\nmetrics = ['coupling']\n"
                     "[[grid]]\nsteps = [2]\n")
    # the scheduler gives up on a task after allowed-failures + 1 worker deaths (default 3; here 0, so
    # one death, to keep the test short: the nanny restarts the worker each time)
    with _dask_cluster(tmp_path, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0") as (address, _):
        done = subprocess.run(_run_dask(study, tmp_path / "o", address), capture_output=True, text=True,
                              timeout=180, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert "KilledWorker" in lines[0] and "rerun to resume" in lines[0], lines


# -- 11. messages instead of tracebacks (issue 22's list, the parts on this code path) -------------------

def test_a_word_for_k_is_one_line(tmp_path, capsys):
    # K = "three" in a study was "TypeError ... parse_N"
    study = tmp_path / "k.toml"
    study.write_text("[study]\nname = 'k'\n[[grid]]\nK = ['three']\n")
    _one_line(*_cli(capsys, "run", str(study), "--out", str(tmp_path / "o")), match="K must be a positive integer or 'log'")


def test_dask_without_the_extra_is_one_line(tmp_path, small, capsys, monkeypatch):
    # was "ModuleNotFoundError: No module named 'distributed'"
    monkeypatch.setitem(sys.modules, "distributed", None)          # what a missing package looks like to import
    _one_line(*_cli(capsys, "run", str(small), "--out", str(tmp_path / "o"), "--executor", "dask",
                    "--scheduler", "tcp://127.0.0.1:9"), match="pip install 'theory-check[dask]'")


def test_the_bare_command_lists_the_commands(capsys):
    code = cli.main([])
    out = capsys.readouterr().out
    assert code == 2 and all(c in out for c in ("reproduce", "run", "sample", "fit", "plot", "check"))


def test_help_states_each_default_once(capsys):
    for cmd in ("sample", "run", "reproduce"):
        with pytest.raises(SystemExit):
            cli.main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and text.count("(default 3)") <= 1
        assert "(default 3) (default" not in text


def test_target_names_take_underscores_and_the_edm_grid_is_karras():
    assert targets.make("Swiss_Roll", 3, 1).means.shape == targets.make("swiss-roll", 3, 1).means.shape
    spec = runs.normalise(dict(target="product_gmm", schedule="karras"))
    assert spec["target"] == "product-gmm" and spec["schedule"] == "edm"
    np.testing.assert_array_equal(schedules.karras(8), schedules.edm(8))


def test_sigma_and_tau_convert_by_their_definitions():
    tau = np.array([1e-6, 0.1, 0.5, 0.999])
    sigma = schedules.tau_to_sigma(tau)
    np.testing.assert_allclose(sigma ** 2, tau / (1 - tau), rtol=1e-14)
    np.testing.assert_allclose(schedules.sigma_to_tau(sigma), tau, rtol=1e-12)
    for bad in (0.0, 1.0, np.nan):
        with pytest.raises(ValueError, match="tau"):
            schedules.tau_to_sigma(bad)
    with pytest.raises(ValueError, match="sigma"):
        schedules.sigma_to_tau(-1.0)
