"""Sweep guarantees: atomic rows, resume after SIGKILL without loss or repetition, identical
numbers for --jobs 1, --jobs 2 and a Dask cluster, checksummed cache files, one sweep per folder."""

import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from theory_check import sweep

STUDY = """
[study]
name = "tiny"
[defaults]
target = "gmm-aniso"
dim = 6
n = 6000
metrics = ["tv", "kl"]
[[grid]]
K = [2, 3]
N = "K"
steps = [6, 8, 10, 12, 14]
"""
TIMING = ["wall_time", "sample_time"]


@pytest.fixture
def study(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(STUDY)
    return p


def _numbers(df_or_dir):
    """The CSV a sweep wrote (what users read), without the timing columns."""
    df = pd.read_csv(df_or_dir / "tiny.csv") if not isinstance(df_or_dir, pd.DataFrame) else df_or_dir
    return df.drop(columns=TIMING).sort_values("run_key").reset_index(drop=True)


def _rows(rundir):
    """The finished row files of a run directory (not the .tmp-* files of writes in progress)."""
    return [p for p in rundir.glob("*.json") if not p.name.startswith(".tmp-")]


def _cli(*args):
    return [sys.executable, "-m", "theory_check.cli", *args]


def test_sigkill_and_resume_loses_and_repeats_nothing(study, tmp_path):
    sweep.run_study(study, tmp_path / "ref", jobs=1, progress=False)
    out = tmp_path / "killed"
    rundir = out / "runs" / "tiny"
    for trial in range(3):          # kill at a different moment each time
        proc = subprocess.Popen(_cli("run", str(study), "--out", str(out), "--jobs", "1", "--no-progress"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = 2 + 3 * trial
        deadline = time.time() + 120
        while time.time() < deadline and (not rundir.exists() or len(_rows(rundir)) < target):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # A kill between a row's write and its rename leaves a .tmp-* file (pathlib's glob matches dot
    # files): that is an unfinished write, not a row, and the resume must discard it.
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in _rows(rundir)}
    assert 0 < len(before) < 10
    assert all(sweep.read_row(rundir / name) is not None for name in before)   # whole files only
    done = subprocess.run(_cli("run", str(study), "--out", str(out), "--jobs", "1", "--no-progress"),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in rundir.glob("*.json")}   # tmp files too
    assert len(after) == 10 and not list(rundir.glob(".tmp-*"))
    assert all(after[k] == v for k, v in before.items())        # nothing recomputed
    pd.testing.assert_frame_equal(_numbers(out), _numbers(tmp_path / "ref"))


def test_jobs_and_dask_give_identical_numbers(study, tmp_path):
    for name, jobs in (("one", 1), ("two", 2)):
        sweep.run_study(study, tmp_path / name, jobs=jobs, progress=False)
    pd.testing.assert_frame_equal(_numbers(tmp_path / "one"), _numbers(tmp_path / "two"))
    LocalCluster = pytest.importorskip("distributed", reason="the [dask] extra is not installed").LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        sweep.run_study(study, tmp_path / "dask", executor="dask", scheduler=cluster.scheduler_address,
                        progress=False)
    pd.testing.assert_frame_equal(_numbers(tmp_path / "one"), _numbers(tmp_path / "dask"))


def test_corrupted_cache_file_is_recomputed(study, tmp_path):
    out = tmp_path / "c"
    sweep.run_study(study, out, jobs=1, progress=False)
    ref = _numbers(out)
    # rows that hold a TV (runs whose map folded have none) first
    files = sorted((out / "runs" / "tiny").glob("*.json"), key=lambda p: ('"tv": ' not in p.read_text(), p.name))
    files[0].write_text(files[0].read_text()[:40])                # truncated
    text = files[1].read_text()
    altered = re.sub(r'"tv": [^,}]+', '"tv": 9.5', text, count=1)      # silently altered number
    assert altered != text
    files[1].write_text(altered)
    assert sweep.read_row(files[0]) is None and sweep.read_row(files[1]) is None
    mtimes = {p: p.stat().st_mtime_ns for p in files[2:]}
    sweep.run_study(study, out, jobs=1, progress=False)
    pd.testing.assert_frame_equal(_numbers(out), ref)
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())


def test_second_sweep_on_same_folder_refuses(study, tmp_path):
    out = tmp_path / "l"
    out.mkdir()
    with sweep.locked(out):
        with pytest.raises(sweep.SweepError, match="another sweep is running"):
            sweep.run_study(study, out, jobs=1, progress=False)


def test_quick_overrides_and_max_dim(tmp_path):
    p = tmp_path / "q.toml"
    p.write_text(STUDY.replace('[[grid]]', '[[grid]]\ndim = [2, 6, 40]') + '\n[quick]\nsteps = 4\nmax_dim = 6\n')
    _, _, specs, _ = sweep.load_study(p, quick=True)
    assert {s["steps"] for s in specs} == {4} and {s["dim"] for s in specs} == {2, 6}
    _, _, full, _ = sweep.load_study(p, quick=False)
    assert len(full) == 2 * 5 * 3


@pytest.mark.parametrize("text,match", [
    ("[study]\nname='x'\n", "grid"),
    ("[study]\nname='x'\n[[grid]]\nK=[1\n", "malformed TOML"),
    ("[study]\nname='x y'\n[[grid]]\nK=1\n", "identifier"),
    ("[study]\nname='x'\n[[grid]]\nbogus=1\n", "bogus"),
    ("[study]\nname='x'\n[[grid]]\ntarget='nope'\n", "name must be one of"),
    ("[study]\nname='x'\n[[grid]]\nsampler='euler_a'\n", "sampler"),
    ("[study]\nname='x'\n[extra]\n[[grid]]\n", "unknown section"),
    ("[study]\nname='x'\n[[grid]]\nmode='minimal'\n", "eps"),
])
def test_malformed_studies_raise_value_error(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        sweep.load_study(p)


def test_cli_errors_are_one_line_with_exit_2(tmp_path):
    for args in (["sample", "--dim", "0"], ["sample", "--target", "nope"], ["run", str(tmp_path / "missing.toml")],
                 ["sample", "--K", "20"], ["fit", str(tmp_path)]):
        r = subprocess.run(_cli(*args), capture_output=True, text=True)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "error" in r.stderr, (args, r.stderr)


def test_child_environment_is_restored(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with sweep._child_environment(sweep._ONE_THREAD):
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "1"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def test_cost_orders_longer_runs_first():
    from theory_check import runs
    base = runs.normalise(dict(target="gmm-iso", dim=4, steps=8, K=2))
    assert runs.cost(runs.normalise(dict(base, steps=16))) == 2 * runs.cost(base)
    assert runs.cost(runs.normalise(dict(base, K=3))) > runs.cost(base)
    assert runs.cost(runs.normalise(dict(base, sampler="rk4"))) == 4 * runs.cost(runs.normalise(dict(base, sampler="ddim")))


def test_the_run_key_ignores_documentation_but_not_code():
    src = 'def f(x):\n    """Doc."""\n    # why\n    return x + 1\n'
    doc = 'def f(x):\n    """Another doc."""\n    return x + 1  # other comment\n'
    code = 'def f(x):\n    """Doc."""\n    return x + 2\n'
    assert sweep.code_fingerprint(src) == sweep.code_fingerprint(doc)
    assert sweep.code_fingerprint(src) != sweep.code_fingerprint(code)


def test_workers_run_one_thread_each(tmp_path, monkeypatch):
    # A user sampler that fails its run unless the worker was started with one BLAS and one Numba
    # thread (two workers on two cores each running two threads of each ran 2.5x slower).
    (tmp_path / "threads_mod.py").write_text(
        "import multiprocessing, os\n"
        "def euler(model, x, sigmas):\n"
        "    bad = {k: os.environ.get(k) for k in ('OPENBLAS_NUM_THREADS', 'NUMBA_NUM_THREADS') if os.environ.get(k) != '1'}\n"
        "    if bad and multiprocessing.parent_process() is not None:      # in a worker\n"
        "        raise RuntimeError(f'worker threads: {bad}')\n"
        "    for s, s_next in zip(sigmas[:-1], sigmas[1:]):\n"
        "        x = x + (x - model(x, s)) / s * (s_next - s)\n"
        "    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    p = tmp_path / "t.toml"
    p.write_text("[study]\nname = 't'\n[defaults]\nsampler = 'threads_mod:euler'\nn = 40\n[[grid]]\nsteps = [2, 3, 4, 5]\n")
    df = sweep.run_study(p, tmp_path / "out", jobs=2, progress=False)
    assert list(df.status) == ["ok"] * 4, df.error.tolist()


def test_cases_bind_parameters_and_quick_wins(tmp_path):
    # a case is one axis: its tables' values go together (never crossed), over the grid's values;
    # --quick's values win over a case's
    p = tmp_path / "c.toml"
    p.write_text("[study]\nname='c'\n[defaults]\nsteps=[4, 8]\nn=50\n"
                 "cases=[{target='gmm-iso', dim=3, n=30}, {target='uniform-cube', dim=5}]\n"
                 "[[grid]]\nsampler='ddim'\n[quick]\nn=10\n")
    _, _, specs, _ = sweep.load_study(p)
    got = sorted((s["target"], s["dim"], s["n"], s["steps"]) for s in specs)
    assert got == [("gmm-iso", 3, 30, 4), ("gmm-iso", 3, 30, 8), ("uniform-cube", 5, 50, 4), ("uniform-cube", 5, 50, 8)]
    _, _, quick, _ = sweep.load_study(p, quick=True)
    assert {s["n"] for s in quick} == {10}


@pytest.mark.parametrize("cases,match", [("cases=1", "list of tables"), ("cases=[{bogus=1}]", "bogus")])
def test_malformed_cases_raise(tmp_path, cases, match):
    p = tmp_path / "c.toml"
    p.write_text(f"[study]\nname='c'\n[[grid]]\n{cases}\n")
    with pytest.raises(ValueError, match=match):
        sweep.load_study(p)
