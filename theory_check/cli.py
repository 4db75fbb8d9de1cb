"""Command line: `theory-check {reproduce, run, fit, plot, sample, check, bench}` (also
`python -m theory_check`).

Bad input exits with status 2 and one line on stderr naming the parameter.
"""

import argparse
import pathlib
import sys
import time

import numpy as np

from . import __version__, checks, runs, samplers, targets
from .sweep import SweepError

__all__ = ["main", "parser"]


# `check` thresholds: central differences with h = 1e-3 sqrt(tau) have relative error ~h^2 times
# the ratio of third to first derivatives, ~1e-6 on these targets; the sample mean of n exact draws
# is within 4.5 standard errors with probability 1 - 7e-6 per coordinate (Gaussian tails).
CHECK_SCORE_TOL = 1e-5
CHECK_Z_TOL = 4.5


def _check_targets(dim=5, tau=0.1, n=20000):
    """Each named target's score and exact samples against its closed form, as a table; returns
    the rows and whether every check passed."""
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
    print(f"closed-form checks at d = {dim}, tau = {tau}: score against central differences of log q "
          f"(pass: relative error <= {CHECK_SCORE_TOL:g}); mean of {n} exact samples against the closed-form mean "
          f"(pass: max |z| <= {CHECK_Z_TOL})")
    print(f"{'target':<14}{'score vs FD grad log q (rel)':>30}{'sample mean (max |z|)':>24}{'verdict':>10}")
    ok_all = True
    for name, e, z in rows:
        ok = e <= CHECK_SCORE_TOL and z <= CHECK_Z_TOL
        ok_all &= ok
        print(f"{name:<14}{e:>30.2e}{z:>24.2f}{'pass' if ok else 'FAIL':>10}")
    print("all checks passed" if ok_all else "SOME CHECKS FAILED")
    return rows, ok_all


def _cmd_check(a):
    return 0 if _check_targets(a.dim)[1] else 1


def _cmd_sample(a):
    mets = [m.strip() for m in a.metrics.split(",") if m.strip()]
    spec = dict(target=a.target, dim=a.dim, target_seed=a.target_seed, sampler=a.sampler,
                sampler_args=dict(a.sampler_arg or []), target_args=dict(a.target_arg or []), K=a.K, N=a.N, nodes=a.nodes, sweep=a.sweep, steps=a.steps,
                n=a.samples, seed=a.seed, init=a.init, schedule=a.schedule, tau_min=a.tau_min, tau_max=a.tau_max,
                metrics=mets, w2_method=a.w2_method, score_eps=a.score_eps, score_field=a.score_field,
                score_omega=a.score_omega, score_levels=a.score_levels, jacobian=a.jacobian)
    if samplers.canonical(a.sampler) != "heroism":
        given = [f"--{k}" for k in ("K", "N", "nodes", "sweep") if getattr(a, k) is not None]
        if given:
            print(f"theory-check sample: warning: {', '.join(given)} ignored: only HEROISM takes them "
                  f"(use --sampler-arg for {a.sampler}'s parameters)", file=sys.stderr)
        spec.update(K=None, N=None, nodes=None, sweep=None)
    else:
        spec.update(K=3 if a.K is None else a.K, N="K" if a.N is None else a.N, nodes=a.nodes or "equispaced",
                    sweep=a.sweep or "jacobi")
    if a.schedule == "paper" and (a.tau_min is not None or a.tau_max is not None):
        print("theory-check sample: warning: --tau-min/--tau-max ignored: the paper's schedule sets its own end points",
              file=sys.stderr)
    row = runs.evaluate(runs.normalise({k: v for k, v in spec.items() if v is not None}))
    if row["status"] == "ok":
        if "w2" in row and row.get("w2_floor") is not None and row["w2"] <= 1.5 * row["w2_floor"]:
            print(f"theory-check sample: warning: W2 = {row['w2']:.4g} is within the noise floor {row['w2_floor']:.4g} "
                  "of two exact sample sets of this size: it does not resolve the sampler's error", file=sys.stderr)
        if "kl" in row and row.get("kl_se") is not None and abs(row["kl"]) <= 2 * row["kl_se"]:
            print(f"theory-check sample: warning: KL = {row['kl']:.3g} is within 2 se ({row['kl_se']:.2g}) of 0: "
                  "not resolved at this sample size", file=sys.stderr)
        if row.get("kl_se_reliable") is False:
            print(f"theory-check sample: warning: the log-weights are heavy-tailed (one sample carries "
                  f"{row['kl_tail']:.0%} of the KL terms' variance; effective sample size {row['ess']:.0%} of n): "
                  "the KL's standard error is not reliable", file=sys.stderr)
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


DEFAULT_RUN_OUT = "theory-check-out"


def _cmd_run(a):
    from .sweep import run_study
    out = a.out or DEFAULT_RUN_OUT
    df = run_study(a.study, out, a.jobs, a.executor, a.scheduler, a.quick, progress=not a.no_progress)
    failed = int((df.status != "ok").sum())
    print(f"{df.study.iloc[0]}: {len(df)} runs, {failed} failed -> {pathlib.Path(out) / (df.study.iloc[0] + '.csv')}"
          + (" (failed runs: status and error columns)" if failed else ""))


def _cmd_reproduce(a):
    from . import report
    t0 = time.perf_counter()
    if not a.no_check:
        _check_targets()
    out = a.out or ("results-quick" if a.quick else "results")
    out = report.reproduce(out, a.quick, a.jobs, a.executor, a.scheduler, a.studies, progress=not a.no_progress)
    frames = report.load(out)
    counts = ", ".join(f"{name} {int((df.status != 'ok').sum())}/{len(df)}" for name, df in frames.items())
    print(f"reproduced in {(time.perf_counter() - t0) / 60:.1f} min -> {out}/ (SUMMARY.md, *.csv, *.png, baseline.json); "
          f"failed runs per study: {counts}" + _failed_note(frames))


def _failed_note(frames):
    """What the count of failed runs means, said where the count is printed (only when there are some)."""
    if not any((df.status != "ok").any() for df in frames.values()):
        return ""
    return ("\nfailed runs are results, not errors: a sampler whose map folds or goes non-finite at a small "
            "step count or a large score error is recorded as failed (the row's error column says at which step "
            "and tau); SUMMARY.md lists them under 'Failed runs'")


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


def _key_value(what):
    def parse(v):
        """key=value, the value read as a TOML value (number, boolean, quoted string) or else a string."""
        import tomllib
        key, sep, val = v.partition("=")
        if not sep or not key.strip().isidentifier():
            raise argparse.ArgumentTypeError(f"{what} must read key=value, got {v!r}")
        try:
            parsed = tomllib.loads(f"v = {val}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = val
        return key.strip(), parsed
    return parse


class _Parser(argparse.ArgumentParser):
    """One line on stderr and exit status 2 on bad arguments (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults appended once: not where the help text states its own (options whose default None
    means "the value the text names")."""

    def _get_help_string(self, action):
        if action.default is None or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def parser():
    """The argparse parser of `theory-check` (every option with help and its default)."""
    fmt = dict(formatter_class=_Help)
    p = _Parser(prog="theory-check", description="Numerical verification of fast diffusion samplers (HEROISM et al.)", **fmt)
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser, metavar="COMMAND")

    r = sub.add_parser("reproduce", help="run every study, then fits, figures, SUMMARY.md and the regression baseline",
                       **fmt)
    r.add_argument("--quick", action="store_true", help="small configurations (minutes on 2 cores): a smoke test")
    r.add_argument("--out", default=None, help="output folder (default: results, or results-quick with --quick)")
    r.add_argument("--studies", default=None, help="folder of study TOML files (default: the repository's studies/)")
    r.add_argument("--no-check", action="store_true", help="skip the closed-form target checks")
    run = sub.add_parser("run", help="run one study TOML file: one CSV row per run, resumable", **fmt)
    for q in (r, run):
        q.add_argument("--jobs", type=_positive_int("jobs"), default=None,
                       help="worker processes (default: the cores; more are clamped to the cores)")
        q.add_argument("--executor", choices=["local", "dask"], default="local", help="where runs execute")
        q.add_argument("--scheduler", default=None, help="Dask scheduler address (with --executor dask)")
        q.add_argument("--no-progress", action="store_true", help="no progress bar (bars show only on a terminal)")
    run.add_argument("study", help="the study file (TOML)")
    run.add_argument("--out", default=None, help=f"output folder (default: {DEFAULT_RUN_OUT}; the committed results/ "
                                                 "only when given)")
    run.add_argument("--quick", action="store_true", help="apply the study's [quick] overrides")

    for name, hlp in (("fit", "fit exponents and orders from a results folder (any study's CSV)"),
                      ("plot", "draw the figures of a results folder (any study's CSV)")):
        q = sub.add_parser(name, help=hlp, **fmt)
        q.add_argument("dir", help="the output folder of run or reproduce")

    s = sub.add_parser("sample", help="one run: print its errors, NFE and time", **fmt)
    s.add_argument("--target", default="gmm-aniso", type=targets.canonical, choices=targets.NAMES,
                   help="named benchmark target ('_' and '-' alike)")
    s.add_argument("--dim", type=_positive_int("dim"), default=4, help="dimension d")
    s.add_argument("--target-seed", type=int, default=0, help="seed of the target instance")
    s.add_argument("--sampler", default="heroism",
                   help="a built-in name or alias (" + ", ".join(samplers.SAMPLER_NAMES) + "; euler, dpmpp_2m, "
                   "unipc, ...) or package.module:attr for your own Sampler subclass or function fn(model, x, sigmas)")
    s.add_argument("--target-arg", type=_key_value("target-arg"), action="append", metavar="KEY=VALUE",
                   help="a shape parameter of a product target (repeatable), e.g. --target-arg scale=2")
    s.add_argument("--sampler-arg", type=_key_value("sampler-arg"), action="append", metavar="KEY=VALUE",
                   help="a parameter of the sampler (repeatable), e.g. --sampler-arg order=2")
    s.add_argument("--K", type=_k_arg, default=None, help="HEROISM: interpolation points per step, or 'log' (default 3)")
    s.add_argument("--N", type=_n_arg, default=None,
                   help="HEROISM: refinement sweeps, an integer, 'paper' or an expression in K (default K)")
    s.add_argument("--nodes", default=None, choices=["equispaced", "chebyshev"],
                   help="HEROISM: node set (default equispaced)")
    s.add_argument("--sweep", default=None, choices=["jacobi", "gauss-seidel"], help="HEROISM: sweep (default jacobi)")
    s.add_argument("--steps", type=_positive_int("steps"), default=16, help="steps of the schedule")
    s.add_argument("--schedule", default="log_snr", choices=list(runs.SCHEDULES) + ["karras"],
                   help="noise-level schedule (karras = edm)")
    s.add_argument("--tau-min", type=float, default=None, help="last noise level (default 1e-3)")
    s.add_argument("--tau-max", type=float, default=None, help="first noise level (default 0.999)")
    s.add_argument("--samples", "-n", dest="samples", type=_positive_int("samples"), default=2000,
                   help="number of samples n")
    s.add_argument("--seed", type=int, default=0, help="seed of the initial samples")
    s.add_argument("--init", default="exact", choices=["exact", "gaussian"],
                   help="initial law: q at tau_max exactly, or N(0, I)")
    s.add_argument("--metrics", default="tv,kl", help="comma-separated: tv, kl, coupling, w2")
    s.add_argument("--jacobian", default="auto", choices=list(runs.JACOBIANS),
                   help="derivative mode for TV and KL (auto: diagonal for product targets, structured where "
                        "the target allows it, else full)")
    s.add_argument("--w2-method", default="sliced", choices=["exact", "sliced"], help="W2 estimator (POT)")
    s.add_argument("--score-eps", type=float, default=0.0, help="size of the score error (0: exact score)")
    s.add_argument("--score-field", default="smooth", choices=list(targets.FIELDS),
                   help="the score error's field: smooth (tanh features), fourier (rough in x), quantised (rough in tau), "
                        "learned (an MLP trained by denoising score matching; needs torch to train)")
    s.add_argument("--score-omega", type=float, default=1.0, help="fourier: frequency omega of the features")
    s.add_argument("--score-levels", type=_positive_int("score-levels"), default=1000,
                   help="quantised: training levels M (of DDPM's 1000 timesteps)")
    s.add_argument("--format", default="table", choices=["table", "json", "csv"], help="output format")

    b = sub.add_parser("bench", help="benchmarks: ratios measured in one run (from the repository root)", **fmt)
    b.add_argument("--quick", action="store_true", help="smaller sizes")

    c = sub.add_parser("check", help="closed-form checks of every named target; exit 1 if one fails", **fmt)
    c.add_argument("--dim", type=_positive_int("dim"), default=5, help="dimension of the checked instances")
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
    runs.SIGNALLED.append(_Terminated)
    raise _Terminated()


def _on_sigint(signum, frame):
    runs.SIGNALLED.append(KeyboardInterrupt)
    raise KeyboardInterrupt()


def main(argv=None):
    """Run `theory-check` with `argv` (default: sys.argv[1:]); returns the exit status: 0, 1 (a run
    failed or a check did not pass), 2 (bad input, one line on stderr), 130 (Ctrl-C), 143 (SIGTERM)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:                    # `theory-check` alone: the commands, not an error about a missing one
        parser().print_help()
        return 2
    args = parser().parse_args(argv)
    from . import tune_process
    tune_process()
    import signal
    import threading
    previous = previous_int = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:     # an ignored SIGINT stays ignored
            previous_int = signal.signal(signal.SIGINT, _on_sigint)
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
    finally:
        if previous is not None:        # main() called from Python leaves the caller's handlers in place
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
        runs.SIGNALLED.clear()


if __name__ == "__main__":
    sys.exit(main())
