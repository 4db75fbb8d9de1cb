"""Figures in the style of a numerical-analysis paper: log-log axes, fitted slopes and theory
slopes drawn beside the data, symbols and line styles that survive greyscale printing.

Every function takes a study's rows (a DataFrame), draws a `matplotlib.figure.Figure` without
touching pyplot's state or the backend, saves it when a path is given, and returns it. Titles
name the target, d and schedule; a run made with --quick carries a banner; failed runs are
drawn as failures (a cross on the panel's edge), never dropped; an empty panel is not drawn.
"""

import io
import pathlib

import matplotlib.lines
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .fits import CONFIG_KEYS, expected_order, nfe_min_fit, plain

__all__ = ["order", "dimension", "tightness", "epsilon", "refinement", "score_error", "samplers", "paper_schedule", "robustness", "generic",
           "FIGURES", "figure_for", "context"]

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
DODGE = 1.25        # the x shift between series that would coincide (score_error's K): 0.1 decade, a marker's width on 3 decades
RC = {"font.size": 8, "axes.labelsize": 8, "legend.fontsize": 6.5, "axes.titlesize": 8, "axes.grid": True,
      "grid.alpha": 0.3, "lines.markersize": 4.5, "font.family": "serif", "xtick.labelsize": 7, "ytick.labelsize": 7,
      "legend.framealpha": 0.6}
QUICK_BANNER = "QUICK RUN (--quick): a smoke test, not evidence"


def _with_rc(fn):
    """Draw under the module's rc settings, without touching the caller's matplotlib state."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib
        args = [plain(a) for a in args]             # typed frames (theory_check.load) as the CSV's
        with matplotlib.rc_context(RC):
            return fn(*args, **kwargs)
    return wrapper


# Okabe & Ito's colour-blind-safe palette, yellow last (faint on white: used only from the 8th series)
OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442"]


def _style(i):
    """Series i of a figure: a colour of OKABE_ITO and a marker, solid line (dashed and dotted lines
    are kept for guides and floors); from the 9th series on the colours repeat with hollow markers."""
    c = OKABE_ITO[i % len(OKABE_ITO)]
    return dict(marker=MARKERS[i % len(MARKERS)], color=c, linestyle="-",
                markerfacecolor="white" if (i // len(OKABE_ITO)) % 2 else c)


def _figure(ncols, width=4.2, height=3.3):
    import matplotlib
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width * ncols, height), dpi=130)
        axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _fmt_tau(t):
    return f"{t:.3g}"


def context(df):
    """'target, d = ..., schedule' for a title, from the rows."""
    parts = []
    if "target" in df and df.target.nunique():
        parts.append(", ".join(sorted(map(str, df.target.unique()))))
    if "dim" in df and df.dim.nunique():
        dims = sorted(int(v) for v in df.dim.unique())
        parts.append(f"d = {dims[0]}" if len(dims) == 1 else f"d = {dims[0]}–{dims[-1]}")
    if "schedule" in df and df.schedule.nunique() == 1:
        sch = df.schedule.iloc[0]
        if sch == "paper":
            parts.append("paper's schedule (τ₁ = T⁻²)")
        else:
            lo, hi = df.tau_min.min(), df.tau_max.max()
            parts.append(f"{'log-SNR' if sch == 'log_snr' else sch} schedule τ {_fmt_tau(hi)} → {_fmt_tau(lo)}")
    if "init" in df and df.init.nunique() == 1:
        parts.append("start N(0, I)" if df.init.iloc[0] == "gaussian" else "exact start")
    return "; ".join(parts)


def _finish(fig, title, df, quick, path, bottom=0.0, top=0.93):
    """Title with context, the --quick banner, layout within (bottom, top), atomic save.

    The banner goes at the bottom left, where a long title cannot run into it, unless the figure
    keeps its bottom for a legend (bottom > 0): then at the top left on a line of its own, the
    title moved down below it."""
    import matplotlib
    with matplotlib.rc_context(RC):
        banner_on_top = quick and bottom > 0
        drop = 0.3 / fig.get_figheight()            # the banner's line: 0.3 inch, whatever the figure's height
        fig.suptitle(f"{title}\n{context(df)}", fontsize=8, y=0.98 - drop if banner_on_top else 0.98)
        if quick:
            fig.text(0.005, 0.995 if banner_on_top else 0.005, QUICK_BANNER, ha="left",
                     va="top" if banner_on_top else "bottom", fontsize=7, fontweight="bold",
                     bbox=dict(facecolor="white", edgecolor="black", linewidth=0.6))
            if banner_on_top:
                top -= drop
            else:
                bottom = 0.07
        fig.tight_layout(rect=(0, bottom, 1, top))
        if path is not None:
            from .sweep import write_atomic
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            write_atomic(path, buf.getvalue())
    return fig


def _slope_line(ax, x, y, slope, label=None, style="--", color="0.5"):
    """A reference line of the given log-log slope through the geometric centre of the data."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    x0, y0 = np.exp(np.mean(np.log(x))), np.exp(np.mean(np.log(y)))
    xs = np.array([x.min(), x.max()])
    ax.plot(xs, y0 * (xs / x0) ** slope, style, color=color, linewidth=0.8, label=label)


def _failures(ax, df_failed, xcol, label="failed (map folded or non-finite)"):
    """Failed runs as crosses on the top edge of the panel, at their x."""
    if len(df_failed) == 0:
        return
    x = df_failed[xcol].to_numpy(float)
    ax.plot(x, np.full(len(x), 0.97), "x", color="0.0", markersize=6, transform=ax.get_xaxis_transform(),
            clip_on=False, label=f"{label} ({len(x)})")
    # several failures at one x share a cross: their count is written beside it, so none is hidden
    xs, counts = np.unique(x[np.isfinite(x)], return_counts=True)
    for xv, c in zip(xs, counts):
        if c > 1:
            ax.text(xv, 0.97, f" n={c}", transform=ax.get_xaxis_transform(), fontsize=5.5, va="center", ha="left",
                    clip_on=False)


def _plain_ticks(ax, values):
    """Label the x axis at the given values, without overlapping minor log-tick labels."""
    values = sorted(set(int(v) for v in values))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if len(values) > 8:                                  # keep every other label: no overlap
        values = values[::2]
    ax.set_xticks(values)
    ax.set_xticklabels([f"{v}" for v in values])


def _drop_empty(fig, axes, drawn):
    for ax, used in zip(axes, drawn):
        if not used:
            fig.delaxes(ax)


def _n_label(N):
    return str(N)


@_with_rc
def order(df, path=None, quick=False):
    """TV, KL and pathwise error vs NFE for HEROISM with N = K (K = 1 has no sweeps: any N), with
    the expected slopes -p for TV and the pathwise error, -2p for KL (KL ~ error^2), dashed in the
    series' colour a factor 5 below its last four points (so they never hide the data)."""
    K_int = df.K.astype(int)
    ok = df[(df.status == "ok") & ((K_int == 1) | (df.N.astype(str) == K_int.astype(str)))]
    metrics = [("tv", "TV$(p_\\mathrm{out}, q_{\\tau_\\mathrm{end}})$ (> 3 se)", 1),
               ("kl", "KL$(p_\\mathrm{out} \\| q)$ (> 3 se)", 2),
               ("coupling_rmse", "pathwise RMS error $\\sqrt{E|x - \\Phi(x_\\mathrm{in})|^2}$", 1)]
    fig, axes = _figure(3, 3.6, 3.4)
    drawn = []
    for ax, (metric, lab, power) in zip(axes, metrics):
        used = False
        for i, (K, sub) in enumerate(ok.groupby("K")):
            sub = sub.sort_values("nfe")
            if metric not in sub:
                continue
            keep = sub[metric] > (3 * sub[metric + "_se"] if metric + "_se" in sub else 1e-12)
            if metric == "kl" and "kl_se_reliable" in sub:
                # a KL whose se one heavy-tailed sample decides: drawn hollow in grey, not as data
                flag = keep & (sub["kl_se_reliable"] == False)  # noqa: E712 -- rows without the diagnostic are NaN
                if flag.any():
                    seen = "KL se unreliable (heavy-tailed weights)" in ax.get_legend_handles_labels()[1]
                    ax.loglog(sub.nfe[flag], sub.kl[flag], "o", color="0.5", markerfacecolor="white", markersize=4,
                              label=None if seen else "KL se unreliable (heavy-tailed weights)")
                keep &= ~flag
            sub = sub[keep]
            if len(sub) < 2:
                continue
            used = True
            p = expected_order(K, K)
            name = "K=1 (Euler)" if K == 1 else f"K=N={int(K)}"
            ax.loglog(sub["nfe"], sub[metric], label=f"{name} (slope −{power * p})", **_style(i))
            _slope_line(ax, sub["nfe"].tail(4), 0.2 * sub[metric].tail(4), -power * p, None, color=OKABE_ITO[i % 8])
        ax.set_xlabel("score evaluations (NFE)")
        ax.set_ylabel(lab)
        if used:
            ax.legend(loc="lower left")
        drawn.append(used)
    _drop_empty(fig, axes, drawn)
    return _finish(fig, "Convergence of HEROISM, N = K (dashed, ×0.2 below each curve: expected slopes, −p for TV "
                        "and pathwise, −2p for KL; p = min(N+1, q_K); K = 3 and 4 both have p = 4)", df, quick, path)


def _minimal_panels(df, xcol, xlab, theory, title, quick, path, xtransform=lambda v: v):
    ok = df[(df.status == "ok") & (~df["censored"].astype(bool))]
    cens = df[(df.status != "ok") | df["censored"].astype(bool)]
    targets = sorted(df.target.unique())
    fig, axes = _figure(len(targets), 4.2, 4.6)
    for ax, target in zip(axes, targets):
        for i, (K, sub) in enumerate(ok[ok.target == target].groupby("K")):
            x = xtransform(sub[xcol].to_numpy(float))
            order_ = np.argsort(x)
            x, sub = x[order_], sub.iloc[order_]
            st = {k: v for k, v in _style(i).items() if k != "linestyle"}
            label = f"K={int(K)}"
            if len(sub) >= 2:
                f = nfe_min_fit(np.log(x), sub, n_boot=0)      # the exponent table's fit: same slope
                xs = np.array([x.min(), x.max()])
                ax.plot(xs, np.exp(f["intercept"]) * xs ** f["coef"][0], "-", color=OKABE_ITO[i % 8], linewidth=0.9)
                _slope_line(ax, x, sub["nfe_min"], theory(K), None, ":", color=OKABE_ITO[i % 8])
                label += f": fit {f['coef'][0]:.2f}, theory {theory(K):.2f}"
            ax.loglog(x, sub["nfe_min"], linestyle="none", label=label, **st)
        c = cens[cens.target == target]
        if len(c):
            c = c.assign(_x=xtransform(c[xcol].to_numpy(float)))
            _failures(ax, c, "_x", "censored at max_steps or failed")
        ax.plot([], [], "-", color="0.3", label="least-squares fit")
        ax.plot([], [], ":", color="0.5", label="theory slope (through the data)")
        ax.set_title(target)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if xcol == "dim":
            _plain_ticks(ax, df[df.target == target][xcol].unique())
        ax.set_xlabel(xlab)
        ax.set_ylabel("minimal NFE for TV + 2se $\\leq \\varepsilon$")
        # below the panel: inside it the legend covered the points of the small-eps end
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2, fontsize=6.5, frameon=False)
    return _finish(fig, title, df, quick, path)


NON_GAUSSIAN = {"gmm-iso": "4 mean directions", "gmm-aniso": "3 modes, full covariances",
                "rademacher-cube": "d non-Gaussian coordinates", "uniform-cube": "d non-Gaussian coordinates",
                "product-gmm": "d non-Gaussian coordinates"}


def _k_value(K):
    """A K cell as an int, or "log" for the order that grows with the steps."""
    return "log" if str(K) == "log" else int(float(K))


def _is_paper(N):
    return str(N) == "paper"


@_with_rc
def dimension(df, path=None, quick=False):
    """Minimal NFE vs d, one panel per target: per K a marker and grey, N = K filled with a solid
    least-squares line, N = "paper" hollow with a dashed one; the theorem's smallest slope
    (1 + 2/K at the largest K) as a dotted guide; censored searches as crosses."""
    ok = df[(df.status == "ok") & (~df["censored"].astype(bool))]
    cens = df[(df.status != "ok") | df["censored"].astype(bool)]
    targets = [t for t in NON_GAUSSIAN if t in set(df.target)] + sorted(set(df.target) - set(NON_GAUSSIAN))
    ncols = min(3, len(targets))
    nrows = int(np.ceil(len(targets) / ncols))
    import matplotlib
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(4.0 * ncols, 3.2 * nrows + (0.9 if len(targets) == ncols * nrows else 0.4)), dpi=130)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    # K is an integer or "log" (the order grows with the steps): markers by value, "log" last
    Ks = sorted({_k_value(k) for k in ok.K.dropna().unique()}, key=lambda k: (isinstance(k, str), k if isinstance(k, int) else 0)) or [1]
    int_Ks = [k for k in Ks if isinstance(k, int)] or [1]
    for ax, target in zip(axes, targets):
        rows = ok[ok.target == target]
        for K, subK in rows.groupby(rows.K.map(_k_value)):
            i = Ks.index(K)
            for paper, sub in subK.groupby(subK.N.map(_is_paper)):
                sub = sub.sort_values("dim")
                x, y = sub["dim"].to_numpy(float), sub["nfe_min"].to_numpy(float)
                ax.loglog(x, y, linestyle="none", marker=MARKERS[i], color=OKABE_ITO[i % 8],
                          markerfacecolor="white" if paper else OKABE_ITO[i % 8])
                if sub["dim"].nunique() >= 2:
                    f = nfe_min_fit(np.log(x), sub, n_boot=0)     # the exponent table's fit
                    xs = np.array([x.min(), x.max()])
                    ax.plot(xs, np.exp(f["intercept"]) * xs ** f["coef"][0], "--" if paper else "-",
                            color=OKABE_ITO[i % 8], linewidth=0.9)
        if len(rows):
            Kmax = max(int_Ks)
            _slope_line(ax, rows["dim"], rows["nfe_min"], 1 + 2 / Kmax, None, ":", color="0.3")
        c = cens[cens.target == target]
        _failures(ax, c, "dim", "censored or failed")
        ax.set_title(f"{target} ({NON_GAUSSIAN.get(target, '')})")
        _plain_ticks(ax, df[df.target == target]["dim"].unique())
        ax.set_xlabel("dimension $d$")
        ax.set_ylabel("minimal NFE (TV + 2se $\\leq \\varepsilon$)")
    spare = axes[len(targets):]
    for ax in spare[1:]:
        fig.delaxes(ax)
    handles = [matplotlib.lines.Line2D([], [], linestyle="none", marker=MARKERS[i], color=OKABE_ITO[i % 8], label=f"K = {K}")
               for i, K in enumerate(Ks)]
    handles += [matplotlib.lines.Line2D([], [], color="0.2", linestyle="-", marker="o", label="N = K (filled), fit"),
                matplotlib.lines.Line2D([], [], color="0.2", linestyle="--", marker="o", markerfacecolor="white",
                                        label="N = ⌈log T⌉ (hollow), fit"),
                matplotlib.lines.Line2D([], [], color="0.3", linestyle=":",
                                        label=f"theorem's smallest slope 1 + 2/K = {1 + 2 / max(int_Ks):.2f} (K = {max(int_Ks)})"),
                matplotlib.lines.Line2D([], [], color="0.0", linestyle="none", marker="x", label="censored at max_steps or failed")]
    eps = ", ".join(f"{e:g}" for e in sorted(df.eps.unique()))
    title = f"Minimal NFE vs d at ε = {eps}: HEROISM, fitted slopes in SUMMARY (theorem: 1 + 2/K)"
    if len(spare):              # the legend in the free panel
        spare[0].axis("off")
        spare[0].legend(handles=handles, loc="center", fontsize=7, frameon=False)
        return _finish(fig, title, df, quick, path)
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=6.5, frameon=False)
    return _finish(fig, title, df, quick, path, bottom=0.9 / (3.2 * nrows + 0.9) + 0.02, top=0.93)


@_with_rc
def tightness(df, path=None, quick=False):
    """The tightness probe: per K, the fitted d-exponent of every instance (target, shape, tau_min)
    with its 95% interval (fits.linear_fit: bootstrap on 5 points or more, else t), beside the
    theorem's 1 + 2/K and the independent-coordinate prediction 1/(2p); the largest exponent per K
    among the instances with an interval ringed (as SUMMARY's table); fits without an interval
    (2 points, df 0) drawn apart as small crosses, never ringed."""
    from .fits import exponent_table
    e = exponent_table(df)
    fig, axes = _figure(1, 6.4, 4.0)
    ax = axes[0]
    if len(e):
        e = e.assign(Ki=e.K.astype(int), has_ci=np.isfinite(e.ci_lo.astype(float)) & np.isfinite(e.ci_hi.astype(float)))
        groups = list(e.groupby(["target", "target_args"]))
        index = {key: j for j, (key, _) in enumerate(groups)}
        # spread the instances of one K side by side: a slot per (target, shape), tau_min split within it
        e["x"] = e.Ki + [(index[(t, a)] - (len(groups) - 1) / 2) * 0.07 + (0.02 if float(tm) < 1e-4 else -0.02)
                         for t, a, tm in zip(e.target, e.target_args, e.tau_min)]
        for j, ((target, args), sub) in enumerate(groups):
            sub = e[(e.target == target) & (e.target_args == args)]
            colour = OKABE_ITO[j % 8]
            for tm, g in sub.groupby("tau_min"):
                fitted, bare = g[g.has_ci], g[~g.has_ci]
                ax.errorbar(fitted.x, fitted.fitted, yerr=[fitted.fitted - fitted.ci_lo, fitted.ci_hi - fitted.fitted],
                            linestyle="none", marker=MARKERS[j % len(MARKERS)], color=colour, markersize=3.5,
                            elinewidth=0.5, capsize=1.2, markerfacecolor="white" if float(tm) < 1e-4 else colour,
                            label=instance_text(target, args) if tm == sub.tau_min.max() else None)
                if len(bare):
                    ax.plot(bare.x, bare.fitted, "x", color=colour, markersize=3, markeredgewidth=0.6)
        if (~e.has_ci).any():
            ax.plot([], [], "x", color="0.3", markersize=3, label="2 points, no interval (not in SUMMARY's fits)")
        fitted = e[e.has_ci]
        if len(fitted):
            best = fitted.loc[fitted.groupby("Ki").fitted.idxmax()]
            ax.plot(best.x, best.fitted, "o", markersize=11, markerfacecolor="none", color="0.0", markeredgewidth=0.7,
                    label="largest exponent per K (with an interval)")
        Ks = np.arange(e.Ki.min(), e.Ki.max() + 1)
        ax.plot(Ks, 1 + 2 / Ks, "k-", linewidth=1.2, label="theorem 1 + 2/K")
        ax.plot(Ks, [1 / (2 * expected_order(K, K)) for K in Ks], "k--", linewidth=0.8,
                label="independent coordinates 1/(2p)")
        ax.set_xticks(Ks)
    ax.set_xlabel("K (N = K)")
    ax.set_ylabel("fitted exponent b of NFE$_{min}$ ∝ $d^b$\n(95% CI: bootstrap from 5 points, else t)")
    ax.plot([], [], "o", color="0.5", markerfacecolor="white", label="hollow: τ_min = 1e-5, filled: 1e-3")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6)
    return _finish(fig, "Tightness probe: the largest d-exponent found per K", df, quick, path)


def instance_text(target, args):
    """'product-gmm scale 4, width 0.5', or the bare name where every argument is the default."""
    return " ".join(p for p in (target, args_text(args)) if p)


def args_text(args):
    """A target_args cell ('{"scale": 2.0}' or a dict) as 'scale 2'."""
    import json
    try:
        d = json.loads(args) if isinstance(args, str) else dict(args)
    except (TypeError, ValueError):
        return str(args)
    return ", ".join(f"{k} {v:g}" for k, v in d.items())


@_with_rc
def epsilon(df, path=None, quick=False):
    """Minimal NFE vs 1/eps per target and K, with the fit and the theorem's slope 1/K."""
    return _minimal_panels(df, "eps", "$1/\\varepsilon$", lambda K: 1 / K,
                           "Minimal NFE vs 1/ε (theory slope 1/K)", quick, path, lambda e: 1 / e)


@_with_rc
def refinement(df, path=None, quick=False):
    """Pathwise error vs refinement sweeps N per K, one panel per number of steps, with the paper's N."""
    ok = df[(df.status == "ok") & (df.N.astype(str) != "paper")].copy()
    ok["N"] = ok["N"].astype(int)
    steps = sorted(df.steps.unique())
    fig, axes = _figure(len(steps), 4.2, 3.8)
    handles = {}
    for ax, S in zip(axes, steps):
        for i, (K, sub) in enumerate(ok[ok.steps == S].groupby("K")):
            sub = sub.sort_values("N")
            ax.semilogy(sub["N"], sub["coupling_rmse"], label=f"K={int(K)}", **_style(i))
        n_paper = max(1, int(np.ceil(np.log(S))))
        ax.axvline(n_paper, color="0.6", linewidth=0.8, linestyle="--", label="the paper's N = ⌈log T⌉")
        _failures(ax, df[(df.steps == S) & (df.status != "ok") & (df.N.astype(str) != "paper")].astype({"N": int}), "N")
        ax.set_title(f"{int(S)} steps (paper's N = {n_paper})")
        ax.set_xlabel("refinement sweeps $N$")
        ax.set_ylabel("pathwise RMS error")
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    # one legend under the panels: inside, it covered the points beside the paper's N
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=len(handles), frameon=False)
    return _finish(fig, "Error vs refinement sweeps N", df, quick, path, bottom=0.1)


@_with_rc
def score_error(df, path=None, quick=False):
    """TV vs realised RMS score error per K, with the exact-score floors and the theory slope 1."""
    ok = df[(df.status == "ok") & (df.score_eps > 0)]
    fig, axes = _figure(1, 6.6, 3.6)
    ax = axes[0]
    n_k = ok["K"].nunique()
    for i, (K, sub) in enumerate(ok.groupby("K")):
        sub = sub.sort_values("score_err")
        st = _style(i)
        # where the score error dominates, every K gives the same TV (K = 3 and 4 coincide at every
        # ε): each K is drawn shifted by a factor DODGE^(i - centre) in x, hollow, so none hides another
        st.update(markerfacecolor="none", markeredgewidth=1.2, markersize=6)
        shift = DODGE ** (i - (n_k - 1) / 2)
        ax.errorbar(np.sqrt(sub["score_err"]) * shift, sub["tv"], yerr=2 * sub["tv_se"], label=f"K={int(K)}",
                    capsize=1.5, elinewidth=0.6, **st)
        floor = df[(df.K == K) & (df.score_eps == 0) & (df.status == "ok")]["tv"]
        if len(floor):
            ax.axhline(float(floor.iloc[0]), color=st["color"], linewidth=0.7, linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    x = np.sqrt(ok["score_err"])
    if len(x):
        big = x > np.median(x)
        # the guide is drawn 3x above the data it is fitted through, so it never hides them
        _slope_line(ax, x[big], 3 * ok["tv"][big], 1.0, "slope 1 (TV ∝ score error), offset ×3 above the data")
    ax.plot([], [], ":", color="0.4", label="exact-score floor (ε = 0), per K (its colour)")
    ax.set_xlabel("realised RMS score error $(\\overline{E|\\hat s - s|^2})^{1/2}$"
                  f"\n(successive K shifted by ×{DODGE:g} in x, so that coinciding points stay visible)")
    ax.set_ylabel("TV$(p_\\mathrm{out}, q)$ ± 2 se")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6.5, frameon=False)
    return _finish(fig, "Graceful degradation with score error", df, quick, path)


def _sampler_label(r):
    if r["sampler"] != "heroism":
        return {"ddim": "DDIM", "dpm2m": "DPM-Solver++ 2M", "dpm3m": "DPM-Solver++ 3M (released)",
                "dpm3m-taylor": "DPM-Solver++ 3M (taylor, 2S warm-up)", "dpm2s": "DPM-Solver++ 2S",
                "unipc": "UniPC bh2 p=3", "unipc-bh1": "UniPC bh1 p=3", "deis": "DEIS-3 (log-rho)",
                "deis-tab": "DEIS-3 tAB", "ipndm": "iPNDM", "heun": "Heun", "rk4": "RK4"}.get(r["sampler"], r["sampler"])
    sweep = "Jacobi" if r["sweep"] == "jacobi" else "Gauss-Seidel"
    nodes = r["nodes"]
    K = "log" if str(r["K"]) == "log" else int(float(r["K"]))
    if K != "log" and K <= 3:
        nodes = "equispaced = Chebyshev"   # Chebyshev-Lobatto with 2 or 3 nodes are the equispaced nodes
    N = r["N"]
    N = "K" if str(K) == "log" and not isinstance(N, str) and (N is None or N != N) else N
    N = N if str(N) in ("paper", "K") else int(float(N))
    return f"HEROISM K={K} N={N} {nodes} {sweep}"


def _tv_errorbar(ax, sub, **style):
    """TV with 2 se bars; unresolved points (TV <= 3 se) ringed."""
    ax.errorbar(sub["nfe"], sub["tv"], yerr=2 * sub["tv_se"], capsize=1.5, elinewidth=0.6, **style)
    weak = sub[sub["tv"] <= 3 * sub["tv_se"]]
    ax.plot(weak["nfe"], weak["tv"], linestyle="none", marker="o", markersize=8, markerfacecolor="none",
            color="0.0", markeredgewidth=0.5)


HEROISM_N = {"K-1": "^", "K": "s", "paper": "o"}
HEROISM_VARIANT = {("equispaced", "jacobi"): "-", ("equispaced", "gauss-seidel"): "--",
                   ("chebyshev", "jacobi"): ":", ("chebyshev", "gauss-seidel"): "-."}


def _n_kind(r):
    if str(r["N"]) == "paper":
        return "paper"
    K = r["K"]
    if str(K) == "log":
        return "K"
    return "K" if int(float(r["N"])) == int(float(K)) else "K-1"


def _heroism_K_labels(d):
    return sorted({str(k) for k in d.loc[d.sampler == "heroism", "K"].dropna()}, key=lambda k: (k == "log", k))


K_MARKERS = ["P", "X", "*", "h", "p", "8"]


def _k_style(i):
    """HEROISM's K-th series in the samplers figure: the colours of _style, but markers no
    production sampler uses (K = 2 would otherwise be DDIM's black circle)."""
    return dict(_style(i), marker=K_MARKERS[i % len(K_MARKERS)], markersize=6)


def _K_text(K):
    return f"HEROISM K = {K}" + (" (min(12, max(2, ⌈log T⌉)))" if K == "log" else "")


def _budget_axes(ax, case, failed, title):
    """A samplers-study panel's frame: its failed runs counted at their budgets, log axes, labels,
    the budgets as ticks."""
    _failures(ax, failed.assign(nfe=failed["nfe_budget"]), "nfe")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE budget")
    ax.set_ylabel("TV (± 2 se)")
    ax.set_title(title)
    _plain_ticks(ax, case["nfe_budget"].dropna().unique())
    if len(failed):                     # headroom: the crosses at the top edge never sit on a data point
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * (hi / lo) ** 0.15)


@_with_rc
def samplers(df, path=None, quick=False):
    """TV at equal NFE budgets, one row of panels per target. Left: the production samplers and,
    as a thick grey band, the best HEROISM configuration at each budget. Right: per K, the best
    HEROISM configuration (N, nodes, sweep) at each budget, the one a reader would pick. Every
    configuration is in the supplementary figure `samplers_heroism` (written beside `path` as
    <stem>_heroism.png). TV with 2 se bars, ringed where not resolved (TV <= 3 se); failed runs
    are crosses at the top edge, counted per budget."""
    import matplotlib
    d = df.copy()
    d["label"] = d.apply(_sampler_label, axis=1)
    cases = list(d.groupby(["target", "dim"], sort=False))
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(9.6, 3.0 * len(cases) + 1.9), dpi=130)
        axes = fig.subplots(len(cases), 2, squeeze=False)
    Ks = _heroism_K_labels(d)
    for row, ((target, dim), c) in zip(axes, cases):
        ok = c[c.status == "ok"]
        base = ok[ok.sampler != "heroism"]
        her = ok[ok.sampler == "heroism"]
        for i, (name, sub) in enumerate(base.groupby("label", sort=True)):
            _tv_errorbar(row[0], sub.drop_duplicates("nfe").sort_values("nfe"), label=name, **_style(i))
        if len(her):
            best = her.loc[her.groupby("nfe_budget").tv.idxmin()].sort_values("nfe")
            row[0].plot(best["nfe"], best["tv"], "-", color="0.6", linewidth=3.5, alpha=0.6, zorder=0,
                        label="HEROISM: best configuration at each budget")
            for K, sub in her.groupby(her.K.astype(str)):
                i = Ks.index(K)
                bestK = sub.loc[sub.groupby("nfe_budget").tv.idxmin()].drop_duplicates("nfe").sort_values("nfe")
                _tv_errorbar(row[1], bestK, **_k_style(i))
        for ax, who in zip(row, ("production samplers", "HEROISM: best configuration per K")):
            failed = c[(c.status != "ok") & ((c.sampler == "heroism") == (who != "production samplers"))]
            _budget_axes(ax, c, failed, f"{target}, d = {int(dim)}: {who}")
    L = matplotlib.lines.Line2D
    left = {}
    for ax in axes[:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            left.setdefault(lab, h)
    right = [L([], [], label=_K_text(K) + ": its best N, nodes and sweep", **_k_style(i)) for i, K in enumerate(Ks)]
    right += [L([], [], marker="o", markersize=8, markerfacecolor="none", color="0.0", markeredgewidth=0.5, linestyle="none",
                label="ringed: TV ≤ 3 se (not resolved)"),
              L([], [], marker="x", color="0.0", linestyle="none", label="failed (map folded or non-finite), n = count")]
    h = 1.9 / (3.0 * len(cases) + 1.9)
    fig.legend(list(left.values()), list(left.keys()), loc="lower left", bbox_to_anchor=(0.0, 0.01), ncol=2,
               fontsize=5.8, frameon=False)
    fig.legend(handles=right, loc="lower left", bbox_to_anchor=(0.5, 0.01), ncol=1, fontsize=5.8, frameon=False)
    if path is not None and len(d[d.sampler == "heroism"]):
        p = pathlib.Path(path)
        samplers_heroism(df, p.with_name(p.stem + "_heroism.png"), quick)
    return _finish(fig, "Samplers at equal NFE budgets (every HEROISM configuration: samplers_heroism.png)", df, quick,
                   path, bottom=h, top=0.95)


@_with_rc
def samplers_heroism(df, path=None, quick=False):
    """The samplers study's supplementary figure: every HEROISM configuration at each budget, one
    panel per target (colour: K; marker: N; line style: nodes and sweep)."""
    import matplotlib
    d = df[df.sampler == "heroism"].copy()
    cases = list(d.groupby(["target", "dim"], sort=False))
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(4.8 * len(cases), 3.6 + 1.4), dpi=130)
        axes = fig.subplots(1, len(cases), squeeze=False)[0]
    Ks = _heroism_K_labels(d)
    for ax, ((target, dim), c) in zip(axes, cases):
        her = c[c.status == "ok"]
        for (K, nk, nodes, sw), sub in her.groupby([her.K.astype(str), her.apply(_n_kind, axis=1), "nodes", "sweep"]):
            i = Ks.index(K)
            # two budgets can give one configuration the same steps (and run): drawn once
            _tv_errorbar(ax, sub.drop_duplicates("nfe").sort_values("nfe"), color=OKABE_ITO[i % 8], marker=HEROISM_N[nk],
                         linestyle=HEROISM_VARIANT[(nodes, sw)], markerfacecolor="white" if i % 2 else OKABE_ITO[i % 8])
        _budget_axes(ax, c, c[c.status != "ok"], f"{target}, d = {int(dim)}")
    L = matplotlib.lines.Line2D
    handles = [L([], [], color=OKABE_ITO[i % 8], marker="s", linestyle="-", markerfacecolor="white" if i % 2 else OKABE_ITO[i % 8],
                 label=_K_text(K)) for i, K in enumerate(Ks)]
    handles += [L([], [], color="0.3", marker=m, linestyle="none", label=f"N = {'⌈log T⌉' if k == 'paper' else k}")
                for k, m in HEROISM_N.items()]
    handles += [L([], [], color="0.3", linestyle=st, label=f"{n} nodes, {w}" + (" (K ≤ 3: nodes coincide)" if n == "chebyshev" else ""))
                for (n, w), st in HEROISM_VARIANT.items()]
    handles += [L([], [], marker="x", color="0.0", linestyle="none", label="failed, n = count at that budget")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=6, frameon=False)
    return _finish(fig, "Samplers study, supplementary: every HEROISM configuration", df, quick, path, bottom=0.24)


@_with_rc
def paper_schedule(df, path=None, quick=False, start_tv=None):
    """TV vs T on the paper's schedule; `start_tv` {T: TV(N(0, I), q_{tau_T})} draws the floor the
    Gaussian start sets by itself."""
    ok = df[df.status == "ok"]
    fig, axes = _figure(1, 7.6, 3.6)
    ax = axes[0]
    inits = sorted(ok.init.unique()) if "init" in ok else ["gaussian"]
    i = 0
    for init in inits:
        curves = []                      # [(Ks, T, tv)], curves equal within 1% merged into one
        for K, sub in ok[ok.init == init].groupby("K"):
            sub = sub.sort_values("steps")
            T, tv = (sub["steps"] + 1).to_numpy(), sub["tv"].to_numpy()
            for c in curves:
                if len(c[1]) == len(T) and np.all(c[1] == T) and np.all(np.abs(c[2] - tv) <= 0.01 * tv):
                    c[0].append(int(K))
                    break
            else:
                curves.append([[int(K)], T, tv])
        for Ks, T, tv in curves:
            who = f"K={Ks[0]}" if len(Ks) == 1 else " and ".join(f"K={k}" for k in Ks) + " (equal within 1%)"
            ax.loglog(T, tv, label=f"{who}, {'N(0, I)' if init == 'gaussian' else 'exact'} start", **_style(i))
            i += 1
    if start_tv:
        T = sorted(start_tv)
        ax.loglog(T, [start_tv[t] for t in T], "k-", linewidth=6, alpha=0.18, zorder=0,
                  label="TV of the N(0, I) start alone (wide grey band)")
    _failures(ax, df[df.status != "ok"].assign(T=df[df.status != "ok"]["steps"] + 1), "T")
    ax.set_xlabel("$T$ (schedule points)")
    _plain_ticks(ax, sorted(df["steps"].unique() + 1))
    ax.set_ylabel("TV$(p_\\mathrm{out}, q_{\\tau_1})$")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1)    # beside the axes: the curves span them
    return _finish(fig, "The paper's schedule, N = ⌈log T⌉", df, quick, path)


@_with_rc
def generic(df, path=None, quick=False):
    """Any study: the first available error (TV, else pathwise error, else KL) vs NFE, one line per
    configuration (sampler and its parameters, target, d), failures as crosses."""
    metric = next((m for m in ("tv", "coupling_rmse", "kl", "w2") if m in df and df[m].notna().any()), None)
    keys = [k for k in CONFIG_KEYS if k in df and df[k].nunique() > 1]
    fig, axes = _figure(1, 5.6, 3.8)
    ax = axes[0]
    ok = df[df.status == "ok"]
    if metric is not None:
        groups = ok.groupby(keys, dropna=False) if keys else [((), ok)]
        for i, (vals, sub) in enumerate(groups):
            vals = vals if isinstance(vals, tuple) else (vals,)
            # a key that does not apply to this configuration (K of a non-HEROISM sampler: NaN) is left out
            name = ", ".join(f"{k}={_num_text(v)}" for k, v in zip(keys, vals) if not _missing(v)) or str(df["sampler"].iloc[0])
            sub = sub.sort_values("nfe")
            if metric == "tv":
                ax.errorbar(sub["nfe"], sub["tv"], yerr=2 * sub["tv_se"], capsize=1.5, elinewidth=0.6, label=name,
                            **_style(i))
            else:
                ax.plot(sub["nfe"], sub[metric], label=name, **_style(i))
        ax.set_xscale("log")
        ax.set_yscale("log")
    # a failed run may have no NFE: place it at its budget, else at its steps (one cross each, counted)
    bad = df[df.status != "ok"]
    where = pd.Series(np.nan, index=bad.index)
    for col in ("nfe", "nfe_budget", "steps"):
        if col in bad:
            where = where.fillna(pd.to_numeric(bad[col], errors="coerce"))
    _failures(ax, bad.assign(_x=where)[where.notna()], "_x")
    ax.set_xlabel("score evaluations (NFE)")
    ax.set_ylabel({"tv": "TV (± 2 se)", "coupling_rmse": "pathwise RMS error", "kl": "KL", "w2": "W2"}.get(metric, "—"))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=6)
    name = str(df["study"].iloc[0]) if "study" in df and len(df) else "study"
    return _finish(fig, f"{name}: error vs NFE", df, quick, path)


def _missing(v):
    return v is None or v is pd.NA or (isinstance(v, float) and v != v) or str(v) in ("nan", "None", "<NA>")


def _num_text(v):
    """2.0 -> 2 (integers stored as floats by pandas), other values as they are."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


@_with_rc
def robustness(df, path=None, quick=False):
    """The robustness study (SPEC 11), one panel per question: TV vs eps_s (smooth field) at fixed
    steps and at equal NFE, vs eps_J (fourier, omega swept at fixed eps), vs omega at fixed eps_J
    (the smoothness test), vs the number of training levels M (quantised), the error's excess over
    the exact score vs d on a product, and a learned score vs NFE. Colour and marker name the
    sampler; HEROISM with N = ceil(log T) sweeps is dashed with open markers beside its N = K (solid,
    filled); each sampler's exact-score TV is dotted in its colour; failed runs are crosses."""
    from .fits import EQUAL_NFE, sampler_label
    d = df.copy()
    d["label"] = [sampler_label(r) for r in d.to_dict("records")]
    d["field"] = d["score_field"].fillna("exact")
    d["budget"] = d["nfe_budget"].astype(float) if "nfe_budget" in d else np.nan
    labels = list(dict.fromkeys(d["label"]))
    bases = list(dict.fromkeys(lab.split(" N=")[0] for lab in labels))

    def style(lab):
        i = bases.index(lab.split(" N=")[0])
        paper = " N=" in lab
        return dict(color=OKABE_ITO[i % 8], marker=MARKERS[i % len(MARKERS)], markersize=3.5, linewidth=1.0,
                    linestyle="--" if paper else "-", markerfacecolor="white" if paper else OKABE_ITO[i % 8])

    fixed = d[d.budget.isna()]
    mix, prod = fixed[fixed.target != "rademacher-cube"], fixed[fixed.target == "rademacher-cube"]
    at = d[(d.target != "rademacher-cube") & (d.budget == EQUAL_NFE)]
    eps = mix.score_eps.astype(float)
    panels = [("smooth field: TV vs $\\varepsilon_s$ (fixed steps)", mix[mix.field == "smooth"], "score_err", np.sqrt,
               "realised $\\varepsilon_s = (E|\\hat s - s|^2)^{1/2}$", mix),
              (f"smooth field at {EQUAL_NFE} NFE", at[at.field == "smooth"], "score_err", np.sqrt,
               "realised $\\varepsilon_s$ (every sampler at the same NFE)", at),
              ("fourier, $\\varepsilon$ = 0.01: TV vs $\\varepsilon_J$", mix[(mix.field == "fourier") & np.isclose(eps, 0.01)],
               "jac_err", np.sqrt, "realised $\\varepsilon_J = (E|\\nabla\\hat s - \\nabla s|_F^2)^{1/2}$", mix),
              ("smoothness test: $\\varepsilon\\omega$ fixed", mix[(mix.field == "fourier") & np.isclose(eps * mix.score_omega.astype(float), 0.04)],
               "score_omega", None, "frequency $\\omega$ ($\\varepsilon_J$ fixed, higher derivatives grow)", mix),
              ("quantised in $\\tau$: TV vs M", mix[mix.field == "quantised"], "score_levels", None,
               "training levels M (of DDPM's 1000)", mix)]
    fig = Figure(figsize=(3.3 * 4, 3.0 * 2 + 0.9), dpi=130)
    axes = fig.subplots(2, 4, squeeze=False).ravel()
    k = 0
    for title, sub, xcol, xf, xlabel, floors in panels:
        if not len(sub):
            continue
        ax = axes[k]
        k += 1
        exact = {lab: g for lab, g in floors[floors.field == "exact"].groupby("label")}
        ok = sub[sub.status == "ok"]
        for lab in labels:
            g = ok[ok.label == lab].sort_values(xcol)
            if not len(g):
                continue
            x = g[xcol].to_numpy(float)
            x = xf(x) if xf else x
            st = style(lab)
            ax.errorbar(x, g["tv"], yerr=2 * g["tv_se"], capsize=1.5, elinewidth=0.6, **st)
            if lab in exact:
                ax.axhline(float(exact[lab].tv.iloc[0]), color=st["color"], linestyle=":", linewidth=0.7)
        fx = sub[sub.status != "ok"]
        if len(fx):
            x = fx[xcol].to_numpy(float)
            _failures(ax, fx.assign(_x=xf(x) if xf else x), "_x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        if xcol == "score_levels":
            ax.invert_xaxis()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("TV$(p_{out}, q)$ ± 2 se")
    if len(prod):
        ax = axes[k]
        k += 1
        for lab in labels:
            g = prod[(prod.label == lab) & (prod.status == "ok")]
            rows = []
            for dim, h in g.groupby("dim"):
                ex, er = h[h.field == "exact"], h[h.field != "exact"]
                if len(ex) and len(er):
                    rows.append((dim, float(er.tv.iloc[0]) - float(ex.tv.iloc[0]),
                                 2 * float(np.hypot(er.tv_se.iloc[0], ex.tv_se.iloc[0]))))
            rows = [r for r in rows if r[1] > 0]
            if rows:
                x, y, e = map(np.array, zip(*rows))
                ax.errorbar(x, y, yerr=np.minimum(e, 0.99 * y), capsize=1.5, elinewidth=0.6, **style(lab))
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_ticks(ax, prod.dim.unique())
        ax.set_title("rademacher-cube: the error's TV vs d")
        ax.set_xlabel("dimension d (per-coordinate $\\varepsilon$ fixed)")
        ax.set_ylabel("TV(score error) − TV(exact score), > 0 only")
    le = d[d.budget.notna() & d.field.isin(["learned", "exact"]) & (d.target != "rademacher-cube")]
    if (le.field == "learned").any():
        ax = axes[k]
        k += 1
        for lab in labels:
            for field, ls in (("learned", None), ("exact", ":")):
                g = le[(le.label == lab) & (le.field == field) & (le.status == "ok")]
                g = g[g.nfe <= g.budget].sort_values("nfe")
                if not len(g):
                    continue
                st = style(lab)
                if ls:
                    st.update(linestyle=ls, marker="none", linewidth=0.8)
                ax.errorbar(g["nfe"], g["tv"], yerr=2 * g["tv_se"], capsize=1.5, elinewidth=0.6, **st)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_ticks(ax, le.nfe_budget.dropna().unique())
        ax.set_title("learned score (MLP, DSM) vs NFE")
        ax.set_xlabel("NFE (budgets 10-100)")
        ax.set_ylabel("TV ± 2 se (dotted: exact score)")
    handles = [matplotlib.lines.Line2D([], [], label=lab, **style(lab)) for lab in labels]
    handles.append(matplotlib.lines.Line2D([], [], color="0.3", linestyle=":", label="exact-score TV (same colour)"))
    handles.append(matplotlib.lines.Line2D([], [], color="0.0", linestyle="none", marker="x", label="failed (map folded)"))
    for ax in axes[k:]:
        ax.axis("off")
    if k < len(axes):
        axes[k].legend(handles=handles, loc="center", fontsize=6.5, frameon=False, ncol=1 if len(handles) <= 12 else 2)
    else:
        fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=6.5, frameon=False)
    steps = ", ".join(str(int(v)) for v in sorted(mix.steps.unique())) if len(mix) else ""
    return _finish(fig, f"Robustness to score errors: gmm-aniso d = 8 at {steps} steps (n = {int(mix.n.iloc[0]) if len(mix) else ''}) "
                   f"and at equal NFE; a product to d = {int(prod.dim.max()) if len(prod) else ''}",
                   mix if len(mix) else d, quick, path)


FIGURES = {"order": order, "dimension": dimension, "tightness": tightness, "epsilon": epsilon, "refinement": refinement,
           "score_error": score_error, "samplers": samplers, "paper_schedule": paper_schedule, "robustness": robustness}


def figure_for(name):
    """The figure function of a built-in study, else `generic`."""
    return FIGURES.get(name, generic)
