"""Reliability II: the hostile-user cases of the second round, by group. Each either gives a clean
result, a failed row, or exit status 2 with one line; none a traceback, hang, crash or a write
outside --out."""

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from theory_check import cli, kernels, runs, sample, schedules, sweep, targets
from theory_check import samplers as S

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _cli(capsys, *args):
    code = cli.main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _one_line(code, err, expect=2):
    assert code == expect, err
    assert len(err) == 1 and "Traceback" not in err[0], err


# -- 1. blow-ups inside a step: clean values, NumericalError, a failed row ----------------------------

@pytest.mark.parametrize("args", [
    ["sample", "--target", "circle", "--dim", "2", "--K", "2", "--N", "100", "--steps", "1", "--samples", "50"],
    ["sample", "--score-eps", "1e300", "--steps", "4", "--samples", "50"],
    ["sample", "--target", "gmm-iso", "--dim", "2", "--sampler", "rk4", "--steps", "1", "--samples", "50",
     "--score-eps", "1e200"],
])
def test_blow_ups_are_failed_rows(capsys, args):
    code = cli.main(args + ["--format", "json"])
    out = capsys.readouterr()
    row = json.loads(out.out)
    assert code == 1 and row["status"] == "failed" and "step" in row["error"] and "Traceback" not in out.err


@pytest.mark.parametrize("kernel", ["iso", "full"])
def test_kernels_return_nan_not_exceptions_when_every_weight_underflows(kernel):
    x = np.array([[1e160, 0.0]])                     # squared distances overflow: every log-weight is -inf
    if kernel == "iso":
        logq, s, J = kernels.iso_score(x, np.zeros((2, 2)), np.ones(2), np.zeros(2), True)
    else:
        V = np.broadcast_to(np.eye(2), (2, 2, 2)).copy()
        logq, s, J = kernels.full_score(x, np.zeros((2, 2)), V, np.ones((2, 2)), np.zeros(2), V, True)
    assert np.isnan(s).all() and not np.isfinite(logq).any()     # NaN propagates to the samplers' checks


@pytest.mark.parametrize("call", [
    lambda: kernels.iso_score_into(np.zeros((4, 3)), np.zeros((2, 2)), np.ones(2), np.zeros(2), np.empty(4),
                                   np.empty((4, 3)), np.empty((0, 3, 3))),
    lambda: kernels.iso_score_into(np.zeros((4, 3)), np.zeros((2, 3)), np.ones(2), np.zeros(2), np.empty(3),
                                   np.empty((4, 3)), np.empty((0, 3, 3))),
    lambda: kernels.iso_score_into(np.zeros((4, 3)), np.zeros((2, 3)), np.ones(2), np.zeros(2), np.empty(4),
                                   np.empty((4, 3)), np.empty((4, 2, 3))),
    lambda: kernels.full_score_into(np.zeros((4, 3)), np.zeros((2, 3)), np.zeros((2, 2, 2)), np.ones((2, 3)),
                                    np.zeros(2), np.zeros((2, 3, 3)), np.empty(4), np.empty((4, 3)), np.empty((0, 3, 3))),
    lambda: kernels.lincomb(np.ones((1, 2)), (np.zeros((4, 3)), np.zeros((5, 3))), np.empty((1, 4, 3))),
    lambda: kernels.lincomb(np.ones((2, 2)), (np.zeros((4, 3)), np.zeros((4, 3))), np.empty((1, 4, 3))),
])
def test_kernels_check_shapes_instead_of_reading_out_of_bounds(call):
    with pytest.raises(ValueError, match="shape"):
        call()


def test_any_failure_of_a_run_is_its_row_and_the_sweep_goes_on(tmp_path, monkeypatch):
    (tmp_path / "boom_mod.py").write_text(textwrap.dedent("""
        def boom(model, x, sigmas):
            if len(sigmas) > 9:
                raise RuntimeError("boom at %d steps" % (len(sigmas) - 1))
            return x + (x - model(x, sigmas[0])) / sigmas[0] * (sigmas[-1] - sigmas[0])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    p = tmp_path / "s.toml"
    p.write_text('[study]\nname = "b"\n[defaults]\nsampler = "boom_mod:boom"\nn = 50\nsteps = [4, 12]\n[[grid]]\n')
    df = sweep.run_study(p, tmp_path / "out", jobs=1, progress=False)
    assert list(df.status) == ["ok", "failed"] and "RuntimeError: boom at 12 steps" in df.error.iloc[1]


# -- 2. targets: finite results or a ValueError --------------------------------------------------------

TARGETS = {name: targets.make(name, 3, 0) for name in ("gmm-iso", "gmm-aniso", "sphere")}


@pytest.mark.parametrize("tau", [1e-300, 5e-324, 1e-13])
@pytest.mark.parametrize("method", ["log_density", "score", "score_jacobian"])
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_tiny_tau_is_a_value_error(name, method, tau):
    with pytest.raises(ValueError, match="tau must be >= 1e-12"):
        getattr(TARGETS[name], method)(np.ones((2, 3)), tau)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_huge_or_complex_x_is_a_value_error(name):
    with pytest.raises(ValueError, match="beyond 1e\\+100"):
        TARGETS[name].score(np.array([[1e200, 0.0, 0.0]]), 0.5)
    with pytest.raises(ValueError, match="must be real"):
        TARGETS[name].score(np.array([[1 + 1j, 0.0, 0.0]]), 0.5)
    big = TARGETS[name].score(np.array([[1e100, 0.0, 0.0]]), 0.5)      # at the bound: finite
    assert np.all(np.isfinite(big))


def test_schedules_below_the_tau_floor_are_refused():
    with pytest.raises(ValueError, match="taus must be >= 1e-12"):
        S.DDIM().run(TARGETS["gmm-iso"], [0.5, 1e-13], np.zeros((1, 3)))


def test_small_covariance_eigenvalues_are_kept():
    # Sigma = diag(1, 1e-15): the 1e-15 variance is part of the target (it used to be zeroed).
    # Closed form of the score of N(0, a^2 Sigma + tau I) at tau = 1e-12.
    t = targets.GaussianMixture([1.0], np.zeros((1, 2)), np.diag([1.0, 1e-15])[None])
    tau, x = 1e-12, np.array([[0.3, 1e-7]])
    c = (1 - tau) * np.array([1.0, 1e-15]) + tau
    np.testing.assert_allclose(t.score(x, tau), -x / c, rtol=1e-12)


def test_read_only_and_memory_mapped_input(tmp_path):
    t = targets.make("gmm-aniso", 3, 0)
    x = t.sample(40, 0.999, np.random.default_rng(0))
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    taus = schedules.log_snr(8)
    for s in (S.Heroism(3, 2), S.DDIM(), S.make("unipc")):
        np.testing.assert_array_equal(s.run(t, taus, xm, jacobian="full").x, s.run(t, taus, x, jacobian="full").x)
    np.testing.assert_array_equal(t.score(xm, 0.5), t.score(x, 0.5))


# -- 3. a study is validated completely before anything runs ----------------------------------------------

BAD_STUDIES = [
    ("grid = [1]\n[study]\nname = 'x'\n", "grid must be a list of tables"),
    ("study = 'x'\n[[grid]]\n", "[study] must be a table"),
    ("defaults = 5\n[study]\nname = 'x'\n[[grid]]\n", "[defaults] must be a table"),
    ("[study]\nname = 'x'\n[[grid]]\nsteps = []\n", "steps in [grid 1] is an empty list"),
    ("[study]\nname = 'x'\nnmae = 'y'\n[[grid]]\n", "unknown key(s) in [study]"),
    ("[study]\nname = 'x'\n[quick]\nnn = 3\n[[grid]]\n", "unknown run parameter(s) in [quick]"),
    ("[study]\nname = 'x'\n[defaults]\nstpes = 3\n[[grid]]\n", "unknown run parameter(s) in [defaults]"),
    ("[study]\nname = 'x'\n[[grid]]\nstpes = 3\n", "unknown run parameter(s) in [grid 1]"),
    ("[study]\nname = '" + "a" * 300 + "'\n[[grid]]\n", "at most 200 bytes"),
    ("[study]\nname = 'x'\n[[grid]]\nn = 1_000_000_000_000\n", "GiB"),
    ("[study]\nname = 'x'\n[[grid]]\ntarget = 'gmm-aniso'\ndim = 100000\njacobian = 'full'\n", "GiB"),
    ("[study]\nname = 'x'\n[[grid]]\nmetrics = ['w2']\nw2_method = 'exact'\nn = 20000\n", "w2_method = 'exact'"),
    ("[study]\nname = 'x'\n[[grid]]\nn = 0\n", "n must be >= 1"),
    ("[study]\nname = 'x'\n[[grid]]\nsteps = [8, 0]\n", "steps must be >= 1"),
    ("[study]\nname = 'x'\n[[grid]]\nseed = -1\n", "seed must be >= 0"),
    ("[study]\nname = 'x'\n[[grid]]\ninit = 'uniform'\n", "init must be one of"),
    ("[study]\nname = 'x'\n[[grid]]\njacobian = 'diag'\n", "jacobian must be one of"),
    ("[study]\nname = 'x'\n[[grid]]\nw2_method = 'emd'\n", "w2_method must be one of"),
    ("[study]\nname = 'x'\n[[grid]]\ntau_min = 0.5\ntau_max = 0.4\n", "tau_min must be < tau_max"),
    ("[study]\nname = 'x'\n[[grid]]\ntau_min = 1e-20\n", "tau_min must be >= 1e-12"),
    ("[study]\nname = 'x'\n[[grid]]\nmax_steps = 0\n", "max_steps must be >= 1"),
    ("[study]\nname = 'x'\n[[grid]]\nnfe_budget = 0\n", "nfe_budget must be >= 1"),
    ("[study]\nname = 'x'\n[[grid]]\nsteps = 2.5\n", "steps must be an integer"),
    ("[study]\nname = 'x'\n[[grid]]\nsampler = 'ddim'\nsampler_args = { order = [1, 2] }\n", "sampler_args"),
    ("[study]\nname = 'x'\n[[grid]]\nsampler = 'unipc'\nsampler_args = { K = 3 }\n", "sampler_args"),
    ("[study]\nname = 'x'\n[[grid]]\nsampler = 'subprocess:Popen'\n", "refused"),
    ("[study]\nname = 'x'\n[[grid]]\n" + "".join(f"{k} = {list(range(1, 12))}\n" for k in ("n", "seed", "steps", "dim", "K")),
     "more than 100000"),
]


@pytest.mark.parametrize("text,match", BAD_STUDIES, ids=[f"{i:02d}" for i in range(len(BAD_STUDIES))])
def test_bad_studies_exit_2_before_anything_runs(tmp_path, capsys, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    code, err = _cli(capsys, "run", str(p), "--out", str(tmp_path / "out"))
    _one_line(code, err)
    assert match in err[0], err
    assert not (tmp_path / "out").exists()          # nothing computed, nothing written


def test_metric_order_duplicates_collapse(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("[study]\nname = 'm'\n[defaults]\nn = 50\nsteps = 4\n[[grid]]\nmetrics = ['tv', 'kl']\n"
                 "[[grid]]\nmetrics = ['kl', 'tv', 'kl']\n")
    assert len(sweep.load_study(p)[2]) == 1


def test_jobs_are_clamped_to_the_cores(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(sweep, "_compute", lambda pending, jobs, ex, sch: seen.setdefault("jobs", jobs) and iter(()))
    p = tmp_path / "s.toml"
    p.write_text("[study]\nname = 'j'\n[defaults]\nn = 50\nsteps = 4\n[[grid]]\n")
    try:
        sweep.run_study(p, tmp_path / "out", jobs=64, progress=False)
    except Exception:       # noqa: BLE001 -- no rows were computed; only the clamp matters here
        pass
    assert seen["jobs"] == len(os.sched_getaffinity(0))


# -- 4. the file system: never through a link, every error one line -------------------------------------

STUDY = "[study]\nname = 'fs'\n[defaults]\nn = 60\nsteps = [4, 6]\nmetrics = ['tv', 'kl', 'coupling']\n[[grid]]\n"


@pytest.fixture
def study(tmp_path):
    p = tmp_path / "fs.toml"
    p.write_text(STUDY)
    return p


def test_plot_replaces_a_link_instead_of_writing_through_it(tmp_path, study, capsys):
    out, outside = tmp_path / "out", tmp_path / "outside.png"
    sweep.run_study(study, out, jobs=1, progress=False)
    (out / "fs.csv").rename(out / "order.csv")          # a study plot() knows
    outside.write_bytes(b"keep")
    (out / "order.png").symlink_to(outside)
    assert cli.main(["plot", str(out)]) == 0
    assert outside.read_bytes() == b"keep" and not (out / "order.png").is_symlink()


def test_write_probe_never_follows_a_link(tmp_path, study):
    out, outside = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    outside.write_text("keep")
    (out / ".write-test").symlink_to(outside)
    sweep.run_study(study, out, jobs=1, progress=False)
    assert outside.read_text() == "keep"


@pytest.mark.parametrize("kind", ["dangling link", "folder", "link to a file"])
def test_a_strange_lock_is_refused(tmp_path, study, capsys, kind):
    out, target = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    if kind == "folder":
        (out / ".lock").mkdir()
    else:
        if kind == "link to a file":
            target.write_text("keep")
        (out / ".lock").symlink_to(target)
    code, err = _cli(capsys, "run", str(study), "--out", str(out))
    _one_line(code, err)
    assert "lock" in err[0]
    assert (kind != "dangling link" or not target.exists()) and (kind != "link to a file" or target.read_text() == "keep")


def test_linked_runs_folders_are_refused_and_left_alone(tmp_path, study, capsys):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "runs").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / ".tmp-precious").write_text("keep")
    (out / "runs" / "fs").symlink_to(elsewhere)
    code, err = _cli(capsys, "run", str(study), "--out", str(out))
    _one_line(code, err)
    assert "symbolic link" in err[0] and (elsewhere / ".tmp-precious").read_text() == "keep"


def test_runs_being_a_file_is_one_line(tmp_path, study, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "runs").write_text("not a folder")
    code, err = _cli(capsys, "run", str(study), "--out", str(tmp_path / "out"))
    _one_line(code, err)
    assert "not a folder" in err[0]


@pytest.mark.parametrize("where", ["mkdir", "mkstemp", "replace"])
def test_a_full_disk_is_one_line(tmp_path, study, capsys, monkeypatch, where):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    if where == "mkdir":
        monkeypatch.setattr(pathlib.Path, "mkdir", full)
    elif where == "mkstemp":
        sweep.run_study(study, tmp_path / "out", jobs=1, progress=False)   # the folders exist; a file cannot
        for f in (tmp_path / "out" / "runs" / "fs").glob("*.json"):
            f.unlink()
        monkeypatch.setattr(sweep.tempfile, "mkstemp", full)
    else:
        monkeypatch.setattr(sweep.os, "replace", full)
    code, err = _cli(capsys, "run", str(study), "--out", str(tmp_path / "out"), "--no-progress")
    _one_line(code, err)
    assert "No space left" in err[0]
    assert not list((tmp_path / "out").rglob(".tmp-*")) if (tmp_path / "out").exists() else True


def test_out_of_inodes_is_one_line(tmp_path, study, capsys, monkeypatch):
    monkeypatch.setattr(sweep.tempfile, "mkstemp",
                        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device (inodes)")))
    code, err = _cli(capsys, "run", str(study), "--out", str(tmp_path / "out"), "--no-progress")
    _one_line(code, err)


@pytest.mark.parametrize("cmd", ["fit", "plot"])
def test_fit_and_plot_on_a_read_only_folder_are_one_line(tmp_path, study, capsys, monkeypatch, cmd):
    out = tmp_path / "out"
    sweep.run_study(study, out, jobs=1, progress=False)
    (out / "fs.csv").rename(out / "order.csv")
    # root ignores file modes, so the read-only folder is simulated at the system call
    monkeypatch.setattr(sweep.tempfile, "mkstemp",
                        lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EROFS, "Read-only file system")))
    code, err = _cli(capsys, cmd, str(out))
    _one_line(code, err)
    assert "Read-only" in err[0]


def test_an_unreachable_dask_scheduler_is_one_line_within_10_s(tmp_path, study):
    pytest.importorskip("distributed", reason="the [dask] extra is not installed")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "theory_check.cli", "run", str(study), "--out", str(tmp_path / "o"),
                        "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "scheduler" in r.stderr and time.time() - t0 < 20      # 10 s timeout plus interpreter start-up


# -- 5. the run cache trusts a file only under its own key -----------------------------------------------

def test_a_row_copied_under_another_key_is_recomputed(tmp_path, study):
    out = tmp_path / "out"
    df = sweep.run_study(study, out, jobs=1, progress=False)
    files = sorted((out / "runs" / "fs").glob("*.json"))
    shutil.copy(files[0], files[1])                 # valid checksum, wrong run
    again = sweep.run_study(study, out, jobs=1, progress=False)
    assert sorted(again.run_key) == sorted(df.run_key) and again.run_key.nunique() == 2
    assert sorted(again.steps) == [4, 6]


# -- 6. processes: workers die with their parent; interrupts are one line -----------------------------------

SLOW = ("[study]\nname = 'slow'\n[defaults]\ntarget = 'gmm-aniso'\ndim = 6\nn = 3000\nsampler = 'heroism'\n"
        "[[grid]]\nK = [2, 3, 4]\nsteps = [40, 41, 42, 43, 44, 45, 46, 47]\n")


def _children(pid):
    kids = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(p.name))
    return kids


def _cmdline(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _alive(pid):
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start(tmp_path):
    p = tmp_path / "slow.toml"
    p.write_text(SLOW)
    # A shell's background job (`cmd &` without job control, as CI runners and nohup may start the
    # suite) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the
    # sweep under test gets the default disposition a terminal's Ctrl-C would meet.
    proc = subprocess.Popen([sys.executable, "-m", "theory_check.cli", "run", str(p), "--out", str(tmp_path / "o"),
                             "--jobs", "2", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline:
        workers = [k for k in _children(proc.pid) if "spawn_main" in _cmdline(k)]
        if len(workers) >= 2 and any((tmp_path / "o" / "runs" / "slow").glob("*.json")):
            return proc, workers
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the sweep did not start its workers")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_exit_when_the_parent_dies(tmp_path, sig):
    proc, workers = _start(tmp_path)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    deadline = time.time() + 10         # the bound: every worker gone within 10 s (polled, not slept)
    while time.time() < deadline and [w for w in workers if _alive(w)]:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "workers outlived their parent"
    if sig == signal.SIGTERM:
        err = proc.stderr.read().strip().splitlines()
        assert proc.returncode == 143 and err == ["theory-check run: terminated; rerun to resume"], err


def test_ctrl_c_is_one_line_and_resumable(tmp_path):
    proc, workers = _start(tmp_path)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    err = proc.stderr.read().strip().splitlines()
    assert proc.returncode == 130 and err == ["theory-check run: interrupted; rerun to resume"], err
    time.sleep(2)
    assert not [w for w in workers if _alive(w)]


def test_a_killed_worker_is_one_line(tmp_path):
    proc, workers = _start(tmp_path)
    os.kill(workers[0], signal.SIGKILL)             # what the OOM killer does
    proc.wait(timeout=120)
    err = proc.stderr.read().strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "worker process died" in err[0], err
