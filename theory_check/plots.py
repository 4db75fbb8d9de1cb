"""Figures in the style of a numerical-analysis paper: log-log axes, fitted slopes and theory
slopes drawn beside the data, symbols and line styles that survive greyscale printing."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .fits import linear_fit  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
STYLES = ["-", "--", ":", "-."]
GREYS = ["0.0", "0.35", "0.55", "0.7"]

plt.rcParams.update({"font.size": 9, "axes.labelsize": 9, "legend.fontsize": 7, "figure.dpi": 130,
                     "axes.grid": True, "grid.alpha": 0.3, "lines.markersize": 4.5, "font.family": "serif"})


def _style(i):
    return dict(marker=MARKERS[i % len(MARKERS)], color=GREYS[i % len(GREYS)], linestyle=STYLES[(i // 4) % len(STYLES)],
                markerfacecolor="white" if i % 2 else GREYS[i % len(GREYS)])


def _slope_line(ax, x, y, slope, label, style="--"):
    """A reference line of the given log-log slope through the geometric centre of the data."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    x0, y0 = np.exp(np.mean(np.log(x))), np.exp(np.mean(np.log(y)))
    xs = np.array([x.min(), x.max()])
    ax.plot(xs, y0 * (xs / x0) ** slope, style, color="0.5", linewidth=0.8, label=label)


def _save(fig, path):
    """Save atomically (a link at `path` is replaced, never written through)."""
    import io
    from .sweep import write_atomic
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def order(df, path):
    ok = df[(df.status == "ok") & (df.N.astype(str) == df.K.astype(int).map(lambda k: "0" if k == 1 else str(k)))]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
    for ax, metric, lab in zip(axes, ["tv", "kl", "coupling_rmse"],
                               ["TV$(p_\\mathrm{out}, q_{\\tau_\\mathrm{end}})$", "KL$(p_\\mathrm{out} \\| q)$ (where > 3 se)",
                                "pathwise RMS error $\\sqrt{E|x - \\Phi(x_\\mathrm{in})|^2}$"]):
        for i, (K, sub) in enumerate(ok.groupby("K")):
            sub = sub.sort_values("nfe")
            sub = sub[sub[metric] > (3 * sub[metric + "_se"] if metric + "_se" in sub else 1e-12)]
            if len(sub) < 2:
                continue
            ax.loglog(sub["nfe"], sub[metric], label=f"K={int(K)}, N={'0' if K == 1 else int(K)}", **_style(i))
            p = 1 if K == 1 else min(int(K) + 1, K if K % 2 == 0 else K + 1)
            _slope_line(ax, sub["nfe"].tail(4), sub[metric].tail(4), -p, None)
        ax.set_xlabel("score evaluations (NFE)")
        ax.set_ylabel(lab)
    axes[0].plot([], [], "--", color="0.5", label="slope $-p$, $p=\\min(N+1, q_K)$")
    axes[0].legend(loc="lower left")
    fig.suptitle("Convergence of HEROISM (gmm-aniso, d = 4, log-SNR schedule)", fontsize=9)
    _save(fig, path)


def _minimal_panels(df, xcol, xlab, theory, path, title, xtransform=lambda v: v):
    ok = df[(df.status == "ok") & (~df["censored"].astype(bool))]
    targets = sorted(ok.target.unique())
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for i, (K, sub) in enumerate(ok[ok.target == target].groupby("K")):
            x = xtransform(sub[xcol].to_numpy(float))
            order_ = np.argsort(x)
            x, sub = x[order_], sub.iloc[order_]
            ax.loglog(x, sub["nfe_min"], linestyle="none", **{k: v for k, v in _style(i).items() if k != "linestyle"},
                      label=f"K={int(K)}")
            if len(sub) >= 2:
                f = linear_fit(np.log(x), np.log(sub["nfe_min"]), n_boot=0)
                xs = np.array([x.min(), x.max()])
                ax.plot(xs, np.exp(f["intercept"]) * xs ** f["coef"][0], "-", color=GREYS[i % 4], linewidth=0.9)
                _slope_line(ax, x, sub["nfe_min"], theory(K), None, ":")
                ax.annotate(f"{f['coef'][0]:.2f} ({theory(K):.2f})", (x[-1], sub["nfe_min"].iloc[-1]), fontsize=6,
                            xytext=(3, 0), textcoords="offset points")
        ax.plot([], [], "-", color="0.3", label="fit")
        ax.plot([], [], ":", color="0.5", label="theory slope")
        ax.set_title(target, fontsize=9)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(xlab)
        ax.set_ylabel("minimal NFE for TV + 2se $\\leq \\varepsilon$")
        ax.legend(loc="upper left")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def dimension(df, path):
    _minimal_panels(df, "dim", "dimension $d$", lambda K: 1 + 2 / K, path,
                    "Minimal NFE vs $d$ (labels: fitted slope (theory $1+2/K$))")


def epsilon(df, path):
    _minimal_panels(df, "eps", "$1/\\varepsilon$", lambda K: 1 / K, path,
                    "Minimal NFE vs $1/\\varepsilon$ (labels: fitted slope (theory $1/K$))", lambda e: 1 / e)


def refinement(df, path):
    ok = df[(df.status == "ok") & (df.N != "paper")].copy()
    ok["N"] = ok["N"].astype(int)
    steps = sorted(ok.steps.unique())
    fig, axes = plt.subplots(1, len(steps), figsize=(4.2 * len(steps), 3.3), squeeze=False)
    for ax, S in zip(axes[0], steps):
        for i, (K, sub) in enumerate(ok[ok.steps == S].groupby("K")):
            sub = sub.sort_values("N")
            ax.semilogy(sub["N"], sub["coupling_rmse"], label=f"K={int(K)}", **_style(i))
            paper = df[(df.K == K) & (df.steps == S) & (df.N == "paper") & (df.status == "ok")]
            if len(paper):
                ax.axvline(max(1, int(np.ceil(np.log(S)))), color="0.8", linewidth=0.6)
        ax.set_title(f"{int(S)} steps (grey line: paper's N = ceil(log T))", fontsize=8)
        ax.set_xlabel("refinement sweeps $N$")
        ax.set_ylabel("pathwise RMS error")
        ax.legend()
    _save(fig, path)


def score_error(df, path):
    ok = df[(df.status == "ok") & (df.score_eps > 0)]
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for i, (K, sub) in enumerate(ok.groupby("K")):
        sub = sub.sort_values("score_err")
        ax.loglog(np.sqrt(sub["score_err"]), sub["tv"], label=f"K={int(K)}", **_style(i))
        floor = df[(df.K == K) & (df.score_eps == 0) & (df.status == "ok")]["tv"]
        if len(floor):
            ax.axhline(float(floor.iloc[0]), color=GREYS[i % 4], linewidth=0.6, linestyle=":")
    x = np.sqrt(ok["score_err"])
    _slope_line(ax, x[x > np.median(x)], ok["tv"][x > np.median(x)], 1.0, "slope 1")
    ax.set_xlabel("realised score error $(\\overline{E|\\hat s - s|^2})^{1/2}$")
    ax.set_ylabel("TV$(p_\\mathrm{out}, q)$")
    ax.set_title("Graceful degradation (dotted: exact-score floor)", fontsize=8)
    ax.legend()
    _save(fig, path)


def samplers(df, path):
    ok = df[df.status == "ok"].copy()
    ok["label"] = ok.apply(_sampler_label, axis=1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, lab in zip(axes, ["tv", "coupling_rmse"], ["TV", "pathwise RMS error"]):
        for i, (name, sub) in enumerate(ok.groupby("label", sort=True)):
            sub = sub.sort_values("nfe")
            sub = sub[sub[metric] > (3 * sub["tv_se"] if metric == "tv" else 1e-12)]
            if len(sub):
                ax.loglog(sub["nfe"], sub[metric], label=name, **_style(i))
        ax.set_xlabel("NFE budget")
        ax.set_ylabel(lab)
        _plain_ticks(ax, sorted(ok["nfe_budget"].unique()))
    axes[1].legend(fontsize=6, ncol=1, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Samplers at equal NFE (gmm-aniso, d = 8)", fontsize=9)
    _save(fig, path)


def _sampler_label(r):
    if r["sampler"] != "heroism":
        return {"ddim": "DDIM", "dpm2m": "DPM-Solver++ 2M", "dpm3m": "DPM-Solver++ 3M (released)",
                "dpm3m-taylor": "DPM-Solver++ 3M (taylor, 2S warm-up)", "dpm2s": "DPM-Solver++ 2S",
                "unipc": "UniPC bh2 p=3", "unipc-bh1": "UniPC bh1 p=3", "deis": "DEIS-3 (log-rho)",
                "deis-tab": "DEIS-3 tAB", "ipndm": "iPNDM", "heun": "Heun", "rk4": "RK4"}.get(r["sampler"], r["sampler"])
    sweep = "Jacobi" if r["sweep"] == "jacobi" else "Gauss-Seidel"
    return f"HEROISM K={int(r['K'])} N={int(float(r['N']))} {r['nodes']} {sweep}"


def _plain_ticks(ax, values):
    """Label the x axis at the given values, without overlapping minor log-tick labels."""
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(values)
    ax.set_xticklabels([f"{int(v)}" for v in values])


def paper_schedule(df, path):
    ok = df[df.status == "ok"]
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for i, (K, sub) in enumerate(ok.groupby("K")):
        sub = sub.sort_values("steps")
        ax.loglog(sub["steps"] + 1, sub["tv"], label=f"K={int(K)}", **_style(i))
    ax.set_xlabel("$T$ (schedule points)")
    _plain_ticks(ax, sorted(ok["steps"].unique() + 1))
    ax.set_ylabel("TV$(p_\\mathrm{out}, q_{\\tau_1})$")
    ax.set_title("Paper's schedule, Gaussian start, N = ceil(log T)", fontsize=8)
    ax.legend()
    _save(fig, path)


FIGURES = {"order": order, "dimension": dimension, "epsilon": epsilon, "refinement": refinement,
           "score_error": score_error, "samplers": samplers, "paper_schedule": paper_schedule}
