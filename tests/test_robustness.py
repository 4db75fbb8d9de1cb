"""The robustness study (SPEC 11): its configuration, its fits against planted slopes, its figure."""

import pathlib

import numpy as np
import pandas as pd
import pytest

from theory_check import fits, plots, report, sweep

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLERS = [dict(sampler="heroism", K=3), dict(sampler="ddim", K=np.nan)]


def _frame(slope_s=1.0, slope_j=1.0, slope_omega=0.0, rel_se=0.01):
    """Rows of the study's shape with planted laws: TV - floor = c eps_s^slope_s, = c eps_J^slope_j,
    TV = t0 omega^slope_omega at fixed eps_J, TV = t1 (1/M)^0.5; se = rel_se TV."""
    rows = []

    def add(**kw):
        base = dict(target="gmm-aniso", dim=8, n=2000, steps=24, nfe=24, nfe_budget=np.nan, status="ok", score_field=None, score_eps=0.0,
                    score_omega=np.nan, score_levels=np.nan, score_err=np.nan, jac_err=np.nan, init="exact",
                    schedule="log_snr", tau_min=1e-3, tau_max=0.999, quick=False)
        base.update(kw)
        base["tv_se"] = rel_se * base["tv"]
        rows.append(base)
    for smp in SAMPLERS:
        floor = 1e-4
        add(**smp, tv=floor)
        for e in (0.01, 0.03, 0.1, 0.3):
            add(**smp, score_field="smooth", score_eps=e, score_err=e ** 2, tv=floor + 0.5 * e ** slope_s)
        for w in (1.0, 3.0, 12.0, 48.0):           # (the study's omega = 4 run serves both questions; here apart)
            ej = 0.3 * w
            add(**smp, score_field="fourier", score_eps=0.01, score_omega=w, jac_err=ej ** 2, tv=floor + 0.01 * ej ** slope_j)
        for e, w in ((0.04, 1.0), (0.02, 2.0), (0.005, 8.0), (0.0025, 16.0)):
            add(**smp, score_field="fourier", score_eps=e, score_omega=w, jac_err=0.0144, tv=0.01 * w ** slope_omega)
        for M in (1000, 300, 100, 30, 10):
            add(**smp, score_field="quantised", score_levels=M, tv=0.3 * M ** -0.5)
        for d in (8, 64, 512):
            add(**smp, target="rademacher-cube", dim=d, n=500, tv=1e-4)
            add(**smp, target="rademacher-cube", dim=d, n=500, score_field="fourier", score_eps=0.01, score_omega=1.0,
                tv=1e-4 + 1e-3 * d ** 0.5)
        # at equal NFE: a floor of its own, and TV - floor = 0.2 eps_s^slope_s
        add(**smp, nfe_budget=100, nfe=100, tv=2e-4)
        for e in (0.01, 0.03, 0.1, 0.3):
            add(**smp, nfe_budget=100, nfe=100, score_field="smooth", score_eps=e, score_err=e ** 2, tv=2e-4 + 0.2 * e ** slope_s)
        # the learned score: TV_learned = 3 TV_exact at every budget
        for b in (10, 20, 40):
            add(**smp, nfe_budget=b, nfe=b, tv=1.0 / b)
        for b in (10, 20, 40, 100):
            add(**smp, nfe_budget=b, nfe=b, score_field="learned", score_err=4.0, jac_err=25.0, tv=3.0 / b if b < 100 else 6e-4)
    df = pd.DataFrame(rows)
    df["nfe_budget"] = df["nfe_budget"].astype(float)
    return df


@pytest.mark.parametrize("slope_omega,verdict", [(0.0, "flat (CI contains 0)"), (0.5, "grows"), (-0.4, "falls")])
def test_the_fits_recover_planted_slopes(slope_omega, verdict):
    t = fits.robustness_table(_frame(slope_s=1.0, slope_j=0.6, slope_omega=slope_omega))
    for smp in ("HEROISM K=3", "DDIM"):
        r = t[t.sampler == smp].set_index("question")
        s = r.loc["TV - floor vs eps_s (smooth)"]
        assert s.slope == pytest.approx(1.0, abs=1e-9) and s.df == 2 and s.t_lo <= 1 <= s.t_hi
        assert s.verdict == "consistent with slope 1"
        assert r.loc["TV - floor vs eps_J (fourier, eps 0.01)"].slope == pytest.approx(0.6, abs=1e-9)
        assert r.loc["TV - floor vs eps_J (fourier, eps 0.01)"].verdict == "shallower than 1"
        w = r.loc["TV vs omega at fixed eps_J (smoothness)"]
        assert w.slope == pytest.approx(slope_omega, abs=1e-9) and w.verdict == verdict and w.df == 2
        assert r.loc["TV vs 1/M (quantised)"].slope == pytest.approx(0.5, abs=1e-9)
        assert r.loc["TV - floor vs d (rademacher-cube, per-coordinate eps fixed)"].slope == pytest.approx(0.5, abs=1e-9)
        # equal NFE: against its own floor (2e-4), not the fixed-steps one
        assert r.loc["TV - floor vs eps_s (smooth, 100 NFE)"].slope == pytest.approx(1.0, abs=1e-9)


def test_the_learned_table_sets_each_sampler_beside_its_exact_score():
    t = fits.learned_table(_frame())
    assert list(t.sampler) == ["HEROISM K=3"] * 4 + ["DDIM"] * 4
    assert list(t.nfe_budget[:4]) == [10, 20, 40, 100]
    np.testing.assert_allclose(t.ratio[:3], 3.0)
    np.testing.assert_allclose(t.ratio[3], 6e-4 / 2e-4)             # the budget-100 floor of the equal-NFE grid
    np.testing.assert_allclose(t.eps_s, 2.0)
    np.testing.assert_allclose(t.eps_J, 5.0)


def test_unresolved_excesses_are_left_out_and_said_so():
    df = _frame(rel_se=10.0)            # se far above every excess: nothing resolved
    t = fits.robustness_table(df)
    assert (t[t.question.str.startswith("TV - floor")].verdict == "not resolved").all()


def test_the_figure_draws_every_question(tmp_path):
    df = _frame()
    df.loc[df.index[3], "status"] = "failed"
    fig = plots.robustness(df, tmp_path / "r.png")
    axes = fig.get_axes()
    drawn = [ax for ax in axes if ax.get_title()]
    assert len(drawn) == 7 and all(ax.lines for ax in drawn)
    assert (tmp_path / "r.png").exists()
    assert any("failed" in t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts())


def test_the_study_file_expands_as_designed():
    name, _, specs, _ = sweep.load_study(ROOT / "studies" / "robustness.toml")
    quick = sweep.load_study(ROOT / "studies" / "robustness.toml", quick=True)[2]
    # 11 sampler configurations (HEROISM K = 2-4 with N = K and N = paper, K = 1 whose N is moot, four
    # others) x 38 points (the fourier omega = 4, eps = 0.01 run serves two grids); quick: d <= 64
    assert name == "robustness" and len(specs) == 418 and len(quick) == 374
    assert {s["score_field"] for s in specs} == {None, "smooth", "fourier", "quantised", "learned"}
    assert {s["N"] for s in specs if s["sampler"] == "heroism" and s["K"] == 1} == {1}
    fixed = [s for s in specs if s["score_field"] == "fourier" and s["target"] == "gmm-aniso" and s["score_eps"] != 0.01]
    assert {round(s["score_eps"] * s["score_omega"], 12) for s in fixed} == {0.04}
    assert "robustness" in report.STUDY_ORDER
