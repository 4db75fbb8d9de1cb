"""The sweep runner: a study (TOML) expands to run specs; each run becomes one row.

A study file:

    [study]
    name = "order"                 # also the CSV name
    description = "..."
    [defaults]                     # run parameters shared by every grid (see runs.DEFAULTS)
    target = "gmm-aniso"
    n = 4000
    [[grid]]                       # lists expand to their cartesian product
    K = [1, 2, 3]
    N = ["K-1", "K", "paper"]
    steps = [4, 8, 16]
    [quick]                        # overrides applied with --quick (defaults and every grid)
    steps = [4, 8]
    max_dim = 64                   # (quick only) drop runs with dim > 64

Guarantees (tests in tests/test_sweep.py):
* Atomic rows: each run is written to runs/<study>/<key>.json via a temporary file, fsync and
  os.replace, with a SHA-256 of its content inside. A killed sweep leaves whole files or none.
* Resumable: on restart, runs whose file exists and whose checksum holds are not recomputed;
  a corrupted or truncated file is detected by its checksum and the run recomputed.
* Deterministic: a run is a pure function of its spec (runs.evaluate), and the key is a hash of
  the spec and of the package source, so local, --jobs N and Dask executors give the same rows.
* One sweep per output folder at a time: an exclusive lock (fcntl) on <out>/.lock; a second
  sweep on the same folder refuses with a clear message.
"""

import concurrent.futures as cf
import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import multiprocessing
import os
import pathlib
import subprocess
import tempfile
import tomllib

import pandas as pd

from . import __version__, runs

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


class SweepError(RuntimeError):
    """A sweep could not proceed (output folder locked, unwritable, ...)."""


# The modules a row's numbers depend on. Their source is part of every run key, so changed
# numerics never reuse stale rows, while edits to fits, plots or the CLI keep the cache.
NUMERIC_MODULES = ("checks", "kernels", "metrics", "runs", "samplers", "sampling", "schedules", "targets")


def _module_files(name):
    p = PACKAGE_DIR / name
    return sorted(p.glob("*.py")) if p.is_dir() else [PACKAGE_DIR / f"{name}.py"]


def source_hash():
    """SHA-256 of the numerical modules' source (a subpackage: all its files)."""
    h = hashlib.sha256()
    for p in [f for m in NUMERIC_MODULES for f in _module_files(m)]:
        h.update(str(p.relative_to(PACKAGE_DIR)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def user_source_hash(spec):
    """For a user's sampler "package.module:attr", a hash of that module's source, so that an
    edited module never reuses the rows of the old one ("" for built-in samplers)."""
    name = spec.get("sampler") or ""
    if ":" not in name:
        return ""
    import importlib.util
    try:
        origin = importlib.util.find_spec(name.partition(":")[0]).origin
        return hashlib.sha256(pathlib.Path(origin).read_bytes()).hexdigest()[:16]
    except (ImportError, AttributeError, TypeError, ValueError, OSError):
        return ""


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_study(path, quick=False):
    """(name, description, specs, config_hash) for a study file; every spec validated."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"study file {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        cfg = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"study file {path.name}: malformed TOML ({exc})") from None
    unknown = set(cfg) - {"study", "defaults", "grid", "quick"}
    if unknown:
        raise ValueError(f"study file {path.name}: unknown section(s) {sorted(unknown)}")
    study = cfg.get("study", {})
    name = study.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"study file {path.name}: [study] name must be an identifier, got {name!r}")
    grids = cfg.get("grid")
    if not isinstance(grids, list) or not grids:
        raise ValueError(f"study file {path.name}: needs at least one [[grid]] table")
    defaults = dict(cfg.get("defaults", {}))
    quick_over = dict(cfg.get("quick", {})) if quick else {}
    max_dim = quick_over.pop("max_dim", None)      # --quick may also drop the largest dimensions
    specs, seen = [], set()
    for g in grids:
        g = {**defaults, **g, **quick_over}
        keys = list(g)
        values = [v if isinstance(v, list) and k != "metrics" else [v] for k, v in g.items()]
        for combo in itertools.product(*values):
            try:
                spec = runs.normalise(dict(zip(keys, combo)))
            except ValueError as exc:
                raise ValueError(f"study file {path.name}: {exc}") from None
            canon = json.dumps(spec, sort_keys=True, default=str)
            if canon not in seen and (max_dim is None or spec["dim"] <= max_dim):
                seen.add(canon)
                specs.append(spec)
    return name, study.get("description", ""), specs, hashlib.sha256(raw).hexdigest()[:16]


def run_key(spec, src=None):
    blob = json.dumps(spec, sort_keys=True, default=str) + (src or source_hash()) + user_source_hash(spec)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _digest(payload):
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def write_atomic(path, text):
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_row(path):
    """The stored row, or None when the file is missing, truncated or fails its checksum."""
    try:
        doc = json.loads(pathlib.Path(path).read_text())
        if doc.get("sha256") == _digest(doc["row"]):
            return doc["row"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


@contextlib.contextmanager
def locked(out):
    lock = pathlib.Path(out) / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise SweepError(f"another sweep is running on {out} (lock {lock}); wait for it or use another --out")
            raise
        yield
    finally:
        os.close(fd)


def _prepare_out(out):
    out = pathlib.Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"out: cannot write to output folder {str(out)!r} ({exc.strerror})") from None
    return out


# Processes already split the work: one thread each (Numba and BLAS) avoids oversubscription.
# BLAS reads its thread count when the spawned interpreter loads it, so it goes by environment.
_ONE_THREAD = {v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def _init_worker():
    import numba
    numba.set_num_threads(1)


@contextlib.contextmanager
def _child_environment(env):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _compute(pending, jobs, executor, scheduler):
    """Yield (key, row) as the runs of `pending` [(key, spec), ...] finish."""
    if executor == "dask":
        from distributed import Client, as_completed
        with Client(scheduler) as client:
            futs = {client.submit(runs.evaluate, s, pure=False): k for k, s in pending}
            for fut in as_completed(futs):
                yield futs[fut], fut.result()
        return
    if jobs == 1:
        for k, s in pending:
            yield k, runs.evaluate(s)
        return
    # spawn, not fork: forking a process whose Numba (OpenMP) threads have run is unsafe.
    # The longest runs go first, so that no worker is left with a long run at the end.
    ctx = multiprocessing.get_context("spawn")
    pending = sorted(pending, key=lambda ks: -runs.cost(ks[1]))
    with _child_environment(_ONE_THREAD), \
            cf.ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, mp_context=ctx) as pool:
        futs = {pool.submit(runs.evaluate, s): k for k, s in pending}
        for fut in cf.as_completed(futs):
            yield futs[fut], fut.result()


def run_study(path, out, jobs=None, executor="local", scheduler=None, quick=False, progress=True):
    """Run every pending spec of a study, then write <out>/<name>.csv. Returns the DataFrame."""
    if executor not in ("local", "dask"):
        raise ValueError(f"executor must be 'local' or 'dask', got {executor!r}")
    if executor == "dask" and not scheduler:
        raise ValueError("scheduler: --executor dask needs --scheduler ADDRESS")
    jobs = os.cpu_count() if jobs is None else jobs
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    name, _, specs, cfg_hash = load_study(path, quick)
    out = _prepare_out(out)
    rundir = out / "runs" / name
    rundir.mkdir(parents=True, exist_ok=True)
    src, commit = source_hash(), git_commit()
    keys = [run_key(s, src) for s in specs]
    with locked(out):
        for tmp in rundir.glob(".tmp-*"):
            tmp.unlink()               # left by a killed sweep: never renamed, so never a row
        pending = [(k, s) for k, s in zip(keys, specs) if read_row(rundir / f"{k}.json") is None]
        bar = _progress(len(specs), len(specs) - len(pending), name, progress)
        failed = 0
        try:
            for k, row in _compute(pending, jobs, executor, scheduler):
                row = dict(row, study=name, run_key=k, config_hash=cfg_hash, version=__version__,
                           source_hash=src, git_commit=commit)
                _write(rundir / f"{k}.json", json.dumps({"row": row, "sha256": _digest(row)}, default=str))
                failed += row["status"] != "ok"
                bar.update(1)
                bar.set_postfix(failed=failed, remaining=bar.total - bar.n)
        finally:
            bar.close()
        rows = [read_row(rundir / f"{k}.json") for k in keys]
        df = pd.DataFrame(rows)
        _write(out / f"{name}.csv", df.to_csv(index=False))
    return df


def _write(path, text):
    """write_atomic, with a full or failing disk reported as a SweepError (nothing half-written)."""
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise SweepError(f"out: cannot write {path} ({exc.strerror or exc}); the sweep stopped, "
                         "finished runs are kept and a rerun resumes") from None


def _progress(total, done, name, enabled):
    from tqdm import tqdm
    return tqdm(total=total, initial=done, desc=name, unit="run", disable=not enabled, leave=False)
