"""Command line: `theory-check {reproduce, run, fit, plot, sample, check}`.

Bad input exits with status 2 and one line on stderr naming the parameter.
"""

import argparse
import pathlib
import sys
import time

import numpy as np

from . import __version__, checks, runs, samplers, targets
from .sweep import SweepError


def _check_targets(dim=5, tau=0.1, n=20000):
    """Each named target's score and exact samples against its closed form, as a table."""
    from .targets import NAMES
    rows = []
    for name in NAMES:
        t = targets.make(name, dim, 0)
        rng = np.random.default_rng(0)
        x = t.sample(8, tau, rng)
        h = 1e-3 * np.sqrt(tau)
        fd = np.stack([(t.log_density(x + h * e, tau) - t.log_density(x - h * e, tau)) / (2 * h)
                       for e in np.eye(dim)], axis=1)
        s = t.score(x, tau)
        score_err = np.max(np.linalg.norm(s - fd, axis=1) / np.maximum(np.linalg.norm(s, axis=1), 1 / np.sqrt(tau)))
        xs = t.sample(n, tau, rng)
        mean, cov = t.mean_cov(tau)
        z_mean = np.max(np.abs(xs.mean(0) - mean) / np.sqrt(np.diag(cov) / n))
        rows.append((name, score_err, z_mean))
    print(f"closed-form checks at d = {dim}, tau = {tau}:")
    print(f"{'target':<14}{'score vs FD grad log q (rel)':>30}{'sample mean (max |z|)':>24}")
    for name, e, z in rows:
        print(f"{name:<14}{e:>30.2e}{z:>24.2f}")
    return rows


def _cmd_check(a):
    _check_targets(a.dim)


def _cmd_sample(a):
    mets = [m.strip() for m in a.metrics.split(",") if m.strip()]
    spec = dict(target=a.target, dim=a.dim, sampler=a.sampler, sampler_args=dict(a.sampler_arg or []), K=a.K, N=a.N,
                nodes=a.nodes, sweep=a.sweep, steps=a.steps, n=a.n, seed=a.seed, init=a.init, schedule=a.schedule,
                metrics=mets, w2_method=a.w2_method, score_eps=a.score_eps)
    if samplers.canonical(a.sampler) != "heroism":
        spec.update(K=None, N=None, nodes=None, sweep=None)
    row = runs.evaluate(runs.normalise({k: v for k, v in spec.items() if v is not None}))
    if a.format == "json":
        import json
        print(json.dumps({k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}, default=str))
    elif a.format == "csv":
        import pandas as pd
        print(pd.DataFrame([row]).to_csv(index=False), end="")
    else:
        cols = [("target", "{}"), ("dim", "{}"), ("sampler", "{}"), ("K", "{}"), ("N", "{}"), ("steps", "{}"),
                ("nfe", "{}"), ("tv", "{:.3e}"), ("tv_se", "{:.1e}"), ("kl", "{:.3e}"), ("kl_se", "{:.1e}"),
                ("coupling_rmse", "{:.3e}"), ("w2", "{:.4f}"), ("w2_floor", "{:.4f}"), ("wall_time", "{:.2f}"),
                ("status", "{}")]
        cols = [(c, f) for c, f in cols if c in row and row[c] is not None]
        print("  ".join(f"{c:>12}" for c, _ in cols))
        print("  ".join(f"{f.format(row[c]):>12}" for c, f in cols))
    if row["status"] != "ok":
        print(row["error"], file=sys.stderr)
        return 1


def _cmd_run(a):
    from .sweep import run_study
    df = run_study(a.study, a.out, a.jobs, a.executor, a.scheduler, a.quick, progress=not a.no_progress)
    print(f"{len(df)} rows ({int((df.status != 'ok').sum())} failed) -> {pathlib.Path(a.out) / (df.study.iloc[0] + '.csv')}")


def _cmd_reproduce(a):
    from . import report
    t0 = time.perf_counter()
    if not a.no_check:
        _check_targets()
    out = a.out or ("results-quick" if a.quick else "results")
    out = report.reproduce(out, a.quick, a.jobs, a.executor, a.scheduler, a.studies, progress=not a.no_progress)
    print(f"reproduced in {(time.perf_counter() - t0) / 60:.1f} min -> {out}/ (SUMMARY.md, *.csv, *.png, baseline.json)")


def _cmd_fit(a):
    from . import report
    for name, t in report.fit(a.dir).items():
        print(f"== {name}")
        print(t.to_string(index=False))


def _cmd_plot(a):
    from . import report
    for p in report.plot(a.dir):
        print(p)


def _positive_int(name):
    def conv(v):
        try:
            return checks.integer(int(v), name, minimum=1)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {v!r}") from None
    return conv


def _n_arg(v):
    return v if v == "paper" or not v.lstrip("-").isdigit() else int(v)


def _k_arg(v):
    return v if v == "log" else _positive_int("K")(v)


def _sampler_arg(v):
    """key=value, the value read as a TOML value (number, boolean, quoted string) or else a string."""
    import tomllib
    key, sep, val = v.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"sampler-arg must read key=value, got {v!r}")
    try:
        parsed = tomllib.loads(f"v = {val}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = val
    return key.strip(), parsed


class _Parser(argparse.ArgumentParser):
    """One line on stderr and exit status 2 on bad arguments (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser():
    p = _Parser(prog="theory-check", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    r = sub.add_parser("reproduce", help="run every study, then fits, figures and SUMMARY.md")
    r.add_argument("--quick", action="store_true", help="small configurations (minutes on 2 cores)")
    r.add_argument("--out", default=None, help="output folder (default: results, or results-quick with --quick)")
    r.add_argument("--studies", default=None, help="folder of study TOML files (default: the repository's studies/)")
    r.add_argument("--no-check", action="store_true", help="skip the closed-form target checks")
    for q in (r, sub.add_parser("run", help="run one study TOML file")):
        q.add_argument("--jobs", type=_positive_int("jobs"), default=None, help="worker processes (default: all cores)")
        q.add_argument("--executor", choices=["local", "dask"], default="local")
        q.add_argument("--scheduler", default=None, help="Dask scheduler address (with --executor dask)")
        q.add_argument("--no-progress", action="store_true")
    run = sub.choices["run"]
    run.add_argument("study")
    run.add_argument("--out", default="results")
    run.add_argument("--quick", action="store_true")

    for name, hlp in (("fit", "fit exponents and orders from a results folder"), ("plot", "draw the figures")):
        q = sub.add_parser(name, help=hlp)
        q.add_argument("dir")

    s = sub.add_parser("sample", help="one run: print its errors, NFE and time as a table row")
    s.add_argument("--target", default="gmm-aniso", choices=targets.NAMES)
    s.add_argument("--dim", type=_positive_int("dim"), default=4)
    s.add_argument("--sampler", default="heroism",
                   help="a built-in name or alias (" + ", ".join(samplers.SAMPLER_NAMES) + "; euler, dpmpp_2m, "
                   "unipc, ...) or package.module:attr for your own Sampler subclass or function fn(model, x, sigmas)")
    s.add_argument("--sampler-arg", type=_sampler_arg, action="append", metavar="KEY=VALUE",
                   help="a parameter of the sampler (repeatable), e.g. --sampler-arg order=2")
    s.add_argument("--K", type=_k_arg, default=3)
    s.add_argument("--N", type=_n_arg, default="K")
    s.add_argument("--nodes", default="equispaced", choices=["equispaced", "chebyshev"])
    s.add_argument("--sweep", default="jacobi", choices=["jacobi", "gauss-seidel"])
    s.add_argument("--steps", type=_positive_int("steps"), default=16)
    s.add_argument("--schedule", default="log_snr", choices=list(runs.SCHEDULES))
    s.add_argument("--n", type=_positive_int("n"), default=2000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--init", default="exact", choices=["exact", "gaussian"])
    s.add_argument("--metrics", default="tv,kl")
    s.add_argument("--w2-method", default="sliced", choices=["exact", "sliced"])
    s.add_argument("--score-eps", type=float, default=0.0)
    s.add_argument("--format", default="table", choices=["table", "json", "csv"], help="output format (default: table)")

    b = sub.add_parser("bench", help="benchmarks: ratios measured in one run (from the repository root)")
    b.add_argument("--quick", action="store_true")

    c = sub.add_parser("check", help="closed-form checks of every named target")
    c.add_argument("--dim", type=_positive_int("dim"), default=5)
    return p


def _cmd_bench(a):
    sys.path.insert(0, str(pathlib.Path.cwd()))
    try:
        from benchmarks.bench import main as bench_main
    except ImportError:
        raise ValueError("bench: run from the repository root (benchmarks/ is not installed with the package)") from None
    return bench_main(["--quick"] if a.quick else [])


COMMANDS = {"bench": _cmd_bench, "check": _cmd_check, "sample": _cmd_sample, "run": _cmd_run, "reproduce": _cmd_reproduce,
            "fit": _cmd_fit, "plot": _cmd_plot}


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so that a sweep stops as cleanly as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv=None):
    args = parser().parse_args(argv)
    # like `python -m`: a user's module named as "module:attr" is found in the working directory
    if "" not in sys.path and str(pathlib.Path.cwd()) not in sys.path:
        sys.path.insert(0, str(pathlib.Path.cwd()))
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return COMMANDS[args.cmd](args) or 0
    except (ValueError, SweepError) as exc:
        print(f"theory-check {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:          # a full disk, a read-only folder, ...: one line, no traceback
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"theory-check {args.cmd}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"theory-check {args.cmd}: interrupted; rerun to resume", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"theory-check {args.cmd}: terminated; rerun to resume", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
