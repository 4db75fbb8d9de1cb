"""The sweep runner: a study (TOML) expands to run specs; each run becomes one row.

A study file::

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
    cases = [{ target = "gmm-iso", dim = 64 }, { target = "uniform-cube", dim = 256, n = 1000 }]
                                   # (defaults or grid) one axis of tables: parameters bound together
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

from __future__ import annotations

import ast
import concurrent.futures as cf
import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import pathlib
import stat
import subprocess
import sys
import tempfile
import time
import tomllib

import pandas as pd

from . import __version__, checks, runs

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


__all__ = ["SweepError", "NUMERIC_MODULES", "source_hash", "code_fingerprint", "user_source_hash", "git_commit",
           "load_study", "run_key", "write_atomic", "read_row", "locked", "run_study", "evaluate_on_worker", "MAX_RUNS", "MAX_NAME"]


class SweepError(RuntimeError):
    """A sweep could not proceed (output folder locked, unwritable, ...)."""


# The modules a row's numbers depend on. Their source is part of every run key, so changed
# numerics never reuse stale rows, while edits to fits, plots or the CLI keep the cache.
NUMERIC_MODULES = ("checks", "kernels", "metrics", "runs", "samplers", "sampling", "schedules", "search", "targets")


def _module_files(name):
    p = PACKAGE_DIR / name
    return sorted(p.glob("*.py")) if p.is_dir() else [PACKAGE_DIR / f"{name}.py"]


def code_fingerprint(source):
    """The code of a module without its docstrings and comments (its AST), so that editing the
    documentation keeps the run cache while any change of the code invalidates it."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def source_hash():
    """SHA-256 of the numerical modules' code (a subpackage: all its files), docstrings and
    comments excluded (`code_fingerprint`)."""
    h = hashlib.sha256()
    for p in [f for m in NUMERIC_MODULES for f in _module_files(m)]:
        h.update(str(p.relative_to(PACKAGE_DIR)).encode())
        h.update(code_fingerprint(p.read_text()).encode())
    return h.hexdigest()[:16]


def _user_files(module):
    """The source files a user's module depends on: the module itself and every module it imports,
    directly or through others, that lives under its import root (the folder holding its top-level
    package or module), found statically by `modulefinder` without running any of them. Installed
    packages (site-packages) and theory_check itself are left out: their versions are not the
    user's edits. A module imported by a computed name (importlib.import_module(f"...")) cannot be
    seen this way."""
    import importlib.util
    import modulefinder
    top = module.partition(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.origin or not spec.has_location:
        raise ImportError(f"no source for {module!r}")
    top_path = pathlib.Path(spec.origin).resolve()
    root = top_path.parent.parent if spec.submodule_search_locations else top_path.parent
    finder = modulefinder.ModuleFinder(path=[str(root)])
    finder.import_hook(module)
    files = set()
    for m in finder.modules.values():
        f = getattr(m, "__file__", None)
        if not f:
            continue
        p = pathlib.Path(f).resolve()
        parts = set(p.parts)
        if (p.is_relative_to(root) and not p.is_relative_to(PACKAGE_DIR)
                and not parts & {"site-packages", "dist-packages"}):
            files.add(p)
    files.add(pathlib.Path(importlib.util.find_spec(module).origin).resolve())
    return root, sorted(files)


def user_source_hash(spec):
    """For a user's sampler "package.module:attr", a hash of the source of that module and of every
    module under its import root that it imports (`_user_files`), so that an edited module or an
    edited helper never reuses the rows of the old code ("" for built-in samplers).

    Raises
    ------
    ValueError
        When the module's sources cannot be found (a module without a file, e.g. built in C):
        such a sampler's rows could not be told apart after an edit, so it is not cached.
    """
    name = spec.get("sampler") or ""
    if ":" not in name:
        return ""
    module = name.partition(":")[0]
    try:
        root, files = _user_files(module)
        h = hashlib.sha256()
        for p in files:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    except (ImportError, AttributeError, TypeError, ValueError, OSError, SyntaxError) as exc:
        raise ValueError(f"sampler {name!r}: the sources it depends on cannot be read ({type(exc).__name__}: {exc}), "
                         "so its cached rows could not be told from an edited version's; run it with "
                         "`theory-check sample` or from a module file") from None
    return h.hexdigest()[:16]


MAX_RUNS = 100_000          # a study's grids expand to at most this many runs
MAX_NAME = 200              # bytes of a study name: <name>.csv and runs/<name>/ stay below NAME_MAX (255)


def git_commit():
    """The repository's HEAD commit (provenance of rows), or "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_study(path: str | os.PathLike, quick: bool = False) -> tuple[str, str, list[dict], str]:
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
    where = f"study file {path.name}"
    unknown = set(cfg) - {"study", "defaults", "grid", "quick"}
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {sorted(unknown)}")
    study = cfg.get("study", {})
    if not isinstance(study, dict):
        raise ValueError(f"{where}: [study] must be a table with name and description, got {study!r}")
    bad = set(study) - {"name", "description"}
    if bad:
        raise ValueError(f"{where}: unknown key(s) in [study]: {sorted(bad)} (name, description)")
    name = study.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{where}: [study] name must be an identifier, got {name!r}")
    if len(name.encode()) > MAX_NAME:
        raise ValueError(f"{where}: [study] name must be at most {MAX_NAME} bytes (it names files), got {len(name.encode())}")
    grids = cfg.get("grid")
    if not isinstance(grids, list) or not grids or not all(isinstance(g, dict) for g in grids):
        raise ValueError(f"{where}: needs at least one [[grid]] table (grid must be a list of tables), got {grids!r}")
    defaults = cfg.get("defaults", {})
    quick_all = cfg.get("quick", {})
    for section, table in (("defaults", defaults), ("quick", quick_all)):
        if not isinstance(table, dict):
            raise ValueError(f"{where}: [{section}] must be a table of run parameters, got {table!r}")
    allowed = set(runs.DEFAULTS)
    for section, table in [("defaults", defaults), ("quick", {k: v for k, v in quick_all.items() if k != "max_dim"})] + \
            [(f"grid {i + 1}", g) for i, g in enumerate(grids)]:
        if "cases" in table:
            cases = table["cases"]
            if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
                raise ValueError(f"{where}: cases in [{section}] must be a list of tables of run parameters, got {cases!r}")
            typo = set().union(*cases) - allowed
            if typo:
                raise ValueError(f"{where}: unknown run parameter(s) in the cases of [{section}]: {sorted(typo)}")
        typo = set(table) - allowed - {"cases"}
        if typo:
            raise ValueError(f"{where}: unknown run parameter(s) in [{section}]: {sorted(typo)}")
        empty = [k for k, v in table.items() if isinstance(v, list) and not v]
        if empty:
            raise ValueError(f"{where}: {empty[0]} in [{section}] is an empty list (no runs)")
    if "max_dim" in quick_all:
        checks.integer(quick_all["max_dim"], "max_dim", minimum=1)
    defaults = dict(defaults)
    quick_over = dict(quick_all) if quick else {}
    max_dim = quick_over.pop("max_dim", None)      # --quick may also drop the largest dimensions
    size = 0
    for g in grids:
        g = {**defaults, **g, **quick_over}
        size += math.prod(len(v) if isinstance(v, list) and k != "metrics" else 1 for k, v in g.items())
    if size > MAX_RUNS:
        raise ValueError(f"{where}: the grids expand to {size} runs, more than {MAX_RUNS}; split the study")
    specs, seen = [], set()
    for g in grids:
        g = {**defaults, **g, **quick_over}
        keys = list(g)
        values = [v if isinstance(v, list) and k != "metrics" else [v] for k, v in g.items()]
        for combo in itertools.product(*values):
            raw_spec = dict(zip(keys, combo))
            # a case binds parameters that vary together (a target with its dim and n); its values
            # win over [defaults] and the grid's, and --quick's over its
            case = raw_spec.pop("cases", {})
            raw_spec.update({k: v for k, v in case.items() if k not in quick_over})
            try:
                spec = runs.normalise(raw_spec)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            canon = json.dumps(spec, sort_keys=True, default=str)
            if canon not in seen and (max_dim is None or spec["dim"] <= max_dim):
                seen.add(canon)
                specs.append(spec)
    return name, study.get("description", ""), specs, hashlib.sha256(raw).hexdigest()[:16]


def run_key(spec, src=None, user=None):
    """The cache key of a run: a hash of its normalised spec, the numerical code (`src`, default
    `source_hash()`) and a user sampler's sources (`user`, default `user_source_hash(spec)`)."""
    user = user_source_hash(spec) if user is None else user
    blob = json.dumps(spec, sort_keys=True, default=str) + (src or source_hash()) + user
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _digest(payload):
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path, data, dir_fd=None):
    """Write `data` (str or bytes) to `path` through a fresh temporary file in the same folder, fsync
    and os.replace: readers see the old file or the new one, never a part; a symbolic link at `path`
    is replaced by the file, never written through. Permissions follow the user's umask. With
    `dir_fd` (an open folder), `path` is a name inside it and every step is taken relative to the
    descriptor, so a folder swapped for a link meanwhile is never written through either."""
    path = pathlib.Path(path)
    if dir_fd is None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        os.fchmod(fd, 0o666 & ~_umask())            # mkstemp creates 0o600
    else:                                           # mkstemp takes no dir_fd: a fresh name by O_EXCL
        tmp = f".tmp-{os.getpid()}-{os.urandom(6).hex()}{path.suffix}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


MAX_ROW_BYTES = 16 * 2 ** 20      # a row file is a few kB; anything larger is not one of ours


def _parse_row(fd, key):
    """The row in the open file `fd` (closed here), or None: not a regular file (a FIFO would
    block a reader), larger than MAX_ROW_BYTES (a sparse 6 GiB file), not our JSON, a failed
    checksum, another run's key, or a row without a status."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ROW_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            doc = json.loads(f.read(MAX_ROW_BYTES + 1))
        row = doc["row"]
        if (doc.get("sha256") == _digest(row) and isinstance(row, dict) and row.get("status") in ("ok", "failed")
                and (key is None or row.get("run_key") == key)):
            return row
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    finally:
        os.close(fd)
    return None


def _open_row(name, dir_fd=None):
    """A read descriptor on a row file, never through a link and never blocking, or None."""
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None


def read_row(path, key=None):
    """The stored row, or None when the file is missing, not a regular file, too large, truncated,
    fails its checksum, holds another run's row (its run_key differs from `key`, e.g. a file copied
    under another name) or has no status. The checksum detects corruption, not forgery: anyone who
    can write the folder can write rows."""
    fd = _open_row(path)
    return None if fd is None else _parse_row(fd, key)


class _RowsFolder:
    """runs/<study>, opened once as a directory descriptor: every row is read and written relative
    to it, so a folder swapped for a link (or moved away) while the sweep runs is never written
    through; the swap is detected before each write and stops the sweep."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise SweepError(f"out: cannot open {self.path} as a folder ({exc.strerror or exc})") from None
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)

    def close(self):
        os.close(self.fd)

    def check(self):
        try:
            st = os.stat(self.path, follow_symlinks=False)
            same = stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == self.identity
        except OSError:
            same = False
        if not same:
            raise SweepError(f"out: {self.path} was replaced or moved while the sweep ran; nothing was written "
                             "outside it; restore it (or use another --out) and rerun to resume")

    def read(self, name, key):
        fd = _open_row(name, self.fd)
        return None if fd is None else _parse_row(fd, key)

    def write(self, name, text):
        """`write_atomic` inside the folder, after checking that it is still the one opened."""
        self.check()
        _write(self.path / name, text, dir_fd=self.fd)


@contextlib.contextmanager
def locked(out):
    """Context manager: an exclusive lock on <out>/.lock (never through a link); a second sweep on
    the same folder gets a SweepError."""
    lock = pathlib.Path(out) / ".lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        what = ("is a symbolic link" if lock.is_symlink() else "is a folder" if lock.is_dir()
                else f"cannot be opened ({exc.strerror})")
        raise SweepError(f"out: the lock file {lock} {what}; remove it or use another --out") from None
    # The folder itself is locked too: removing .lock while a sweep runs must not let a second
    # sweep in (it would lock a fresh .lock file), and a folder cannot be removed while it has files.
    dfd = None
    try:
        dfd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(dfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise SweepError(f"another sweep is running on {out} (lock {lock}); wait for it or use another --out")
            raise
        yield
    finally:
        os.close(fd)
        if dfd is not None:
            os.close(dfd)


def _prepare_out(out, name=None):
    """Create <out> (and <out>/runs/<name>) as real folders; refuse links, files in their place,
    and folders that cannot be written. Nothing is ever written through a symbolic link."""
    out = pathlib.Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")     # a fresh name: never a link
        os.close(fd)
        os.unlink(probe)
        if name is not None:
            for d in (out / "runs", out / "runs" / name):
                if d.is_symlink():
                    raise SweepError(f"out: {d} is a symbolic link; runs are only written inside --out")
                if d.exists() and not d.is_dir():
                    raise SweepError(f"out: {d} exists and is not a folder")
                d.mkdir(exist_ok=True)
    except OSError as exc:
        raise SweepError(f"out: cannot write to output folder {str(out)!r} ({exc.strerror or exc})") from None
    return out


# Processes already split the work: one thread each (Numba and BLAS) avoids oversubscription.
# BLAS reads its thread count when the spawned interpreter loads it, so it goes by environment.
_ONE_THREAD = {v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


DASK_TIMEOUT = "10s"


def _init_worker(parent_pid):
    """One Numba thread; SIGINT is the parent's to handle; exit as soon as the parent is gone
    (a SIGKILLed parent cannot stop its workers: each one watches its parent itself)."""
    import signal
    import threading
    import numba
    numba.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import tune_process
    tune_process()
    if sys.platform.startswith("linux"):
        try:        # the kernel sends SIGKILL when the parent dies
            import ctypes
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


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
        try:
            from distributed import Client, as_completed
        except ImportError:
            raise SweepError("executor: 'dask' needs the dask extra (pip install 'theory-check[dask]')") from None
        try:
            client = Client(scheduler, timeout=DASK_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepError(f"scheduler: cannot reach the Dask scheduler {scheduler!r} within {DASK_TIMEOUT} "
                             f"({type(exc).__name__})") from None
        src = source_hash()
        # distributed logs every lost connection at length on stderr; the sweep's one line says it
        quiet = contextlib.ExitStack()
        names = [n for n in logging.root.manager.loggerDict if n.partition(".")[0] in ("distributed", "tornado")]
        for name in names:          # distributed configures levels on its child loggers too
            logger = logging.getLogger(name)
            quiet.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.CRITICAL + 1)
        with quiet, client:             # quiet until the client has closed
            futs = {client.submit(evaluate_on_worker, s, pure=False): k for k, s in pending}
            try:
                for fut in as_completed(futs):
                    worker_src, worker, row = fut.result()
                    if worker_src != src:
                        raise SweepError(f"worker {worker} runs other theory_check code (source hash {worker_src}, "
                                         f"here {src}); its rows are refused: install the same version on every "
                                         "worker and rerun")
                    yield futs[fut], row
            except SweepError:
                raise
            except Exception as exc:        # noqa: BLE001 -- distributed's faults: one line, the rows are kept
                raise SweepError(f"the Dask cluster failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                 "finished runs are kept, rerun to resume") from None
        return
    if jobs == 1:
        for k, s in pending:
            yield k, runs.evaluate(s)
        return
    # spawn, not fork: forking a process whose Numba (OpenMP) threads have run is unsafe.
    # The longest runs go first, so that no worker is left with a long run at the end.
    ctx = multiprocessing.get_context("spawn")
    pending = sorted(pending, key=lambda ks: -runs.cost(ks[1]))
    pool = cf.ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(os.getpid(),), mp_context=ctx)
    done = False
    try:
        # the workers are spawned by the submits: the one-thread environment must be in place then
        # (outside it each worker ran two Numba and two BLAS threads on two cores: 2.5x slower)
        with _child_environment(_ONE_THREAD):
            futs = {pool.submit(runs.evaluate, s): k for k, s in pending}
        for fut in cf.as_completed(futs):
            yield futs[fut], fut.result()
        done = True
    except cf.process.BrokenProcessPool:
        raise SweepError("a worker process died (killed by the system, e.g. out of memory); finished runs are "
                         "kept, rerun to resume (with fewer --jobs if memory is short)") from None
    finally:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=done, cancel_futures=True)
        for p in procs:             # interrupted: do not wait for runs in progress
            if p.is_alive():
                p.terminate()


def evaluate_on_worker(spec):
    """(the worker's source_hash, its address, runs.evaluate(spec)): a Dask task that says which
    code computed the row, so that the client refuses a worker whose theory_check differs."""
    try:
        from distributed import get_worker
        where = get_worker().address
    except (ImportError, ValueError):
        where = f"pid {os.getpid()}"
    return source_hash(), where, runs.evaluate(spec)


def run_study(path: str | os.PathLike, out: str | os.PathLike, jobs: int | None = None, executor: str = "local",
              scheduler: str | None = None, quick: bool = False, progress: bool = True) -> pd.DataFrame:
    """Run every pending spec of a study, then write <out>/<name>.csv. Returns the DataFrame."""
    if executor not in ("local", "dask"):
        raise ValueError(f"executor must be 'local' or 'dask', got {executor!r}")
    if executor == "dask" and not scheduler:
        raise ValueError("scheduler: --executor dask needs --scheduler ADDRESS")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = cores if jobs is None else jobs
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    jobs = min(jobs, cores)                 # more processes than cores only thrash
    name, _, specs, cfg_hash = load_study(path, quick)
    out = _prepare_out(out, name)
    rundir = out / "runs" / name
    src, commit = source_hash(), git_commit()
    users = {}                              # a user module's import graph is read once per sweep, not per run
    for s in specs:
        if s["sampler"] not in users:
            users[s["sampler"]] = user_source_hash(s)
    keys = [run_key(s, src, users[s["sampler"]]) for s in specs]
    with locked(out):
        folder = _RowsFolder(rundir)
        try:
            for tmp in rundir.glob(".tmp-*"):
                if tmp.is_file() or tmp.is_symlink():
                    tmp.unlink()           # left by a killed sweep: never renamed, so never a row
            by_key = dict(zip(keys, specs))
            rows = {k: folder.read(f"{k}.json", k) for k in keys}
            bar = _progress(len(specs), sum(r is not None for r in rows.values()), name, progress)
            failed, unavailable = 0, {}
            try:
                # a row file removed while the sweep ran is recomputed once; gone again, the sweep stops
                for attempt in range(2):
                    pending = [(k, by_key[k]) for k in keys if rows[k] is None]
                    if not pending:
                        break
                    if attempt:
                        bar.total += len(pending)
                    for k, row in _compute(pending, jobs, executor, scheduler):
                        row = dict(row, study=name, run_key=k, config_hash=cfg_hash, version=__version__,
                                   source_hash=src, git_commit=commit, quick=bool(quick))
                        if row["status"] == "unavailable":
                            # a missing optional dependency is this machine's state, not the run's
                            # result: the row goes to the CSV but not to the cache, so installing
                            # the extra and rerunning computes it
                            unavailable[k] = row
                        else:
                            folder.write(f"{k}.json", json.dumps({"row": row, "sha256": _digest(row)}, default=str))
                        failed += row["status"] != "ok"
                        bar.update(1)
                        bar.set_postfix(failed=failed, remaining=bar.total - bar.n)
                    folder.check()
                    rows = {k: unavailable.get(k) or folder.read(f"{k}.json", k) for k in keys}
            finally:
                bar.close()
        finally:
            folder.close()
        lost = [k for k in keys if rows[k] is None]
        if lost:
            raise SweepError(f"out: {len(lost)} row file(s) in {rundir} vanished while the sweep ran (e.g. {lost[0]}.json); "
                             "rerun to recompute them")
        df = pd.DataFrame([rows[k] for k in keys])
        _write(out / f"{name}.csv", df.to_csv(index=False))
    return df


def _write(path, text, dir_fd=None):
    """write_atomic (of path's name inside dir_fd, when given), with a full or failing disk reported
    as a SweepError (nothing half-written)."""
    try:
        write_atomic(pathlib.Path(path).name if dir_fd is not None else path, text, dir_fd)
    except OSError as exc:
        raise SweepError(f"out: cannot write {path} ({exc.strerror or exc}); the sweep stopped, "
                         "finished runs are kept and a rerun resumes") from None


class _LogProgress:
    """Plain progress lines for logs (stderr not a terminal): one a minute at most, and the last."""

    def __init__(self, total, done, name, every=60.0):
        self.total, self.n, self.name, self.every = total, done, name, every
        self.failed, self.last = 0, time.monotonic()

    def update(self, k):
        self.n += k
        if time.monotonic() - self.last >= self.every:
            self._line()

    def set_postfix(self, failed=0, **_):
        self.failed = failed

    def _line(self):
        self.last = time.monotonic()
        print(f"{self.name}: {self.n}/{self.total} runs done, {self.failed} failed", file=sys.stderr, flush=True)

    def close(self):
        pass


def _progress(total, done, name, enabled):
    """A tqdm bar on a terminal; in a log, a plain line a minute (a bar there is noise)."""
    from tqdm import tqdm
    if enabled and not sys.stderr.isatty():
        return _LogProgress(total, done, name)
    return tqdm(total=total, initial=done, desc=name, unit="run", disable=not enabled, leave=False)
