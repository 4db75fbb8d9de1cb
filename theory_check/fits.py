"""Scaling-law fits with bootstrap confidence intervals, and verdicts against the theory.

The theorem (Li, Zhou, Wei & Chen 2025) bounds the score evaluations HEROISM of order K needs
for TV <= eps by ~ d^(1 + 2/K) eps^(-1/K) (up to logs). We fit, per configuration (target, its
shape, tau_min, K, N)::

    log NFE_min = a + b log d                 (dimension and tightness studies, eps fixed)
    log NFE_min = a + c log(1/eps)            (epsilon study, d fixed)

by least squares weighted by the Monte-Carlo standard error of each log NFE_min
(`nfe_min_log_se`), with 95% intervals from a pairs bootstrap (2000 resamples, seeded) on five
points or more and the t-interval (its degrees of freedom stated) on fewer. Verdict per exponent: the interval contains the theory value ->
"consistent with the bound"; lies below it -> "tighter than the bound" (the bound is not
attained here); lies above it by no more than one power of a logarithm could explain ->
"consistent up to a log factor"; above that -> "violates the bound". The bound holds up to log
factors, and log(x) raises a local log-log slope by 1/ln(x), so the allowance is 1/ln(x_c) at
the geometric centre x_c of the fitted range (x = d or 1/eps). Beside the theorem, a second
prediction: for independent coordinates and a method of order p, NFE ~ d^(1/(2p)) eps^(-1/p).
"""

import json

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["linear_fit", "tv_log_se", "nfe_min_log_se", "nfe_min_fit", "compare_prediction", "verdict", "log_allowance", "exponent_table", "expected_order", "order_table", "refinement_table", "score_error_table", "robustness_table", "learned_table", "generic_table"]

N_BOOT = 2000


def plain(df):
    """A results frame in the CSV's plain form: the typed frames of `theory_check.load` (nullable
    Int64, boolean and string columns; dicts and lists in cells) back to floats with NaN, objects
    and JSON text, which is what the fits and figures compute on. Plain frames pass unchanged.

    >>> import pandas as pd
    >>> plain(pd.DataFrame({"K": pd.array([1, None], dtype="Int64")})).K.tolist()
    [1.0, nan]
    """
    if not isinstance(df, pd.DataFrame):
        return df
    out = None
    for c in df.columns:
        col = df[c]
        if isinstance(col.dtype, pd.api.extensions.ExtensionDtype) and not isinstance(col.dtype, pd.CategoricalDtype):
            numeric = pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype)
            if numeric:
                new = col.astype("int64" if pd.api.types.is_integer_dtype(col.dtype) and col.notna().all() else "float64")
            else:
                new = col.astype(object).where(col.notna(), np.nan)
        elif col.dtype == object and col.map(lambda v: isinstance(v, (dict, list))).any():
            new = col.map(lambda v: (",".join(v) if c == "metrics" else json.dumps(v, sort_keys=isinstance(v, dict)))
                          if isinstance(v, (dict, list)) else v)
        else:
            continue
        out = df.copy() if out is None else out
        out[c] = new
    return df if out is None else out


def _takes_frames(fn):
    """Let a table function take typed frames (`plain` on every DataFrame argument)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*[plain(a) for a in args], **{k: plain(v) for k, v in kwargs.items()})
    return wrapper


BOOT_MIN_POINTS = 5         # fewer points: the t-interval is reported, not the pairs bootstrap


def linear_fit(X, y, seed=0, n_boot=N_BOOT, sigma=None):
    """Least squares of y on [1, X] with pairs-bootstrap and t 95% intervals for each slope.

    With `sigma` (the standard errors of y, e.g. Monte-Carlo ones) the fit is weighted by
    1/sigma^2, and the t-interval's covariance (A^T W A)^-1 is scaled by the reduced chi-square
    when it exceeds 1 (Birge ratio: scatter beyond the stated errors widens the interval, a
    better fit than the errors allow never narrows it below them). Returns dict(coef, intercept,
    boot_lo, boot_hi, t_lo, t_hi, n, chi2_red, ci_lo, ci_hi, ci_method): ci_* is the interval to
    report, the bootstrap's from BOOT_MIN_POINTS points on, else the t-interval (ci_method says which).

    >>> f = linear_fit([0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.0], n_boot=200)
    >>> round(float(f["coef"][0]), 6)
    2.0
    """
    X = np.atleast_2d(np.asarray(X, float).T).T
    y = np.asarray(y, float)
    n, p = X.shape
    w = np.ones(n) if sigma is None else 1.0 / np.square(np.asarray(sigma, float))
    if not np.all(np.isfinite(w) & (w > 0)):
        raise ValueError("sigma must be finite and > 0")
    sw = np.sqrt(w)
    A = np.column_stack([np.ones(n), X])
    coef, *_ = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)
    out = dict(coef=coef[1:], intercept=coef[0], n=n, chi2_red=np.nan)
    dof = n - p - 1
    if dof > 0:
        resid = (y - A @ coef) * sw
        chi2 = resid @ resid / dof
        s2 = chi2 if sigma is None else max(1.0, chi2)
        out["chi2_red"] = chi2 if sigma is not None else np.nan
        cov = s2 * np.linalg.pinv((A * w[:, None]).T @ A)
        half = stats.t.ppf(0.975, dof) * np.sqrt(np.diag(cov)[1:])
        out.update(t_lo=coef[1:] - half, t_hi=coef[1:] + half)
    else:
        out.update(t_lo=np.full(p, np.nan), t_hi=np.full(p, np.nan))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        Ab = A[idx]
        if np.linalg.matrix_rank(Ab) < p + 1:     # a resample that cannot identify the slopes
            continue
        boots.append(np.linalg.lstsq(Ab * sw[idx, None], y[idx] * sw[idx], rcond=None)[0][1:])
    if len(boots) >= 100 and dof > 0:
        boots = np.array(boots)
        out.update(boot_lo=np.percentile(boots, 2.5, axis=0), boot_hi=np.percentile(boots, 97.5, axis=0))
    else:
        out.update(boot_lo=np.full(p, np.nan), boot_hi=np.full(p, np.nan))
    # The interval to report: a pairs bootstrap resamples n points, so on fewer than
    # BOOT_MIN_POINTS it can only return the slopes through pairs and triples of them (intervals
    # like [0.138, 0.138] on three points); there the t-interval, whose df says how little it knows.
    if n >= BOOT_MIN_POINTS and np.all(np.isfinite(out["boot_lo"])):
        out.update(ci_lo=out["boot_lo"], ci_hi=out["boot_hi"], ci_method=f"pairs bootstrap, {n} points")
    elif dof > 0:
        out.update(ci_lo=out["t_lo"], ci_hi=out["t_hi"], ci_method=f"t, df {dof}")
    else:
        out.update(ci_lo=out["t_lo"], ci_hi=out["t_hi"], ci_method="none (df 0)")
    return out


@_takes_frames
def tv_log_se(df):
    """Standard error of log TV per row: tv_se / tv (the delta method)."""
    return (df["tv_se"] / df["tv"]).to_numpy(float)


SEARCH_RESOLUTION = 0.03        # runs._minimal brackets steps_min to 3%: sd 0.03/sqrt(12) in log


def nfe_min_fit(x, rows, **kwargs):
    """`linear_fit` of log NFE_min of minimal-mode `rows` on x, weighted by each row's
    `nfe_min_log_se`: the exponent tables' fit (the figures draw the same one)."""
    sig = np.array([nfe_min_log_se(r) for _, r in rows.iterrows()])
    return linear_fit(x, np.log(rows["nfe_min"].to_numpy(float)), sigma=sig, **kwargs)


def nfe_min_log_se(row):
    """Standard error of log NFE_min of a minimal-mode row: the Monte-Carlo error of the TV at the
    threshold carried to steps by the local slope of log TV vs log steps (from the search's
    bracket; 1 when it cannot be read), and the search's 3% resolution, in quadrature."""
    res = SEARCH_RESOLUTION / np.sqrt(12.0)
    try:
        # probes are [steps, rows, tv, se] (the search of SPEC 12) or [steps, tv, se] (the bisection's rows)
        raw = row["search"]
        raw = json.loads(raw) if isinstance(raw, str) else raw          # text in the CSV, a list in typed frames
        probes = [(p[0], p[-2], p[-1], p[1] if len(p) == 4 else None) for p in raw]
        pts = [(s, tv, se) for s, tv, se, rows in probes if tv is not None and np.isfinite(tv) and tv > 0]
        full = [(s, tv, se) for s, tv, se, rows in probes if rows is None or rows == max(r or 0 for *_, r in probes)]
    except (TypeError, ValueError, KeyError, IndexError):
        return res
    hi = [p for p in full if p[0] == row["steps_min"] and p[1] is not None and np.isfinite(p[1]) and p[1] > 0]
    if not hi:
        return res
    s1, tv1, se1 = hi[0]
    below = [p for p in pts if p[0] < s1]
    slope = 1.0
    if below:
        s0, tv0, _ = max(below)
        if tv0 > tv1 and s1 > s0:
            slope = max(np.log(tv0 / tv1) / np.log(s1 / s0), 0.2)
    return float(np.hypot(se1 / tv1 / slope, res))


def verdict(lo, hi, theory, log_allowance=0.0):
    """A fitted exponent's 95% interval [lo, hi] against the theory value (module docstring).

    >>> verdict(0.1, 0.3, 1.5)
    'tighter than the bound'
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "too few points"
    if lo <= theory <= hi:
        return "consistent with the bound"
    if hi < theory:
        return "tighter than the bound"
    return "consistent up to a log factor" if lo <= theory + log_allowance else "violates the bound"


def log_allowance(x):
    """1/ln(x_c), x_c the geometric centre of the range of x (x > 1): how much one power of
    log(x) raises a log-log slope there (inf when x_c <= e).

    >>> round(float(log_allowance([10, 1000])), 4)
    0.2171
    """
    xc = float(np.exp(np.mean(np.log(np.asarray(x, float)))))
    return 1.0 / np.log(xc) if xc > np.e else np.inf


def _minimal_rows(df):
    return df[(df["status"] == "ok") & (~df["censored"].astype(bool)) & df["nfe_min"].notna()]


GROUP_KEYS = ("target", "target_args", "tau_min", "K", "N")


def _groups(df):
    """(key dict, rows) per configuration of a minimal-mode study: the GROUP_KEYS present."""
    keys = [k for k in GROUP_KEYS if k in df]
    d = df.copy()
    for k in keys:
        d[k] = d[k].astype(str)
    for vals, sub in d.groupby(keys, sort=True):
        yield dict(zip(keys, vals if isinstance(vals, tuple) else (vals,))), df.loc[sub.index]


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() else f


def compare_prediction(lo, hi, value):
    """A fitted exponent's 95% interval against a predicted value (not a bound): "consistent",
    "below" or "above" the prediction."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "too few points"
    return "consistent" if lo <= value <= hi else ("below" if hi < value else "above")


@_takes_frames
def exponent_table(dimension=None, epsilon=None, orders=None, min_points=3):
    """One row per configuration (target, target_args, tau_min, K, N) and law: the fitted
    exponent of NFE_min, weighted by the standard error of each log NFE_min (`nfe_min_log_se`),
    its 95% bootstrap and t intervals, the theorem's value (1 + 2/K for d, 1/K for eps) with a
    verdict (`verdict`), and a second prediction with its comparison:

    * law d: 1/(2p), p the nominal order of the configuration (`expected_order`): for independent
      coordinates TV ~ sqrt(d) x the per-coordinate error ~ sqrt(d) h^p, so NFE ~ d^(1/(2p)).
    * law eps: 1/p with p the measured TV order of (K, N) from the order study (`orders`, the
      `order_table`), else the nominal order: TV ~ h^p gives NFE ~ eps^(-1/p).
    """
    out = []
    dim_rows = _minimal_rows(dimension) if dimension is not None else None
    eps_rows = _minimal_rows(epsilon) if epsilon is not None else None
    for law, rows, var in (("d", dim_rows, "dim"), ("eps", eps_rows, "eps")):
        if rows is None or rows.empty:
            continue
        for key, sub in _groups(rows):
            if sub[var].nunique() < min(min_points, 2) or len(sub) < 2:
                continue
            K = int(float(key["K"]))
            x = np.log(sub["dim"]) if law == "d" else np.log(1 / sub["eps"])
            f = nfe_min_fit(x, sub)
            steps_c = float(np.exp(np.mean(np.log(sub["steps_min"]))))
            p_nom = expected_order(K, key.get("N", K), steps_c)
            p, p_src = p_nom, "nominal"
            if law == "eps" and orders is not None and len(orders):
                m = orders[(orders.K.astype(int) == K) & (orders.N.astype(str) == str(key.get("N", K)))]
                if len(m) and np.isfinite(m["tv_order"].iloc[0] if "tv_order" in m else np.nan):
                    p, p_src = float(m["tv_order"].iloc[0]), "measured (order study)"
            theory = 1 + 2 / K if law == "d" else 1 / K
            pred = 1 / (2 * p) if law == "d" else 1 / p
            allow = log_allowance(sub["dim"] if law == "d" else 1 / sub["eps"])
            lo, hi = f["ci_lo"][0], f["ci_hi"][0]
            rng_txt = (f"d {int(sub.dim.min())}-{int(sub.dim.max())}, eps {sub.eps.iloc[0]:g}" if law == "d"
                       else f"eps {sub.eps.min():g}-{sub.eps.max():g}, d {int(sub.dim.iloc[0])}")
            out.append(dict({k: _num(v) for k, v in key.items()}, law=law, exponent="b" if law == "d" else "c",
                            fitted=f["coef"][0], ci_lo=lo, ci_hi=hi, ci_method=f["ci_method"], t_lo=f["t_lo"][0], t_hi=f["t_hi"][0],
                            chi2_red=f["chi2_red"], theory=theory, n_points=f["n"], log_allowance=allow, range=rng_txt,
                            verdict=verdict(lo, hi, theory, allow), p=p, p_source=p_src, prediction=pred,
                            vs_prediction=compare_prediction(lo, hi, pred)))
    return pd.DataFrame(out)


def expected_order(K, N, steps=None):
    """The order HEROISM should show: p = min(N + 1, q_K), q_K = K (even K) or K + 1 (odd K, symmetric
    nodes); N = "paper" uses ceil(log T).

    >>> expected_order(3, 3), expected_order(4, 2), expected_order(2, "paper", steps=64)
    (4, 3, 2)
    """
    K = int(K)
    if K == 1:
        return 1
    if N == "paper" or (isinstance(N, str) and not N.isdigit()):
        N = max(1, int(np.ceil(np.log(steps)))) if steps else 10 ** 6
    return min(int(N) + 1, K if K % 2 == 0 else K + 1)


@_takes_frames
def order_table(df, last=4):
    """Measured convergence orders: -slope of log error vs log NFE over the last `last` resolved
    points (TV resolved: TV > 3 se; coupling: above 1e-10, the reference's accuracy)."""
    out = []
    ok = df[df.status == "ok"]
    for (K, N), sub in ok.groupby(["K", "N"], sort=True):
        sub = sub.sort_values("nfe")
        row = dict(K=int(K), N=N, expected=expected_order(K, N, sub["steps"].max()))
        for metric, mask in (("tv", (sub["tv"] > 3 * sub["tv_se"]) & (sub["tv_se"] > 0)),
                             ("coupling_rmse", sub.get("coupling_rmse", pd.Series(dtype=float)) > 1e-10)):
            if metric not in sub:
                continue
            s = sub[mask].tail(last)
            if len(s) >= 3:
                f = linear_fit(np.log(s["nfe"]), np.log(s[metric]), sigma=tv_log_se(s) if metric == "tv" else None)
                row.update({f"{metric}_order": -f["coef"][0], f"{metric}_ci_lo": -f["ci_hi"][0],
                            f"{metric}_ci_hi": -f["ci_lo"][0], f"{metric}_ci_method": f["ci_method"]})
        out.append(row)
    return pd.DataFrame(out)


@_takes_frames
def refinement_table(df, rel=0.1):
    """Smallest N whose pathwise error is within `rel` of the most-refined run (per K, steps)."""
    out = []
    ok = df[(df.status == "ok") & (df.N != "paper")].copy()
    ok["N"] = ok["N"].astype(int)
    for (K, steps), sub in ok.groupby(["K", "steps"]):
        sub = sub.sort_values("N")
        best = sub["coupling_rmse"].iloc[-1]
        good = sub[sub["coupling_rmse"] <= (1 + rel) * best]
        paper = df[(df.K == K) & (df.steps == steps) & (df.N == "paper") & (df.status == "ok")]
        out.append(dict(K=int(K), steps=int(steps), N_sufficient=int(good["N"].min()),
                        N_paper=max(1, int(np.ceil(np.log(steps)))), error_at_N_max=best,
                        error_N0=sub["coupling_rmse"].iloc[0],
                        error_paper=paper["coupling_rmse"].iloc[0] if len(paper) else np.nan))
    return pd.DataFrame(out)


@_takes_frames
def score_error_table(df):
    """Per K: TV floor without score error, and the slope of log TV vs log sqrt(realised error)
    over the runs where the score error dominates (TV at least 3x the floor)."""
    out = []
    for K, sub in df[df.status == "ok"].groupby("K"):
        floor = sub.loc[sub.score_eps == 0, "tv"]
        floor = float(floor.iloc[0]) if len(floor) else np.nan
        pert = sub[(sub.score_eps > 0) & (sub.tv > 3 * floor)]
        row = dict(K=int(K), tv_floor=floor, n_dominated=len(pert))
        if len(pert) >= 3:
            f = linear_fit(0.5 * np.log(pert["score_err"]), np.log(pert["tv"]))
            row.update(slope=f["coef"][0], ci_lo=f["ci_lo"][0], ci_hi=f["ci_hi"][0], ci_method=f["ci_method"])
        out.append(row)
    return pd.DataFrame(out)


CONFIG_KEYS = ("target", "target_args", "dim", "tau_min", "sampler", "K", "N", "nodes", "sweep", "sampler_args", "score_eps", "init")


@_takes_frames
def generic_table(df, last=4):
    """Any study: per configuration (the keys that vary), the measured order -slope of log error vs
    log NFE over the last `last` resolved points (TV > 3 se, or pathwise error > 1e-10), with a
    95% bootstrap interval; `note` says why an order is missing."""
    keys = [k for k in CONFIG_KEYS if k in df and df[k].nunique() > 1]
    metric = next((m for m in ("tv", "coupling_rmse", "kl") if m in df and df[m].notna().any()), None)
    out = []
    ok = df[df.status == "ok"]
    groups = ok.groupby(keys, dropna=False) if keys else [((), ok)]
    for vals, sub in groups:
        vals = vals if isinstance(vals, tuple) else (vals,)
        row = dict(zip(keys, vals), metric=metric, runs=len(sub),
                   failed=int(((df[keys] == pd.Series(dict(zip(keys, vals)))).all(axis=1) & (df.status != "ok")).sum())
                   if keys else int((df.status != "ok").sum()))
        if metric is None:
            row["note"] = "no error metric in the rows"
        else:
            sub = sub.sort_values("nfe")
            # (TV = 1 with se 0, every sample outside q's mass, is saturated: it carries no slope)
            good = sub[(sub[metric] > 3 * sub["tv_se"]) & (sub["tv_se"] > 0) if metric == "tv" else sub[metric] > 1e-10].tail(last)
            if good["nfe"].nunique() >= 3:
                f = linear_fit(np.log(good["nfe"]), np.log(good[metric]), sigma=tv_log_se(good) if metric == "tv" else None)
                row.update(order=-f["coef"][0], ci_lo=-f["ci_hi"][0], ci_hi=-f["ci_lo"][0], ci_method=f["ci_method"], note="")
            else:
                row["note"] = f"fewer than 3 resolved points ({good['nfe'].nunique()})"
        out.append(row)
    return pd.DataFrame(out)


# -- the robustness study (SPEC 11) ----------------------------------------------------------------

SAMPLER_LABELS = {"ddim": "DDIM", "dpm2m": "DPM-Solver++ 2M", "dpm3m": "DPM-Solver++ 3M", "unipc": "UniPC bh2 p=3"}


def sampler_label(row):
    """HEROISM K=k (with N=n where the sweeps are not N = K), or the production sampler's usual name."""
    if row["sampler"] == "heroism":
        K, N = int(float(row["K"])), row.get("N")
        same = N is None or str(N) in ("K", str(K), f"{K}.0", "nan")
        return f"HEROISM K={K}" + ("" if same else f" N={N}")
    return SAMPLER_LABELS.get(row["sampler"], str(row["sampler"]))


def _t_slope(x, y, sigma=None):
    """(slope, t_lo, t_hi, df) of log y on log x, weighted by the standard errors of log y (Birge
    ratio when the scatter exceeds them); no interval below 3 points (df = n - 2 = 0)."""
    f = linear_fit(np.log(x), np.log(y), n_boot=0, sigma=sigma)
    return float(f["coef"][0]), float(f["t_lo"][0]), float(f["t_hi"][0]), len(x) - 2


@_takes_frames
def robustness_table(df):
    """The robustness study's answers per sampler (SPEC 11), each a log-log slope with its weighted
    t-interval (95 %, df = points - 2): TV - floor vs eps_s (smooth field), TV - floor vs eps_J
    (fourier at fixed eps, omega swept), TV vs omega at fixed eps_J (the smoothness test: the claim
    predicts slope 0), TV vs 1/M (quantised), TV - floor vs d (a product with a fixed per-coordinate
    error). floor = the sampler's TV with the exact score; a point counts where TV - floor > 2 se."""
    ok = df[df.status == "ok"].copy()
    if not len(ok):
        return pd.DataFrame()
    ok["label"] = [sampler_label(r) for r in ok.to_dict("records")]
    field = ok["score_field"].fillna("exact") if "score_field" in ok else pd.Series("exact", index=ok.index)
    ok["field"] = field
    budget = ok["nfe_budget"].astype(float) if "nfe_budget" in ok else pd.Series(np.nan, index=ok.index)
    ok["budget"] = budget
    out = []

    def excess(sub, floor):
        tv, se = sub["tv"].to_numpy(float), np.hypot(sub["tv_se"].to_numpy(float), floor[1])
        keep = tv - floor[0] > 2 * se
        return keep, tv - floor[0], se

    for label, s in ok.groupby("label", sort=False):
        mix = s[(s.target != "rademacher-cube") & s.budget.isna()]          # at fixed steps
        exact = mix[mix.field == "exact"]
        floor = (float(exact.tv.iloc[0]), float(exact.tv_se.iloc[0])) if len(exact) else (0.0, 0.0)
        questions = []
        sm = mix[mix.field == "smooth"].sort_values("score_err")
        questions.append(("TV - floor vs eps_s (smooth)", sm, np.sqrt(sm["score_err"].to_numpy(float)), True, floor))
        at = s[(s.target != "rademacher-cube") & (s.budget == EQUAL_NFE)]
        ex100 = at[at.field == "exact"]
        sm100 = at[at.field == "smooth"].sort_values("score_err")
        if len(sm100):
            questions.append((f"TV - floor vs eps_s (smooth, {EQUAL_NFE} NFE)", sm100,
                              np.sqrt(sm100["score_err"].to_numpy(float)), True,
                              (float(ex100.tv.iloc[0]), float(ex100.tv_se.iloc[0])) if len(ex100) else (0.0, 0.0)))
        fo = mix[(mix.field == "fourier") & np.isclose(mix.score_eps.astype(float), 0.01)].sort_values("score_omega")
        questions.append(("TV - floor vs eps_J (fourier, eps 0.01)", fo, np.sqrt(fo["jac_err"].to_numpy(float)), True, floor))
        fixed = mix[(mix.field == "fourier") & np.isclose(mix.score_eps.astype(float) * mix.score_omega.astype(float), 0.04)]
        fixed = fixed.sort_values("score_omega")
        questions.append(("TV vs omega at fixed eps_J (smoothness)", fixed, fixed["score_omega"].to_numpy(float), False, floor))
        qu = mix[mix.field == "quantised"].sort_values("score_levels", ascending=False)
        questions.append(("TV vs 1/M (quantised)", qu, 1.0 / qu["score_levels"].to_numpy(float), False, floor))
        for name, sub, x, minus_floor, floor in questions:
            row = dict(question=name, sampler=label, points=0, slope=np.nan, t_lo=np.nan, t_hi=np.nan, df=0, note="")
            if len(sub):
                if minus_floor:
                    keep, y, se = excess(sub, floor)
                else:
                    y, se = sub["tv"].to_numpy(float), sub["tv_se"].to_numpy(float)
                    keep = y > 2 * se
                x, y, se = x[keep], y[keep], se[keep]
                row["points"] = len(x)
                if name.startswith("TV vs omega") and len(sub) >= 2:
                    tv = sub["tv"].to_numpy(float)
                    row["note"] = f"TV at the largest omega / smallest: {tv[-1] / tv[0]:.2f}"
                if len(x) >= 2:
                    row["slope"], row["t_lo"], row["t_hi"], row["df"] = _t_slope(x, y, se / y)
                else:
                    row["note"] = (row["note"] + "; " if row["note"] else "") + "fewer than 2 resolved points"
            out.append(row)
        pr = s[(s.target == "rademacher-cube") & s.budget.isna()]
        if len(pr):
            row = dict(question="TV - floor vs d (rademacher-cube, per-coordinate eps fixed)", sampler=label, points=0,
                       slope=np.nan, t_lo=np.nan, t_hi=np.nan, df=0, note="")
            xs, ys, ses = [], [], []
            for d, g in pr.groupby("dim"):
                ex, er = g[g.field == "exact"], g[g.field != "exact"]
                if len(ex) and len(er):
                    y = float(er.tv.iloc[0]) - float(ex.tv.iloc[0])
                    se = float(np.hypot(er.tv_se.iloc[0], ex.tv_se.iloc[0]))
                    if y > 2 * se:
                        xs.append(float(d)), ys.append(y), ses.append(se)
            row["points"] = len(xs)
            if len(xs) >= 2:
                row["slope"], row["t_lo"], row["t_hi"], row["df"] = _t_slope(np.array(xs), np.array(ys),
                                                                             np.array(ses) / np.array(ys))
            else:
                row["note"] = "fewer than 2 resolved points"
            out.append(row)
    t = pd.DataFrame(out)
    t["verdict"] = [_robust_verdict(r) for r in t.to_dict("records")]
    return t


EQUAL_NFE = 100         # the robustness study's equal-budget comparison (studies/robustness.toml)


@_takes_frames
def learned_table(df):
    """The learned score beside the exact one, per sampler and NFE budget (SPEC 11): TV with each,
    their ratio, and the realised eps_s = (E|s_hat - s|^2)^(1/2) and eps_J (Frobenius) at the points
    the sampler visited. Only runs within their budget (HEROISM's first step can cost more)."""
    ok = df[(df.status == "ok") & df.get("nfe_budget", pd.Series(dtype=float)).notna()].copy()
    if not len(ok) or "learned" not in set(ok.get("score_field", pd.Series(dtype=object)).dropna()):
        return pd.DataFrame()
    ok["label"] = [sampler_label(r) for r in ok.to_dict("records")]
    ok["field"] = ok["score_field"].fillna("exact")
    out = []
    for (label, budget), g in ok.groupby(["label", "nfe_budget"], sort=False):
        ex, le = g[g.field == "exact"], g[g.field == "learned"]
        if not len(ex) or not len(le):
            continue
        e, l_ = ex.iloc[0], le.iloc[0]
        if l_.nfe > budget:
            continue
        out.append(dict(sampler=label, nfe_budget=int(budget), nfe=int(l_.nfe), steps=int(l_.steps),
                        tv_exact=float(e.tv), tv_exact_se=float(e.tv_se), tv_learned=float(l_.tv),
                        tv_learned_se=float(l_.tv_se), ratio=float(l_.tv) / float(e.tv),
                        eps_s=float(np.sqrt(l_.score_err)), eps_J=float(np.sqrt(l_.jac_err))))
    t = pd.DataFrame(out)
    if len(t):
        order = {lab: i for i, lab in enumerate(dict.fromkeys(ok.label))}
        t = t.sort_values(["sampler", "nfe_budget"], key=lambda c: c.map(order) if c.name == "sampler" else c)
    return t.reset_index(drop=True)


def _robust_verdict(r):
    if not np.isfinite(r["t_lo"]):
        return "no interval (df 0)" if np.isfinite(r["slope"]) else "not resolved"
    if r["question"].startswith("TV vs omega"):
        return "flat (CI contains 0)" if r["t_lo"] <= 0 <= r["t_hi"] else ("grows" if r["t_lo"] > 0 else "falls")
    if r["question"].startswith("TV - floor vs eps"):
        return "consistent with slope 1" if r["t_lo"] <= 1 <= r["t_hi"] else ("steeper than 1" if r["t_lo"] > 1 else "shallower than 1")
    return ""
