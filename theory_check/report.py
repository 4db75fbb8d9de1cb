"""`reproduce`: every study, then fits, figures, SUMMARY.md and the regression baseline."""

import datetime
import functools
import json
import math
import pathlib
import time

import numpy as np
import pandas as pd

from . import __version__, fits, plots, runs, schedules, search, sweep, targets
from . import samplers as S

__all__ = ["reproduce", "fit", "plot", "summary", "baseline", "load", "is_quick", "study_files", "initial_tv", "BASELINE_SPECS"]

# The repository's studies/ (editable install or source checkout), else ./studies.
STUDIES_DIR = next((d for d in (sweep.PACKAGE_DIR.parent / "studies", pathlib.Path("studies")) if d.is_dir()),
                   sweep.PACKAGE_DIR.parent / "studies")
STUDY_ORDER = ("order", "refinement", "score_error", "robustness", "samplers", "paper_schedule", "epsilon", "dimension", "tightness")

# Regression baseline (SPEC 8): fixed configurations whose TV and KL the tests recompute. Each
# comes at two step counts, so its observed rate is checked too. HEROISM K = 1..4 and the
# production samplers on gmm-aniso (full Jacobian); HEROISM on gmm-iso and the sphere at larger
# d in the structured mode; a point cloud in the full mode; two product targets in the diagonal mode.
BASELINE_SPECS = (
    [dict(target="gmm-aniso", dim=4, K=K, N="K", steps=steps, n=2000, seed=11)
     for K in (1, 2, 3, 4) for steps in (16, 32)]
    + [dict(target="gmm-aniso", dim=4, sampler=name, steps=steps, n=2000, seed=11)
       for name in ("ddim", "dpm2m", "dpm3m", "dpm2s", "unipc", "deis", "ipndm", "heun", "rk4") for steps in (16, 32)]
    + [dict(target="gmm-iso", dim=64, K=3, N="K", steps=steps, n=1000, seed=12, jacobian="structured")
       for steps in (16, 32)]
    + [dict(target="sphere", dim=32, K=2, N="K", steps=steps, n=1000, seed=13, jacobian="structured")
       for steps in (16, 32)]
    + [dict(target="circle", dim=2, K=4, N="K", steps=steps, n=2000, seed=14, jacobian="full") for steps in (32, 64)]
    + [dict(target="uniform-cube", dim=256, K=3, N="K", steps=steps, n=1000, seed=15, jacobian="diagonal")
       for steps in (16, 32)]
    + [dict(target="product-gmm", dim=64, sampler="dpm3m", steps=steps, n=1000, seed=16, jacobian="diagonal")
       for steps in (16, 32)])


def study_files(studies_dir=None):
    """The study TOML files of a folder (default: the repository's studies/), built-in ones in
    dependency order first."""
    d = pathlib.Path(studies_dir) if studies_dir else STUDIES_DIR
    files = {p.stem: p for p in d.glob("*.toml")}
    if not files:
        raise ValueError(f"studies: no *.toml study files in {d}")
    return [files[s] for s in STUDY_ORDER if s in files] + [p for s, p in sorted(files.items()) if s not in STUDY_ORDER]


def load(out):
    """{study name: rows} for every study CSV in `out` (the files `run` writes: they have the
    columns study and status; derived tables such as exponents.csv do not)."""
    out = pathlib.Path(out)
    if not out.is_dir():
        raise ValueError(f"dir: no folder {str(out)!r}; give the output folder of `run` or `reproduce` "
                         "(e.g. results, results-quick or the --out you gave)")
    frames = {}
    for p in sorted(out.glob("*.csv")):
        try:
            head = pd.read_csv(p, nrows=0).columns
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue
        if {"study", "status"} <= set(head):
            frames[p.stem] = pd.read_csv(p)
    if not frames:
        raise ValueError(f"dir: no study CSVs in {str(out)!r} (files written by `run` or `reproduce`)")
    return frames


JSON_COLUMNS = ("target_args", "sampler_args", "search", "score_err_bands")
INT_COLUMNS = ("dim", "target_seed", "steps", "n", "seed", "max_steps", "nfe", "nfe_budget", "steps_min", "nfe_min",
               "score_levels")
BOOL_COLUMNS = ("censored", "quick", "kl_se_reliable")


def load_typed(out, study=None):
    """The rows of a results folder as typed DataFrames (what `theory_check.load` returns).

    Columns the CSV stores as text come back as what they are: target_args, sampler_args,
    search and score_err_bands as dicts and lists, metrics as a list; K as a nullable integer
    (a string column where a study uses K = "log"), N as a string column ("3", "paper"); the
    integer columns as nullable integers (missing where a run has no value), the flags as nullable
    booleans. `study` (a name) returns that study's frame alone.

    >>> import theory_check
    >>> frames = theory_check.load("results")            # doctest: +SKIP
    >>> frames["dimension"].K.dtype, frames["dimension"].target_args.iloc[0]   # doctest: +SKIP
    (Int64Dtype(), {})
    """
    frames = load(out)
    if study is not None:
        if study not in frames:
            raise ValueError(f"study: no study {study!r} in {str(out)!r}; it has {sorted(frames)}")
        return _typed(frames[study])
    return {k: _typed(v) for k, v in frames.items()}


class Args(dict):
    """A parameter table (target_args, sampler_args) as a dict that pandas can group and sort by:
    hashed and ordered by its canonical JSON, so fits and plots take typed frames as they take the
    CSV's text. Treat it as read-only (its hash is its content)."""

    def _key(self):
        return json.dumps(self, sort_keys=True)

    def __hash__(self):
        return hash(self._key())

    def __lt__(self, other):
        return self._key() < (other._key() if isinstance(other, Args) else json.dumps(other, sort_keys=True))


def _typed(df):
    df = df.copy()
    for c in JSON_COLUMNS:
        if c in df:
            df[c] = [_parsed(v) for v in df[c]]
    if "metrics" in df:
        df["metrics"] = [v.split(",") if isinstance(v, str) else v for v in df["metrics"]]
    if "K" in df:
        num = pd.to_numeric(df["K"], errors="coerce")
        df["K"] = num.astype("Int64") if num.notna().sum() == df["K"].notna().sum() else df["K"].astype("string")
    if "N" in df:
        df["N"] = [None if _na(v) else str(int(v)) if isinstance(v, float) else str(v) for v in df["N"]]
        df["N"] = df["N"].astype("string")
    for c in INT_COLUMNS:
        if c in df:
            num = pd.to_numeric(df[c], errors="coerce")
            if ((num.dropna() % 1) == 0).all():
                df[c] = num.astype("Int64")
    for c in BOOL_COLUMNS:
        if c in df:
            df[c] = df[c].map(lambda v: None if _na(v) else str(v).lower() in ("true", "1", "1.0")).astype("boolean")
    return df


def _parsed(v):
    if not isinstance(v, str) or v[:1] not in "[{":
        return None if _na(v) else v
    x = json.loads(v)
    return Args(x) if isinstance(x, dict) else x


def _na(v):
    return v is None or (isinstance(v, float) and v != v)


def is_quick(frames):
    """True when any row was computed with --quick."""
    return any("quick" in df and df["quick"].fillna(False).astype(bool).any() for df in frames.values())


def fit(out):
    """Fit the studies of a folder and write the tables beside them: exponents.csv, orders.csv,
    refinement_fit.csv, score_error_fit.csv, tightness_fit.csv for the built-in studies, <study>_fit.csv (orders per
    configuration, `fits.generic_table`) for any other. Returns {table name: DataFrame}."""
    out = pathlib.Path(out)
    f = load(out)
    tables = {}
    if "order" in f:
        tables["orders"] = fits.order_table(f["order"])
    if "dimension" in f or "epsilon" in f:
        tables["exponents"] = fits.exponent_table(f.get("dimension"), f.get("epsilon"), tables.get("orders"))
    if "tightness" in f:
        tables["tightness_fit"] = fits.exponent_table(f["tightness"])
    if "refinement" in f:
        tables["refinement_fit"] = fits.refinement_table(f["refinement"])
    if "score_error" in f:
        tables["score_error_fit"] = fits.score_error_table(f["score_error"])
    if "robustness" in f:
        tables["robustness_fit"] = fits.robustness_table(f["robustness"])
    for name, df in f.items():
        if name not in plots.FIGURES:
            tables[f"{name}_fit"] = fits.generic_table(df)
    for name, t in tables.items():
        sweep.write_atomic(out / f"{name}.csv", t.to_csv(index=False))
    return tables


def plot(out):
    """Draw every study's figure into `out` (built-in studies their own, any other the generic
    error-vs-NFE figure); returns the paths."""
    out = pathlib.Path(out)
    frames = load(out)
    quick = is_quick(frames)
    written = []
    for name, df in frames.items():
        path = out / f"{name}.png"
        if name == "paper_schedule":
            plots.paper_schedule(df, path, quick, start_tv=_start_tvs(df))
        else:
            plots.figure_for(name)(df, path, quick)
        written.append(path)
    return written


def _start_tvs(df):
    first = df.iloc[0]
    return {int(T) + 1: initial_tv(first.target, int(first.dim), int(first.target_seed), int(T) + 1)
            for T in sorted(df.steps.unique())}


def baseline(out, jobs=1):
    """Compute TV and KL at `BASELINE_SPECS` and write <out>/baseline.json, which
    tests/test_regression.py recomputes; returns the document."""
    rows = [runs.evaluate(runs.normalise(dict(s, metrics=["tv", "kl"]))) for s in BASELINE_SPECS]
    failed = [r["error"] for r in rows if r["status"] != "ok"]
    if failed:
        raise ValueError(f"baseline: a baseline configuration failed: {failed[0]}")
    entries = [dict(spec=s, tv=r["tv"], tv_se=r["tv_se"], kl=r["kl"], kl_se=r["kl_se"], nfe=r["nfe"],
                    jacobian=r["jacobian"]) for s, r in zip(BASELINE_SPECS, rows)]
    doc = dict(version=__version__, source_hash=sweep.source_hash(), entries=entries,
               tolerance="|tv - baseline| <= 1e-9 tv and |kl - baseline| <= 1e-9 |kl| + 1e-15 (same seed, same numbers)")
    sweep.write_atomic(pathlib.Path(out) / "baseline.json", json.dumps(doc, indent=1, default=float))
    return doc


@functools.lru_cache(maxsize=64)      # plot() and summary() both need it: 1e5 draws each time otherwise
def initial_tv(name, dim, target_seed, T, n=100_000, seed=0):
    """TV(N(0, I), q_{tau_T}) of the paper's schedule: the error of the Gaussian start by itself."""
    t = targets.make(name, dim, target_seed)
    x = np.random.default_rng(seed).standard_normal((n, dim))
    lw = t.log_density(x, schedules.paper(T)[0]) + 0.5 * (dim * np.log(2 * np.pi) + np.sum(x * x, axis=1))
    return float(np.mean(np.where(lw < 0, -np.expm1(np.minimum(lw, 0)), 0.0)))


def _md_table(header, rows):
    """Markdown table lines (and a blank line after it)."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""])


def _method(m):
    """The interval's method where it is not the default pairs bootstrap (fits.linear_fit)."""
    return f" ({m})" if isinstance(m, str) and not m.startswith("pairs") else ""


def _with_ci(r, metric):
    return (f"{_fmt(r.get(metric + '_order'), '.2f')} [{_fmt(r.get(metric + '_ci_lo'), '.2f')}, "
            f"{_fmt(r.get(metric + '_ci_hi'), '.2f')}]{_method(r.get(metric + '_ci_method'))}")


def _fmt(v, spec=".3g"):
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _num(v):
    """1.0 -> '1', 'paper' -> 'paper' (CSV columns mix numbers and words)."""
    try:
        f = float(v)
        return str(int(f)) if f.is_integer() else str(v)
    except (TypeError, ValueError):
        return str(v)


def _order_cell(r, metric):
    if r.get(metric + "_order") is None or not np.isfinite(r.get(metric + "_order", np.nan)):
        return "not fitted: fewer than 3 resolved points"
    return _with_ci(r, metric)


def _init_text(df):
    inits = sorted(df["init"].unique()) if "init" in df else ["exact"]
    return " and ".join("x_in drawn exactly from q_τ at the first noise level" if i == "exact"
                        else "x_in drawn from N(0, I) (the paper's start)" for i in inits)


def _robustness_section(df, table):
    """The second claim of the theorem: per sampler, each question's slope with its t-interval."""
    fixed = df[df.nfe_budget.isna()] if "nfe_budget" in df else df
    mix = fixed[fixed.target != "rademacher-cube"]
    n = int(mix.n.iloc[0]) if len(mix) else 0
    steps = ", ".join(str(int(v)) for v in sorted(fixed.steps.unique()))
    lines = ["### robustness", "",
             f"{_init_text(df)}; {steps} steps, n = {n} (gmm-aniso, d = 8) and the products' own n. Each entry is the "
             "slope of a log-log fit (weighted by the Monte-Carlo errors, Birge-scaled) with its 95 % t-interval and "
             "degrees of freedom (points − 2); a point counts where it exceeds its floor by 2 se. The claim (Li, Zhou, "
             "Wei & Chen 2025) is TV ≲ (discretisation) + ε_s + ε_J without higher-order smoothness of ŝ: slopes of at "
             "most 1 in ε_s and ε_J, and no growth against ω at fixed ε_J (the smoothness test: there ε = 0.04/ω, so ε_J "
             "is fixed, ε_s shrinks like 1/ω and only the higher derivatives grow; a falling TV is consistent with the "
             "claim, a growing one would contradict it). What it can show: how each sampler's TV responds to errors "
             "of one regularity at one step count; not the constants of the bound.", ""]
    questions = list(dict.fromkeys(table.question))
    samplers = list(dict.fromkeys(table.sampler))

    def cell(r):
        if not np.isfinite(r.slope):
            return "—"
        ci = f" [{r.t_lo:.2f}, {r.t_hi:.2f}], df {int(r.df)}" if np.isfinite(r.t_lo) else f" (df {int(r.df)})"
        return f"{r.slope:.2f}{ci}"
    rows = []
    for smp in samplers:
        sub = table[table.sampler == smp].set_index("question")
        rows.append([smp] + [cell(sub.loc[q]) if q in sub.index else "" for q in questions])
    lines += _md_table(["sampler"] + questions, rows)
    sm = table[table.question.str.startswith("TV vs omega")]
    if len(sm):
        lines += ["Smoothness test (TV at the largest ω over the smallest, ε_J fixed): "
                  + "; ".join(f"{r.sampler} {r.note.split(': ')[-1]} ({r.verdict})" for r in sm.itertuples() if r.note) + ".", ""]
    lines += _learned_section(df)
    return lines


def _learned_section(df):
    """The learned score beside the exact one at equal NFE, and where along tau its error sits."""
    t = fits.learned_table(df)
    if not len(t):
        return []
    le = df[(df["score_field"] == "learned") & (df.status == "ok")]
    lines = ["#### A learned score", "",
             "An MLP (targets.LearnedScore: 3 hidden layers of 128 SiLU units, 3000 Adam steps of denoising score "
             "matching on fresh exact draws, seeded, trained once and cached) in place of the exact score, every sampler "
             "at the same NFE budgets; TV ± se of each, their ratio, and the realised errors at the points the sampler "
             "visited (ε_s = (E|ŝ − s|²)^½, ε_J = (E|∇ŝ − ∇s|_F²)^½). A row is left out where the sampler's first step "
             "already exceeds the budget. What it can show: whether a sampler's advantage on the exact score survives "
             "a realistic estimate on this target (d = 8); not how it scales.", ""]
    rows = [[r.sampler, str(r.nfe), f"{r.tv_exact:.3g} ± {r.tv_exact_se:.1g}", f"{r.tv_learned:.3g} ± {r.tv_learned_se:.1g}",
             f"{r.ratio:.2g}", f"{r.eps_s:.3g}", f"{r.eps_J:.3g}"] for r in t.itertuples()]
    lines += _md_table(["sampler", "NFE", "TV exact score", "TV learned score", "ratio", "ε_s", "ε_J"], rows)
    bands = _learned_bands(le)
    if bands:
        lines += ["The network's error by noise band (the realised errors of the DDIM run at the largest budget, "
                  "per evaluation and sample): " + "; ".join(bands) + ".", ""]
    return lines


def _learned_bands(le):
    ddim = le[le.sampler == "ddim"]
    if not len(ddim) or "score_err_bands" not in ddim:
        return []
    r = ddim.sort_values("nfe_budget").iloc[-1]
    bands = r.score_err_bands
    bands = json.loads(bands) if isinstance(bands, str) else bands
    out = []
    for lo, hi, e2, f2, _ in bands:
        if np.isfinite(e2):
            out.append(f"τ ∈ [{lo:g}, {hi:g}): ε_s {np.sqrt(e2):.3g}, ε_J {np.sqrt(f2):.3g}")
    return out


def _unreliable_kl(frames):
    counts = {name: int((d["kl_se_reliable"] == False).sum()) for name, d in frames.items()  # noqa: E712 -- NaN is not False
              if "kl_se_reliable" in d}
    bad = {k: v for k, v in counts.items() if v}
    if not counts:
        return ""
    return ("; flagged rows: " + ", ".join(f"{k} {v}" for k, v in bad.items())) if bad else "; no row is flagged"


def _failed_section(frames):
    """Every group of failed runs (study, sampler configuration, reason) with its count."""
    lines = []
    for name, df in frames.items():
        bad = df[df.status != "ok"]
        if not len(bad):
            continue
        keys = [k for k in ("target", "dim", "sampler", "K", "N", "nodes", "sweep") if k in bad]
        reason = bad["error"].fillna("").astype(str).str.replace(r"step \d+ \(tau [^)]*\): ", "", regex=True)
        reason = reason.str.replace(r" at sample \d+", "", regex=True)
        g = bad.assign(reason=reason).groupby(keys + ["reason"], dropna=False)
        for vals, sub in g:
            cfg = ", ".join(f"{k}={_num(v)}" for k, v in zip(keys, vals[:-1]) if str(v) not in ("nan", "None"))
            where = ", ".join(f"{int(s)}" for s in sorted(sub["steps"].dropna().unique())) if "steps" in sub else ""
            lines.append(f"| {name} | {cfg} | {len(sub)} | {where} | {vals[-1]} |")
    if not lines:
        return ["## Failed runs", "", "None.", ""]
    return (["## Failed runs", "", "Every failed run, grouped by configuration and reason (a folded map: the "
             "discrete map's Jacobian determinant is ≤ 0 at some sample, so the change of variables fails; the "
             "sampler is too coarse there). Failures are results: they are drawn as crosses in the figures.", "",
             "| study | configuration | runs | at steps | reason |", "|---|---|---|---|---|"] + lines + [""])

FAMILY = {
    "gmm-iso": ("4 isotropic modes (sd 0.2–0.6) on 4 orthogonal mean directions",
                "4 mean directions; the d − 4 others are Gaussian given the mode"),
    "gmm-aniso": ("3 modes, random full covariances (condition 100), means ∝ 1/√d",
                  "3 modes; every direction has a non-unit variance"),
    "rademacher-cube": ("±1 in every coordinate (the 2^d atoms of the cube)", "d (every coordinate)"),
    "uniform-cube": ("uniform on [−1, 1] in every coordinate", "d (every coordinate)"),
    "product-gmm": ("the same 3-mode 1-D mixture in every coordinate", "d (every coordinate)"),
}


def _ci(r, spec=".2f"):
    return f"{_fmt(r.fitted, spec)} [{_fmt(r.ci_lo, spec)}, {_fmt(r.ci_hi, spec)}]{_method(getattr(r, 'ci_method', None))}"


def _exponent_sections(e):
    """The d-exponent and eps-exponent tables (fits.exponent_table), with the theorem's value and
    the second prediction beside each."""
    lines = ["## Exponents of the minimal NFE (TV + 2 se ≤ ε)", "",
             "Theorem (Li, Zhou, Wei & Chen 2025): NFE ≲ d^(1+2/K) ε^(−1/K) up to log factors, an upper bound. "
             "Fitted by weighted least squares on log NFE_min; 95% CI from a pairs bootstrap on 5 points or more, "
             "else a t-interval with its degrees of freedom (n − 2) stated beside it. Verdict against the "
             "theorem: a CI above it by at most 1/ln(x_c) (one power of log at the range's centre) is 'consistent "
             "up to a log factor'. Second prediction, for comparison only: for independent coordinates TV ≈ √d × "
             "(per-coordinate error ∝ h^p), so NFE ∝ d^(1/(2p)) ε^(−1/p), p the order of the configuration.", ""]
    d = e[e.law == "d"]
    if len(d):
        lines += ["### d-exponent b (dimension study)", ""]
        lines += _md_table(["target", "non-Gaussian directions", "K", "N", "b [95% CI]", "χ²_red", "theorem 1 + 2/K",
                            "verdict", "1/(2p)", "vs 1/(2p)", "points", "range"],
                           [[r.target, FAMILY.get(r.target, ("", "—"))[1], _num(r.K), _num(r.N), _ci(r),
                             _fmt(r.chi2_red, ".2g"), f"{r.theory:.2f}", r.verdict, f"{r.prediction:.3f} (p = {_num(r.p)})",
                             r.vs_prediction, r.n_points, r.range] for _, r in d.iterrows()])
        ratio = d.fitted / d.theory
        lines += [f"{len(d)} fits: " + ", ".join(f"{v}: {int((d.verdict == v).sum())}" for v in sorted(d.verdict.unique()))
                  + f"; fitted / theorem from {ratio.min():.2f} to {ratio.max():.2f}; against 1/(2p): "
                  + ", ".join(f"{v}: {int((d.vs_prediction == v).sum())}" for v in sorted(d.vs_prediction.unique())) + ".", ""]
    c = e[e.law == "eps"]
    if len(c):
        lines += ["### ε-exponent c (epsilon study)", "",
                  "p is the configuration's measured TV order from the order study where it has one, else the "
                  "nominal order.", ""]
        lines += _md_table(["target", "K", "N", "c [95% CI]", "χ²_red", "theorem 1/K", "verdict", "p", "1/p",
                            "vs 1/p", "points", "range"],
                           [[r.target, _num(r.K), _num(r.N), _ci(r), _fmt(r.chi2_red, ".2g"), f"{r.theory:.3f}", r.verdict,
                             f"{r.p:.2f} ({r.p_source})", f"{r.prediction:.3f}", r.vs_prediction, r.n_points, r.range]
                            for _, r in c.iterrows()])
    return lines


def _jacobian_modes(sub):
    """The Jacobian modes a family ran with, each with its d range when there are several
    (gmm-iso is full at d = 4, where the structured basis would span the whole space)."""
    modes = {m: g.dim for m, g in sub.groupby("jacobian", sort=False)}
    if len(modes) == 1:
        return next(iter(modes))
    return ", ".join(f"{m} (d {int(v.min())}" + (f"–{int(v.max())})" if v.max() > v.min() else ")")
                     for m, v in sorted(modes.items(), key=lambda kv: kv[1].min()))


def _dimension_section(d):
    cens = d["censored"].astype(bool) | (d.status != "ok")
    lines = ["### dimension", "", f"{_init_text(d)}. Minimal NFE for TV + 2 se ≤ {d.eps.iloc[0]:g} vs d, HEROISM "
             f"with N = K and N = ⌈log T⌉ (products, K ≥ 3); {len(d)} searches, {int(cens.sum())} censored at "
             "max_steps or failed (crosses in the figure). The families:", ""]
    rows = []
    for target, sub in d.groupby("target", sort=False):
        desc, ng = FAMILY.get(target, ("", "—"))
        rows.append([target, desc, ng, f"{int(sub.dim.min())}–{int(sub.dim.max())}", int(sub.n.iloc[0]),
                     _jacobian_modes(sub) if "jacobian" in sub else "—",
                     int((sub.censored.astype(bool) | (sub.status != "ok")).sum())])
    lines += _md_table(["target", "law", "non-Gaussian directions", "d", "n", "Jacobian", "censored"], rows)
    lines += ["What theory predicts besides the theorem's worst case: for the products, TV ≈ √d × per-coordinate "
              "error, so NFE ∝ d^(1/(2p)) (p = 1, 2, 4, 4, 6 for K = 1…5 with N = K); for the mixtures a fixed "
              "number of modes, so the d-dependence comes only from the per-direction error of the Gaussian "
              "directions (at most the same √d). The b table above tests both.", ""]
    return lines


def _censored_bound(df):
    """(b_lower, instance) over the instances of one K: b > log(NFE_cap / NFE(d0)) / log(d / d0)
    for a search censored at d, d0 the instance's smallest uncensored dimension and NFE_cap the
    NFE of max_steps steps; the largest such bound, or None."""
    best = None
    ok = df[(df.status == "ok")]
    for (target, args, tau_min), sub in ok.groupby(["target", "target_args", "tau_min"]):
        done = sub[~sub.censored.astype(bool)].sort_values("dim")
        if not len(done):
            continue
        d0, nfe0 = float(done.dim.iloc[0]), float(done.nfe_min.iloc[0])
        for _, r in sub[sub.censored.astype(bool) & (sub.dim > d0)].iterrows():
            N = r.N if str(r.N) == "paper" else int(float(r.N))
            cap = S.make("heroism", K=int(r.K), N=N, nodes=r.nodes, sweep=r.sweep).nfe(int(r.max_steps))
            b = math.log(cap / nfe0) / math.log(r.dim / d0)
            if best is None or b > best[0]:
                best = (b, f"{plots.instance_text(target, args)}, τ_min {tau_min:g}: NFE {nfe0:.0f} at d = {d0:.0f}, "
                           f"> {cap} at d = {r.dim:.0f}")
    return best


def _tightness_section(df, e):
    lines = ["### tightness", "", f"{_init_text(df)}. The d-exponent b (d = {', '.join(str(int(v)) for v in sorted(df.dim.unique()))}) "
             f"over {df.groupby(['target', 'target_args', 'tau_min']).ngroups} instances: the product families "
             "with data scale / atom spacing (scale), mixture widths (width) and τ_min varied, per K (N = K). "
             f"{len(df)} searches, {int((df.censored.astype(bool) | (df.status != 'ok')).sum())} censored or failed.", ""]
    if e is None or not len(e):
        return lines + ["No exponent could be fitted.", ""]
    rows, ratios, bounds = [], [], []
    for K, sub in e.groupby(e.K.astype(int)):
        fitted = sub[np.isfinite(sub.ci_hi.astype(float))]
        bound = _censored_bound(df[df.K.astype(int) == K])
        if bound is not None:
            bounds.append(f"K = {K}: b > {bound[0]:.2f} ({bound[1]})")
        if not len(fitted):
            rows.append([int(K), f"0 of {len(sub)}", "— (no instance with 3 uncensored dimensions)", "—",
                         f"{sub.theory.iloc[0]:.2f}", "—", "—", "too few points", f"{sub.prediction.iloc[0]:.3f}", "—"])
            continue
        r = fitted.loc[fitted.fitted.idxmax()]
        ratios.append(r.fitted / r.theory)
        rows.append([int(K), f"{len(fitted)} of {len(sub)}", f"{plots.instance_text(r.target, r.target_args)}, τ_min {r.tau_min:g}",
                     _ci(r), f"{r.theory:.2f}", _fmt(r.theory - r.ci_hi, ".2f"), f"{r.fitted / r.theory:.2f}", r.verdict,
                     f"{r.prediction:.3f}", f"{fitted.fitted.median():.2f}"])
    lines += _md_table(["K", "instances fitted", "largest b found at", "b [95% CI]", "theorem 1 + 2/K",
                        "gap (theorem − CI top)", "b / theorem", "verdict", "1/(2p)", "median b"], rows)
    if bounds:
        lines += ["Instances whose larger dimensions were censored (minimal NFE above the search's max_steps) "
                  "have no fit; their smallest uncensored NFE and the censoring level give a lower bound on b, "
                  "largest per K: " + "; ".join(bounds) + ".", ""]
    if not ratios:
        return lines + ["No instance had enough uncensored dimensions for a fit.", ""]
    top = max(ratios)
    lines += [f"The largest exponent found is {top:.2f} of the theorem's value: "
              + ("nothing the probe tried comes near the bound." if top < 0.5 else
                 "the probe came within a factor 2 of the bound." if top < 1 else "the bound is reached.")
              + " The theorem is an upper bound over all targets with bounded support; this probe searches only "
              "products and their shapes, three dimensions per fit and one ε, so it shows how far these families "
              "stay from the bound, not that no target attains it.", ""]
    return lines


def _sampler_name(r):
    if r["sampler"] != "heroism":
        return r["sampler"]
    nodes = "" if _num(r["K"]) in ("2", "3") else f" {r['nodes']}"
    N = "K" if str(r["N"]) in ("nan", "None") else _num(r["N"])      # K = log: N = K
    return f"heroism K={_num(r['K'])} N={N}{nodes} {r['sweep']}"


def _samplers_section(s):
    lines = ["### samplers", "", f"Log-SNR schedule, {_init_text(s)}. At each NFE budget every sampler takes as many "
             "steps as the budget allows. Ranked by TV (lower is better) among all configurations of that target "
             "and budget (failed runs rank last); HEROISM's best configuration and its rank (1 + the number of "
             "production samplers ahead of it):", ""]
    ranks = []
    for (target, dim), c in s.groupby(["target", "dim"], sort=False):
        ok = c[c.status == "ok"]
        nb = c.nfe_budget.nunique()
        lines += [f"**{target}, d = {int(dim)}** (n = {int(c.n.iloc[0])}; {int(c.sampler.ne('heroism').sum() // nb)} "
                  f"production samplers, {int(c.sampler.eq('heroism').sum() // nb)} HEROISM configurations):", "",
                  "| NFE budget | best | TV ± se | runner-up | TV ± se | best HEROISM | TV ± se | its rank | HEROISM runs failed |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for b, sub in ok.groupby("nfe_budget"):
            sub = sub.sort_values("tv").reset_index(drop=True)
            total = int((c.nfe_budget == b).sum())
            names = sub.apply(_sampler_name, axis=1).tolist()
            her = sub[sub.sampler == "heroism"]
            hf = int(((c.nfe_budget == b) & (c.sampler == "heroism") & (c.status != "ok")).sum())
            hcell = (f"{names[her.index[0]]} | {her.tv.iloc[0]:.2e} ± {her.tv_se.iloc[0]:.0e} | {her.index[0] + 1} of {total}"
                     if len(her) else "— | — | all HEROISM runs failed")
            lines.append(f"| {int(b)} | {names[0]} | {sub.tv[0]:.2e} ± {sub.tv_se[0]:.0e} | "
                         f"{names[1] if len(names) > 1 else '—'} | "
                         f"{(f'{sub.tv[1]:.2e} ± {sub.tv_se[1]:.0e}') if len(sub) > 1 else '—'} | {hcell} | {hf} |")
            ranks.append((target, int(b), int(her.index[0]) + 1 if len(her) else None, total))
        lines += ["", f"{int((c.status != 'ok').sum())} runs failed (listed under Failed runs; crosses in the figure).", ""]
    wins = [f"{t} {b} NFE" for t, b, r, n in ranks if r == 1]
    lines += ["HEROISM ranks first at " + (", ".join(wins) if wins else "no budget on any target") + ". Its best rank "
              "per budget (increasing budgets): " + "; ".join(
                  f"{t}: " + ", ".join(f"{r}/{n}" if r else "failed" for tt, b, r, n in ranks if tt == t)
                  for t in dict.fromkeys(x[0] for x in ranks)) + ".", ""]
    return lines


def _paper_schedule_section(p):
    lines = ["### paper_schedule", "", "The paper's schedule (c0 = 2, c1 = 4), N = ⌈log T⌉: TV against q at τ₁ = T⁻², "
             "from the N(0, I) start (as the theorem states it) and from an exact draw of q at τ_T (the discretisation "
             "error alone):", "",
             "| K | start | " + " | ".join(f"T={int(x) + 1}" for x in sorted(p.steps.unique())) + " |",
             "|---|---|" + "---|" * p.steps.nunique()]
    inits = sorted(p.init.unique()) if "init" in p else ["gaussian"]
    for init in inits:
        for K, sub in p[p.init == init].groupby("K"):
            sub = sub.sort_values("steps")
            lines.append(f"| {int(K)} | {'N(0, I)' if init == 'gaussian' else 'exact'} | "
                         + " | ".join(f"{_fmt(v, '.2e')} ± {_fmt(se, '.0e')}" if st == "ok" else "failed"
                                      for v, se, st in zip(sub.tv, sub.tv_se, sub.status)) + " |")
    first = p.iloc[0]
    lines.append("| start TV(N(0,I), q_τT) | — | " + " | ".join(
        _fmt(initial_tv(first.target, int(first.dim), int(first.target_seed), int(T) + 1), ".2e")
        for T in sorted(p.steps.unique())) + " |")
    lines += ["", "The last row is the error of the Gaussian start alone (Monte Carlo, 10⁵ draws, closed-form "
              "densities): where the N(0, I) rows meet it, the start, not the discretisation, limits the accuracy; "
              "the exact-start rows show the discretisation error the start hides.", ""]
    return lines


def _completeness(frames, quick, studies_dir=None):
    """Studies of the folder that was reproduced (default the repository's studies/) whose table
    holds fewer runs than the study file defines (an interrupted sweep), or that have no table."""
    missing = []
    for path in study_files(studies_dir):
        try:
            name, _, specs, _ = sweep.load_study(path, quick)
        except ValueError:
            continue
        have = len(frames[name]) if name in frames else 0
        if have < len(specs):
            missing.append(f"{name}: {have} of {len(specs)} runs" if have else f"{name}: not run")
    if not missing:
        return []
    return ["**Incomplete: " + "; ".join(missing) + ".** `theory-check reproduce` completes them (finished runs "
            "come from its cache); the tables and figures below show the runs that exist.", ""]


def search_cost(row):
    """A minimal-mode row's search cost in steps at the full n: its `search_cost`, or, for rows of
    the bisection (probes [steps, tv, se], all at the full n), the sum of the probed steps."""
    cost = row.get("search_cost")
    if cost is not None and np.isfinite(cost):
        return float(cost)
    try:
        return float(sum(p[0] for p in json.loads(row["search"])))
    except (TypeError, ValueError, KeyError, IndexError):
        return np.nan


def _search_costs(frames):
    """One line per minimal-mode study: the searches' total cost beside the sum of their steps_min."""
    rows = []
    for name, d in frames.items():
        if "search" not in d or "steps_min" not in d:
            continue
        ok = d[(d.status == "ok") & ~d["censored"].astype(bool)]
        if not len(ok):
            continue
        cost = np.array([search_cost(r) for r in ok.to_dict("records")])
        ratio = cost / ok["steps_min"].to_numpy(float)
        rows.append(f"| {name} | {len(ok)} | {np.nansum(cost):.0f} | {ok['steps_min'].sum():.0f} | "
                    f"{np.nansum(cost) / ok['steps_min'].sum():.2f} | {np.nanmedian(ratio):.2f} |")
    if not rows:
        return []
    lines = ["Minimal-NFE searches (uncensored): their cost in steps at the full n beside the sum of their steps_min "
             "(the certificate alone needs about 2: the run at steps_min and the failure just below).", "",
             "| study | searches | cost (steps at full n) | Σ steps_min | ratio | median per search |",
             "|---|---|---|---|---|---|", *rows, ""]
    predicted = {name: _censored_unprobed(d) for name, d in frames.items() if "search" in d and "censored" in d}
    if any(predicted.values()):
        lines += ["**Censored by prediction.** Before 2026-12-02 the search stopped as censored when its power-law "
                  "model put the crossing beyond max_steps, without a run at max_steps (it now probes max_steps "
                  "first); these searches measured no failure at max_steps, and a run there might pass: "
                  + "; ".join(f"{name} {k}" for name, k in predicted.items() if k)
                  + " (left out of the fits, as every censored search).", ""]
    return lines


def full_n_probes(row):
    """{steps: (tv, se)} of a minimal-mode row's probes at the full n: the bisection's [steps, tv, se]
    or the search's [steps, rows, tv, se]; a fold is (nan, nan)."""
    out = {}
    for p in json.loads(row["search"]):
        if len(p) == 3 or p[1] == row["n"]:
            tv, se = p[-2:]
            out[int(p[0])] = (np.nan if tv is None else float(tv), np.nan if se is None else float(se))
    return out


def censored_by_prediction(row):
    """A censored search that measured no failure at max_steps (neither a full-n run there nor a
    prefix that rejected it by 4 se): its censoring is the model's prediction. The search of
    2026-12-02 onwards probes max_steps before it censors; searches made before it could stop so."""
    if not bool(row["censored"]):
        return False
    m = int(row["max_steps"])
    if m in full_n_probes(row):
        return False
    return not any(int(p[0]) == m and search._rejects(p[2], p[3], float(row["eps"]))
                   for p in json.loads(row["search"]) if len(p) == 4)


def _censored_unprobed(d):
    """The number of a study's searches censored by prediction (`censored_by_prediction`)."""
    k = 0
    for r in d[d.status == "ok"].to_dict("records"):
        try:
            k += censored_by_prediction(r)
        except (TypeError, ValueError):
            continue
    return k


def summary(out, quick, elapsed, studies_dir=None):
    """Write <out>/SUMMARY.md from the folder's study CSVs and fits (`elapsed`: seconds of the run;
    `studies_dir` the folder of study files that was run, for the completeness check)."""
    out = pathlib.Path(out)
    f = load(out)
    t = fit(out)
    lines = [f"# theory-check results{' (quick)' if quick else ''}", ""]
    if quick:
        lines += ["> **QUICK RUN (`--quick`): a smoke test of the pipeline in small configurations, not evidence.** "
                  "Sample sizes, step ranges and dimensions are cut; the fitted exponents and orders below are not "
                  "to be cited. The committed `results/` are the full run.", ""]
    lines += [
             f"Regenerated by `theory-check reproduce{' --quick' if quick else ''}` on "
             f"{datetime.date.today().isoformat()}: the runs took {sum(d['wall_time'].sum() for d in f.values()) / 60:.0f} "
             f"core-minutes (sum of their wall times; rows already in the run cache are reused), this invocation "
             f"{elapsed / 60:.1f} min; package {__version__}, "
             f"commit {sweep.git_commit()[:12]}. Do not edit by hand.", ""]
    current = sweep.source_hash()
    by_hash = {}
    for name, d in f.items():
        for h in sorted(d["source_hash"].dropna().astype(str).unique()) if "source_hash" in d else ["unknown"]:
            by_hash.setdefault(h, []).append(name)
    if set(by_hash) == {current}:
        lines += [f"Every row was computed by the current code (numerics source hash {current}).", ""]
    else:
        lines += ["**Provenance: not every study was recomputed by the current code.** Numerics source hash of the "
                  f"current code: {current}. Rows by hash: "
                  + "; ".join(f"{h}: {', '.join(names)}" for h, names in sorted(by_hash.items()))
                  + ". `theory-check reproduce` recomputes the studies whose hash differs (the others come from its "
                    "run cache).", ""]
    lines += _completeness(f, quick, studies_dir)
    lines += _search_costs(f)
    n_runs = sum(len(d) for d in f.values())
    n_failed = sum(int((d.status != "ok").sum()) for d in f.values())
    lines += ["## How to read these numbers", "",
              "- **TV and KL** are of the sampler's output law p_out against the exact marginal q at the last noise "
              "level, by the change of variables: x_in is drawn from a known law, log p_out(x_out) = log p_in(x_in) − "
              "log|det ∂x_out/∂x_in| (the exact log-determinant of the discrete map), w = q/p_out, TV = mean((1 − w)₊), "
              "KL = −mean(log w). Both are Monte-Carlo means over the n samples of a run, with standard errors "
              "se = std/√n; TV is resolved (distinguishable from 0) where TV > 3 se. Each row also carries two "
              "diagnostics of the weights: ess = (Σw)²/(nΣw²), and kl_tail, the share of the KL terms' squared "
              "deviations held by the largest one; where it exceeds 20 ln(n)/n (ten times a light-tailed sample's) "
              "the KL's se is flagged unreliable (kl_se_reliable false: heavy-tailed log-weights, one sample decides "
              f"the se){_unreliable_kl(f)}.",
              "- **Pathwise RMS error** = √(mean over samples of |x_out − Φ(x_in)|²), Φ the DOP853 reference flow "
              "(rtol 1e-10); an upper bound on W2(p_out, p_ref).",
              "- **Realised score error** (score_error) = mean over all score evaluations of a run, and over the "
              "samples of each, of |ŝ − s|² at the points the sampler visited.",
              "- **Minimal NFE** = the fewest score evaluations with TV + 2 se ≤ ε at the full n, to 3% (a run at "
              "⌈steps_min/1.03⌉ or fewer steps failed); found by doubling and bisection in rows whose `search` probes "
              "read [steps, tv, se], by the power-law search with prefix rejection (SPEC 12) in rows whose probes "
              "read [steps, rows, tv, se]; a search that exceeds max_steps is censored and left out of fits.",
              "- **Orders** are −slopes of log error vs log NFE; exponents are slopes of log minimal NFE. Both fits "
              "are weighted by the Monte-Carlo standard errors (log TV: se/TV; log NFE_min: the TV's se at the "
              "threshold carried to steps by the local slope of the search, with the search's 3% resolution); 95% "
              "CIs from a pairs bootstrap (2000 resamples) of the weighted fit where it has 5 points or more; on fewer "
              "a bootstrap can only return the slopes through pairs of points, so the t-interval (Birge-scaled, "
              "df = points − 2, stated as '(t, df k)') is given instead; χ²_red > 1 says the points scatter "
              "beyond their Monte-Carlo errors (the power law is only approximate over the range).",
              f"- {n_runs} runs in all, {n_failed} failed (listed under Failed runs).", ""]
    if "exponents" in t and len(t["exponents"]):
        lines += _exponent_sections(t["exponents"])
    lines += ["## What each study measured", ""]
    if "orders" in t:
        o = t["orders"]
        lines += ["### order", "", f"HEROISM on gmm-aniso (d = 4, log-SNR schedule τ from 0.999 to 1e-3); "
                  f"{_init_text(f['order'])}. Measured order = −slope of log error vs log NFE over the last four "
                  "resolved points; expected p = min(N+1, q_K), q_K = K (even) or K+1 (odd) (theory of the "
                  "interpolation; the paper's theorem claims order K).", ""]
        lines += _md_table(["K", "N", "expected p", "order from TV [95% CI]", "order from pathwise error [95% CI]"],
                           [[r.K, r.N, r.expected, _order_cell(r, "tv"), _order_cell(r, "coupling_rmse")]
                            for _, r in o.iterrows()])
    if "dimension" in f:
        lines += _dimension_section(f["dimension"])
    if "tightness" in f:
        lines += _tightness_section(f["tightness"], t.get("tightness_fit"))
    if "epsilon" in f:
        d = f["epsilon"]
        lines += ["### epsilon", "", f"{_init_text(d)}. Minimal NFE vs ε ∈ [{d.eps.min():g}, {d.eps.max():g}] at d = {int(d.dim.iloc[0])}; "
                  f"{int(d['censored'].astype(bool).sum())} of {len(d)} searches censored (K = 1 needs ~1/ε steps). "
                  "Exponents c in the ε table above, beside the theorem's 1/K and 1/p.", ""]
    if "refinement_fit" in t:
        r = t["refinement_fit"]
        lines += ["### refinement", "", f"{_init_text(f['refinement'])}. Smallest N whose pathwise error is within 10% "
                  "of the most refined run (N = 10), against the paper's N = ⌈log T⌉:", ""]
        lines += _md_table(["K", "steps", "N sufficient", "paper's N", "error N=0", "error N=max", "error paper N"],
                           [[int(x.K), int(x.steps), int(x.N_sufficient), int(x.N_paper), _fmt(x.error_N0),
                             _fmt(x.error_at_N_max), _fmt(x.error_paper)] for _, x in r.iterrows()])
        rf = f["refinement"]
        rf = rf[(rf.status == "ok") & (rf.N.astype(str) != "paper")].assign(Ni=lambda d: d.N.astype(int))
        notes = []
        for (K, S), sub in rf.groupby(["K", "steps"]):
            sub = sub.sort_values("Ni")
            i_min = sub["coupling_rmse"].idxmin()
            e_min, n_min, e_last = sub.loc[i_min, "coupling_rmse"], sub.loc[i_min, "Ni"], sub["coupling_rmse"].iloc[-1]
            if e_last > 1.1 * e_min:
                notes.append(f"K = {int(K)}, {int(S)} steps: minimum {e_min:.3g} at N = {n_min}, {e_last:.3g} at "
                             f"N = {int(sub['Ni'].iloc[-1])} ({e_last / e_min:.2f}×)")
        if notes:
            lines += ["Non-monotone in N: " + "; ".join(notes) + ". The sweeps converge to the fixed point of the "
                      "K-point collocation step, whose error is what remains at large N; a partly refined iterate "
                      "can be closer to the exact flow when its iteration error and the collocation error have "
                      "opposite signs. So the minimum is a cancellation, not a better method: the N = 10 value is "
                      "the converged scheme's error.", ""]
    if "score_error_fit" in t:
        r = t["score_error_fit"]
        lines += ["### score_error", "", f"{_init_text(f['score_error'])}. TV with perturbed scores "
                  "ŝ = s + ε τ^(−1/2) h(x): exact-score floor and the slope of log TV vs log (realised RMS score "
                  "error) where the score error dominates (TV ≥ 3× the floor). Theory: TV grows linearly in the "
                  "score error (slope 1; Li, Zhou, Wei & Chen 2025, the score-error term of the theorem).", ""]
        lines += _md_table(["K", "TV floor (ε = 0)", "slope [95% CI]", "points"],
                           [[int(x.K), _fmt(x.tv_floor), f"{_fmt(x.get('slope'), '.2f')} [{_fmt(x.get('ci_lo'), '.2f')}, "
                             f"{_fmt(x.get('ci_hi'), '.2f')}]", int(x.n_dominated)] for _, x in r.iterrows()])
    if "robustness_fit" in t and len(t["robustness_fit"]):
        lines += _robustness_section(f["robustness"], t["robustness_fit"])
    if "samplers" in f:
        lines += _samplers_section(f["samplers"])
    if "paper_schedule" in f:
        lines += _paper_schedule_section(f["paper_schedule"])
    lines += _failed_section(f)
    lines += ["Figures: " + ", ".join(f"`{n}.png`" for n in sorted(f)) + ". Tidy rows with provenance: `<study>.csv`.", ""]
    sweep.write_atomic(out / "SUMMARY.md", "\n".join(lines))


def reproduce(out="results", quick=False, jobs=None, executor="local", scheduler=None, studies_dir=None, progress=True):
    """Run every study into `out` (resumable: finished runs are reused), then draw the figures,
    write the regression baseline and SUMMARY.md; returns the folder."""
    t0 = time.perf_counter()
    paths = study_files(studies_dir)
    names = {}
    for path in paths:              # two files of one name would write one CSV twice
        name = sweep.load_study(path, quick)[0]
        if name in names:
            raise ValueError(f"studies: {names[name].name} and {path.name} both name their study {name!r} "
                             f"(one CSV, {name}.csv, each); rename one")
        names[name] = path
    for path in paths:
        sweep.run_study(path, out, jobs, executor, scheduler, quick, progress)
    plot(out)
    baseline(out)
    summary(out, quick, time.perf_counter() - t0, studies_dir)
    return pathlib.Path(out)
