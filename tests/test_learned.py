"""The learned score (SPEC 11, targets.learned): the NumPy network against an independent torch
evaluation and autograd Jacobian, its Jacobian against finite differences, training reproducible
from its seed, trained errors against the untrained network's on fresh exact draws, the disk cache,
and what a core install without torch says (the sweep's part in test_learned_core.py, which runs without torch)."""

import sys

import numpy as np
import pytest

from theory_check import runs, targets
from theory_check.targets import learned

from conftest import fd_jacobian

torch = pytest.importorskip("torch", reason="the learned score trains with torch: pip install -e '.[compare]'")

TINY = dict(width=16, depth=2, steps=30, batch=64, seed=3)


@pytest.fixture(scope="module")
def trained():
    base = targets.make("gmm-aniso", 3, 0)
    return base, learned.train(base, TINY)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THEORY_CHECK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _torch_score(weights, x, tau):
    params = [torch.from_numpy(weights[f"p{i}"]) for i in range(len([k for k in weights if k.startswith("p")]))]
    n = len(x)
    t = torch.full((n,), tau, dtype=torch.float64)
    lam = torch.full((n,), 0.5 * (np.log1p(-tau) - np.log(tau)), dtype=torch.float64)
    mu = torch.from_numpy(weights["mu"])

    def s(xx):
        return -learned._torch_eps(params, xx, t[:len(xx)], lam[:len(xx)], mu, float(weights["var"])) / np.sqrt(tau)
    xt = torch.from_numpy(x)
    J = torch.func.vmap(torch.func.jacrev(lambda v: s(v[None])[0]))(xt)
    return s(xt).detach().numpy(), J.detach().numpy()


@pytest.mark.parametrize("tau", [1e-3, 0.2, 0.95])
def test_numpy_network_equals_torch_and_autograd(trained, tau):
    # two implementations of one float64 function: they differ only in summation order (~1e-15 relative)
    base, w = trained
    x = base.sample(9, tau, np.random.default_rng(1))
    s, J = learned.MLPScore(w)(x, tau, True)
    s_ref, J_ref = _torch_score(w, x, tau)
    np.testing.assert_allclose(s, s_ref, rtol=1e-12, atol=1e-12 * np.max(np.abs(s_ref)))
    np.testing.assert_allclose(J, J_ref, rtol=1e-10, atol=1e-12 * np.max(np.abs(J_ref)))


def test_jacobian_against_finite_differences(trained):
    # 4th-order central differences, h = 1e-3 sqrt(tau): truncation ~h^4 (1e-14 relative), rounding
    # ~eps |s| / h ~ 1e-11 relative; 1e-6 is slack for both
    base, w = trained
    f = learned.LearnedScore(base, TINY, weights=w)
    x = base.sample(6, 0.2, np.random.default_rng(2))
    fd = fd_jacobian(lambda z: f.score(z, 0.2), x, 1e-3 * np.sqrt(0.2))
    J = f.score_jacobian(x, 0.2)
    assert np.max(np.abs(J - fd)) <= 1e-6 * np.max(np.abs(J))


def test_training_is_reproducible_from_its_seed(trained):
    base, w = trained
    again = learned.train(base, TINY)
    other = learned.train(base, dict(TINY, seed=4))
    assert all(np.array_equal(w[k], again[k]) for k in w)
    assert not np.array_equal(w["p0"], other["p0"])


def test_training_reduces_the_error_on_fresh_exact_draws():
    # eps_s^2 at tau = 0.3 estimated on 20000 fresh draws of q_tau (another stream than training's):
    # the untrained network is the Gaussian skip alone (its last layer starts at zero); 300 steps
    # must at least halve its error (measured: ~10x), far beyond the estimate's ~2 % Monte-Carlo error
    base = targets.make("gmm-aniso", 3, 0)
    spec = dict(width=32, depth=2, steps=300, batch=256, seed=0)
    w0 = learned.train(base, dict(spec, steps=1, lr=1e-12))
    w = learned.train(base, spec)
    x = base.sample(20000, 0.3, np.random.default_rng(77))
    s = base.score(x, 0.3)
    err = [np.mean(np.sum((learned.MLPScore(v)(x, 0.3)[0] - s) ** 2, axis=1)) for v in (w0, w)]
    assert err[1] < 0.5 * err[0], err


def test_records_are_the_realised_errors(trained):
    base, w = trained
    f = learned.LearnedScore(base, TINY, weights=w)
    x = base.sample(7, 0.2, np.random.default_rng(4))
    f._eval(x, 0.2, True)
    _, n, d2, fro, op = f.records[-1]
    s_ref, J_ref = _torch_score(w, x, 0.2)
    dJ = J_ref - base.score_jacobian(x, 0.2)
    np.testing.assert_allclose(d2, np.sum((s_ref - base.score(x, 0.2)) ** 2), rtol=1e-9)
    np.testing.assert_allclose(fro, np.sum(dJ ** 2), rtol=1e-9)
    np.testing.assert_allclose(op, np.sum(np.linalg.svd(dJ, compute_uv=False)[:, 0] ** 2), rtol=1e-9)


def test_the_network_is_trained_once_and_cached(cache, monkeypatch):
    base = targets.make("gmm-aniso", 3, 0)
    first = learned.load_or_train(base, TINY)
    assert len(list(learned.cache_dir().glob("*.npz"))) == 1
    monkeypatch.setattr(learned, "train", lambda *a, **k: pytest.fail("trained again"))
    second = learned.load_or_train(base, TINY)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    # another target of the same dimension is another network
    monkeypatch.undo()
    monkeypatch.setenv("THEORY_CHECK_CACHE", str(cache))
    learned.load_or_train(targets.make("gmm-aniso", 3, 1), TINY)
    assert len(list(learned.cache_dir().glob("*.npz"))) == 2


def test_without_torch_a_cached_network_works_and_a_missing_one_says_what_to_install(monkeypatch):
    base = targets.make("gmm-aniso", 3, 0)
    w = learned.load_or_train(base, TINY)
    monkeypatch.setitem(sys.modules, "torch", None)         # import torch now raises ImportError
    got = learned.load_or_train(base, TINY)
    assert all(np.array_equal(w[k], got[k]) for k in w)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[compare\]'"):
        learned.load_or_train(base, dict(TINY, seed=9))


def test_a_run_with_the_learned_field(monkeypatch):
    monkeypatch.setattr(learned, "TRAINING", dict(learned.TRAINING, **TINY))
    spec = runs.normalise(dict(target="gmm-aniso", dim=3, score_field="learned", sampler="ddim", steps=8, n=200))
    row = runs.evaluate(spec)
    assert row["status"] == "ok", row.get("error")
    assert row["score_err"] > 0 and row["jac_err"] >= row["jac_err_op"] > 0 and 0 < row["tv"] < 1
    with pytest.raises(ValueError, match="score_eps must be 0 with score_field = 'learned'"):
        runs.normalise(dict(target="gmm-aniso", dim=3, score_field="learned", score_eps=0.1))
