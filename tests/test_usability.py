"""Usability: your own study end to end, defaults that protect the committed results, figures that
show every run, and a library that leaves the process alone."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from theory_check import cli, plots, report, sweep

ROOT = pathlib.Path(__file__).resolve().parent.parent

MY_STUDY = """
[study]
name = "my_study"
description = "UniPC vs DPM-Solver++ 2M on the sphere"
[defaults]
target = "sphere"
dim = 3
n = 400
metrics = ["tv", "kl", "coupling"]
[[grid]]
sampler = ["unipc", "dpm2m"]
steps = [6, 12, 24]
"""


def test_a_users_own_study_runs_fits_and_plots(tmp_path, capsys):
    p = tmp_path / "my_study.toml"
    p.write_text(MY_STUDY)
    out = tmp_path / "out"
    assert cli.main(["run", str(p), "--out", str(out)]) == 0
    assert "my_study: 6 runs" in capsys.readouterr().out
    assert cli.main(["fit", str(out)]) == 0
    fit = pd.read_csv(out / "my_study_fit.csv")
    assert sorted(fit.sampler) == ["dpm2m", "unipc"] and fit.order.notna().all()
    assert cli.main(["plot", str(out)]) == 0
    assert (out / "my_study.png").stat().st_size > 10_000
    fig = plots.generic(pd.read_csv(out / "my_study.csv"))
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 3]
    assert len(lines) >= 2                      # one line of three step counts per sampler


def test_run_without_out_never_touches_the_committed_results(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    committed = ROOT / "results" / "paper_schedule.csv"
    before = committed.stat().st_mtime_ns if committed.exists() else None
    p = tmp_path / "paper_schedule.toml"
    p.write_text((ROOT / "studies" / "paper_schedule.toml").read_text().replace("steps = [50, 200]", "steps = [50]"))
    assert cli.main(["run", str(p), "--quick"]) == 0
    assert "theory-check-out/paper_schedule.csv" in capsys.readouterr().out
    assert (tmp_path / "theory-check-out" / "paper_schedule.csv").exists()
    assert (committed.stat().st_mtime_ns if committed.exists() else None) == before
    # and the default folder is ignored by git, so a clone stays clean
    r = subprocess.run(["git", "check-ignore", "-q", "theory-check-out/x.csv"], cwd=ROOT)
    assert r.returncode == 0


def test_quick_runs_carry_a_banner(tmp_path):
    df = pd.read_csv(ROOT / "results" / "order.csv").assign(quick=True)
    fig = plots.order(df, quick=report.is_quick({"order": df}))
    assert any(plots.QUICK_BANNER in t.get_text() for t in fig.texts)
    assert not any(plots.QUICK_BANNER in t.get_text() for t in plots.order(df.assign(quick=False)).texts)


def test_every_title_names_target_dimension_and_schedule():
    for name in ("order", "refinement", "samplers", "score_error"):
        df = pd.read_csv(ROOT / "results" / f"{name}.csv")
        title = plots.FIGURES[name](df)._suptitle.get_text()
        assert df.target.iloc[0] in title and f"d = {int(df.dim.iloc[0])}" in title and "schedule" in title, title


def test_samplers_figure_shows_every_run():
    # no point dropped: the production samplers in the main figure's left panels and every HEROISM
    # configuration in the supplementary figure; unresolved TVs drawn (ringed), failed runs crosses
    df = pd.read_csv(ROOT / "results" / "samplers.csv")
    fig, sup = plots.samplers(df), plots.samplers_heroism(df)

    def points(axes):
        lines = [c for ax in axes for c in ax.get_lines()]
        return (sum(len(c.get_xdata()) for c in lines if c.get_marker() not in ("x", "None", None, "")
                    and c.get_linestyle() != "None"),
                sum(len(c.get_xdata()) for c in lines if c.get_marker() == "x"))
    ok = df[df.status == "ok"]
    unique = ok.assign(label=ok.apply(plots._sampler_label, axis=1)).drop_duplicates(["target", "dim", "label", "nfe"])
    left = [ax for ax in fig.axes if ax.get_title().endswith("production samplers")]
    assert points(left)[0] == int((unique.sampler != "heroism").sum())
    assert points(sup.axes)[0] == int((unique.sampler == "heroism").sum())
    assert points(fig.axes)[1] == int((df.status != "ok").sum())
    assert points(sup.axes)[1] == int(((df.status != "ok") & (df.sampler == "heroism")).sum())


def test_no_series_hides_another():
    # score_error: K = 3 and K = 4 give the same TV at every score error; each K is shifted in x by
    # DODGE, so no two K's markers sit at the same point
    rows = [dict(status="ok", K=K, score_eps=e, score_err=(0.1 * e) ** 2, tv=0.3 * e, tv_se=1e-3 * e, target="gmm-aniso",
                 dim=4, schedule="log_snr", tau_min=1e-3, tau_max=0.999, init="exact") for K in (3, 4) for e in (0.01, 0.1, 1.0)]
    fig = plots.score_error(pd.DataFrame(rows))
    xs = {c.get_label(): c.lines[0].get_xdata() for c in fig.axes[0].containers}
    assert np.allclose(xs["K=4"] / xs["K=3"], plots.DODGE)
    # samplers: no HEROISM K series (right panels) has the colour and marker of a production sampler
    # (left; K = 2 was drawn as DDIM's black circle)
    fig = plots.samplers(pd.read_csv(ROOT / "results" / "samplers.csv"))
    marks = lambda side: {(c.get_color(), c.get_marker()) for ax in fig.axes if ax.get_title().endswith(side)
                          for c in ax.get_lines() if c.get_linestyle() != "None"}
    assert marks("best configuration per K") and not marks("best configuration per K") & marks("production samplers")


def test_reproduce_says_what_failed_runs_are():
    from theory_check import cli
    ok, bad = pd.DataFrame(dict(status=["ok", "ok"])), pd.DataFrame(dict(status=["ok", "failed"]))
    assert cli._failed_note({"a": ok}) == ""
    assert "not errors" in cli._failed_note({"a": ok, "b": bad}) and "Failed runs" in cli._failed_note({"b": bad})


def test_importing_the_library_leaves_the_process_alone():
    code = ("import os, matplotlib; b = matplotlib.get_backend(); g = os.environ.get('GOMP_SPINCOUNT'); "
            "import theory_check, theory_check.plots, theory_check.report; "
            "assert matplotlib.get_backend() == b, 'backend'; assert os.environ.get('GOMP_SPINCOUNT') == g, 'env'")
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


def test_files_follow_the_umask(tmp_path):
    from theory_check import sweep
    old = os.umask(0o022)
    try:
        sweep.write_atomic(tmp_path / "a.csv", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("args", [["--help"], ["sample", "--help"], ["run", "--help"], ["reproduce", "--help"]])
def test_every_option_has_help_and_a_default(args, capsys):
    with pytest.raises(SystemExit):
        cli.main(args)
    out = capsys.readouterr().out
    if args == ["--help"]:
        assert "bench" in out and "check" in out
    else:
        opts = [ln for ln in out.splitlines() if ln.strip().startswith("--") and "--help" not in ln]
        assert opts and all(not ln.strip().endswith(("=", ":")) for ln in opts)


def test_python_m_theory_check():
    r = subprocess.run([sys.executable, "-m", "theory_check", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip()


def test_sample_warns_about_ignored_parameters(capsys):
    assert cli.main(["sample", "--sampler", "ddim", "--K", "4", "--steps", "4", "--samples", "100"]) == 0
    err = capsys.readouterr().err
    assert "--K ignored" in err


def test_check_exits_1_when_a_check_fails(monkeypatch, capsys):
    monkeypatch.setattr(cli, "CHECK_SCORE_TOL", 0.0)
    assert cli.main(["check", "--dim", "3"]) == 1
    assert "SOME CHECKS FAILED" in capsys.readouterr().out


def test_the_readme_stands_alone():
    text = (ROOT / "README.md").read_text()
    assert "../" not in text and "SPEC.md" not in text
    for ref in set(__import__("re").findall(r"tests/(test_\w+\.py)", text)):
        assert (ROOT / "tests" / ref).exists(), ref
    env = (ROOT / "environment.yml").read_text()
    for ref in set(__import__("re").findall(r"tests/(test_\w+\.py)", env)):
        assert (ROOT / "tests" / ref).exists(), ref


def test_main_restores_the_callers_sigterm_handler():
    import signal
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    cli.main(["sample", "--steps", "2", "--samples", "20", "--format", "json"])
    assert signal.getsignal(signal.SIGTERM) is before


def test_load_returns_typed_frames(tmp_path):
    # a small study run here, its CSV read back by theory_check.load: the text columns come back as
    # what they are, checked against the raw CSV parsed by hand (json, split)
    import theory_check
    (tmp_path / "s.toml").write_text(
        '[study]\nname = "s"\ndescription = "typed"\n[defaults]\ntarget = "uniform-cube"\ndim = 2\nn = 100\nsteps = 6\n'
        '[[grid]]\nsampler = ["heroism", "ddim"]\nK = 2\nN = ["K", "paper"]\ntarget_args = { scale = 2.0 }\n')
    sweep.run_study(tmp_path / "s.toml", tmp_path / "o", jobs=1, progress=False)
    raw = pd.read_csv(tmp_path / "o" / "s.csv")
    df = theory_check.load(tmp_path / "o", "s")
    assert str(df.K.dtype) == "Int64" and df.K.isna().sum() == (raw.sampler == "ddim").sum()
    assert str(df.N.dtype) == "string" and set(df.N.dropna()) == {"2", "paper"}
    assert list(df.target_args) == [json.loads(v) for v in raw.target_args] and df.target_args.iloc[0] == {"scale": 2.0}
    assert list(df.metrics) == [v.split(",") for v in raw.metrics]
    assert str(df.nfe.dtype) == "Int64" and list(df.nfe) == list(raw.nfe)
    assert str(df.quick.dtype) == "boolean"
    assert set(theory_check.load(tmp_path / "o")) == {"s"}
    with pytest.raises(ValueError, match="study: no study 'x'"):
        theory_check.load(tmp_path / "o", "x")


def test_instance_label_has_no_stray_separator_for_default_arguments():
    # the tightness tables read "uniform-cube , τ_min 0.001" when every target argument was the default
    from theory_check import plots
    assert plots.instance_text("uniform-cube", {}) == "uniform-cube"
    assert plots.instance_text("product-gmm", {"scale": 4.0, "width": 0.5}) == "product-gmm scale 4, width 0.5"
