"""What a core install (no torch) does with the learned score: runnable without the [compare] extra,
so it is kept out of test_learned.py, which skips as a whole without torch."""

import sys

import pytest


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THEORY_CHECK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_without_torch_a_sweep_says_what_to_install_and_caches_nothing(tmp_path, monkeypatch):
    # the core install runs everything but the learned score: its rows say what to install, the
    # sweep goes on, and no row is cached (installing torch and rerunning then computes it)
    from theory_check import sweep
    monkeypatch.setitem(sys.modules, "torch", None)
    (tmp_path / "s.toml").write_text('[study]\nname = "s"\ndescription = "no torch"\n[defaults]\ntarget = "gmm-aniso"\n'
                                     'dim = 3\nn = 100\nsteps = 8\nsampler = "ddim"\n[[grid]]\n'
                                     'score_field = ["smooth", "learned"]\nscore_eps = [0.0]\n[[grid]]\n'
                                     'score_field = "learned"\n')
    df = sweep.run_study(tmp_path / "s.toml", tmp_path / "o", jobs=1, progress=False)
    assert sorted(df.status) == ["ok", "unavailable"]
    assert "pip install -e '.[compare]'" in df[df.status == "unavailable"].error.iloc[0]
    assert len(list((tmp_path / "o" / "runs" / "s").glob("*.json"))) == 1
