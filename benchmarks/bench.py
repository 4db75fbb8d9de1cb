"""Benchmarks that print ratios measured in one run on the same machine (timings here are noisy;
ratios of interleaved best-of-k timings are what we report, never bare seconds in tests).

    python -m benchmarks [--quick]        (or: theory-check bench [--quick])

1. score throughput: Numba kernel vs a straightforward NumPy broadcast twin and vs the best NumPy
   formulation (distances through a BLAS matrix product), isotropic (n 1e5, M 16, d 64) and full
   covariance (n 1e4, M 8, d 32) families;
2. achieved GFLOP/s of the isotropic score as a fraction of this machine's GEMM rate on the
   matching shape (n x d) @ (d x M);
3. share of a HEROISM run's time spent outside score evaluations (n 1e5);
4. cost of jacobian="structured" vs "full" as d grows;
5. speed-up of a sweep on 2 workers vs 1, with one thread per worker and with the defaults;
6. peak memory of a run against n d K floats; Numba cache: first run of a fresh process;
7. every sampler's share of time outside score evaluations (n 1e5, M 16, d 64, 20 steps);
8. theory-check's DDIM and DPM-Solver++ 2M against the same schedulers of Hugging Face diffusers
   driven by a batched torch float64 score of the same mixture, same threads (needs the
   `compare` extra): time per NFE and its ratio;
9. the full-Jacobian chain's linear algebra;
10. the minimal-NFE search of SPEC 12 against the bisection (cost / steps_min, agreement): on synthetic
    power laws, on the --quick searches (both run), and on the committed results/ against the bisection's
    record of the same searches (bisection_20261127.csv: results/ of 2026-11-27; no search rerun);
11. the default path: a plain library call (no `tune_process()`) against the tuned process, in
    fresh processes, on an idle machine and beside one competing busy process.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np
from scipy import special

import theory_check
from theory_check import kernels, schedules, sweep, targets
from theory_check import samplers as S
from theory_check.samplers import Heroism

theory_check.tune_process()      # the settings the CLI and the sweep workers use (README, Performance)


def best_of(fn, repeat=5):
    """Best of `repeat` timings after one warm-up call (repeat = 0: time the single call)."""
    t0 = time.perf_counter()
    fn()
    if repeat == 0:
        return time.perf_counter() - t0
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


# -- NumPy formulations of the isotropic and full-covariance scores --------------------------------

def iso_blas(x, m, c, logc0):
    """Best NumPy: |x - m_k|^2 = |x|^2 - 2 x.m_k + |m_k|^2 through one GEMM; score through another."""
    xx = np.einsum("nd,nd->n", x, x)[:, None]
    lw = logc0 - 0.5 * (xx - 2 * x @ m.T + np.einsum("kd,kd->k", m, m)) / c
    r = np.exp(lw - special.logsumexp(lw, axis=1, keepdims=True))
    rc = r / c
    return -x * rc.sum(1, keepdims=True) + rc @ m


def full_blas(x, m, V, inv_c, logc0):
    lw = np.empty((len(x), len(m)))
    gs = []
    for k in range(len(m)):
        z = (x - m[k]) @ V[k]
        w = z * inv_c[k]
        lw[:, k] = logc0[k] - 0.5 * np.einsum("np,np->n", z, w)
        gs.append(-w @ V[k].T)
    r = np.exp(lw - special.logsumexp(lw, axis=1, keepdims=True))
    return sum(r[:, k:k + 1] * g for k, g in enumerate(gs))


def iso_case(n, M, d, rng):
    m = rng.normal(size=(M, d))
    c = rng.uniform(0.2, 1.0, M)
    logc0 = np.log(np.full(M, 1 / M)) - 0.5 * d * np.log(2 * np.pi * c)
    x = m[rng.integers(M, size=n)] + rng.normal(size=(n, d))
    return x, m, c, logc0


def full_case(n, M, d, rng):
    m = rng.normal(size=(M, d))
    V = np.array([np.linalg.qr(rng.normal(size=(d, d)))[0] for _ in range(M)])
    c = rng.uniform(0.1, 1.0, (M, d))
    inv_c = 1 / c
    logc0 = np.log(np.full(M, 1 / M)) - 0.5 * (d * np.log(2 * np.pi) + np.log(c).sum(1))
    P = np.einsum("kip,kp,kjp->kij", V, inv_c, V)
    x = m[rng.integers(M, size=n)] + rng.normal(size=(n, d))
    return x, m, V, inv_c, logc0, P


def bench_scores(quick):
    """Kernels are timed writing into preallocated outputs (`*_into`), and so is the GEMM: a fresh
    51 MB output costs 5 to 55 ms of first-touch page faults depending on whether the OS gives it
    huge pages (bimodal here, measured), which is the allocator's cost, not the kernel's. The
    allocating call is printed beside it. The NumPy formulations allocate by nature."""
    rng = np.random.default_rng(0)
    rows = []
    n_iso = 20_000 if quick else 100_000
    x, m, c, logc0 = iso_case(n_iso, 16, 64, rng)
    out = kernels._outputs(x, False)
    t_nb = best_of(lambda: kernels.iso_score_into(x, m, c, logc0, *out))
    t_al = best_of(lambda: kernels.iso_score(x, m, c, logc0, False))
    t_bc = best_of(lambda: kernels.iso_score_numpy(x, m, c, logc0, False), 3)
    t_bl = best_of(lambda: iso_blas(x, m, c, logc0), 7)
    np.testing.assert_allclose(iso_blas(x, m, c, logc0), kernels.iso_score(x, m, c, logc0, False)[1], rtol=1e-6, atol=1e-8)
    rows.append(("isotropic", f"n={n_iso} M=16 d=64", t_nb, t_al, t_bc, t_bl))
    n_full = 2_000 if quick else 10_000
    x2, m2, V, inv_c, logc02, P = full_case(n_full, 8, 32, rng)
    out2 = kernels._outputs(x2, False)
    t_nb2 = best_of(lambda: kernels.full_score_into(x2, m2, V, inv_c, logc02, P, *out2))
    t_al2 = best_of(lambda: kernels.full_score(x2, m2, V, inv_c, logc02, P, False))
    t_bc2 = best_of(lambda: kernels.full_score_numpy(x2, m2, V, inv_c, logc02, P, False), 3)
    t_bl2 = best_of(lambda: full_blas(x2, m2, V, inv_c, logc02), 7)
    np.testing.assert_allclose(full_blas(x2, m2, V, inv_c, logc02), out2[1], rtol=1e-6, atol=1e-8)
    rows.append(("full covariance", f"n={n_full} M=8 d=32", t_nb2, t_al2, t_bc2, t_bl2))
    print("\n1. score throughput (best of 5; ratio > 1: Numba faster)")
    print(f"{'family':<16}{'shape':<22}{'Numba ms':>10}{'(allocating)':>14}{'vs broadcast':>14}{'vs BLAS':>10}")
    for fam, shape, nb, al, bc, bl in rows:
        print(f"{fam:<16}{shape:<22}{1e3 * nb:>10.2f}{1e3 * al:>14.2f}{bc / nb:>13.1f}x{bl / nb:>9.2f}x")
    # 2. GFLOP/s: distances (2 n M d) + score accumulation (2 n M d) = 4 n M d flops.
    flops = 4.0 * n_iso * 16 * 64
    xm = np.ascontiguousarray(m.T)
    prod = np.empty((n_iso, 16))
    t_gemm = best_of(lambda: np.matmul(x, xm, out=prod))
    gemm_rate = 2.0 * n_iso * 64 * 16 / t_gemm
    sq = np.ones((2048, 2048))
    t_sq = best_of(lambda: sq @ sq, 3)
    print(f"\n2. isotropic score: {flops / t_nb / 1e9:.1f} GFLOP/s = {flops / t_nb / gemm_rate:.0%} of the matching-shape "
          f"GEMM ({gemm_rate / 1e9:.1f} GFLOP/s); square 2048 GEMM peak {2 * 2048 ** 3 / t_sq / 1e9:.1f} GFLOP/s "
          f"({flops / t_nb / (2 * 2048 ** 3 / t_sq):.0%})")
    return rows


class Timed(targets.Target):
    """The base target, timing its score evaluations and recording (rows, tau) of each."""

    def __init__(self, base):
        self.base, self.dim, self.active_basis, self.t, self.calls = base, base.dim, base.active_basis, 0.0, []

    def _eval(self, x, tau, want_jac):
        t0 = time.perf_counter()
        out = self.base._eval(x, tau, want_jac)
        self.t += time.perf_counter() - t0
        self.calls.append((len(x), tau))
        return out


def _replay(target, x, calls):
    for _, tau in calls:
        target._eval(x, tau, False)


def bench_outside(quick):
    """Share of a run's time outside its score evaluations, as timed inside the run. Beside it,
    the same evaluations replayed back to back on a chunk of the input (hot caches, no other
    work between the calls): the part of the in-run evaluations' time that is owed to the run
    around them (cache misses on fresh arrays, thread wake-ups)."""
    n = 20_000 if quick else 100_000
    rng = np.random.default_rng(1)
    base = targets.IsotropicGaussianMixture(np.full(16, 1 / 16), 3 * rng.normal(size=(16, 64)), np.full(16, 0.2))
    t = Timed(base)
    x = base.sample(n, 0.999, rng)
    taus = schedules.log_snr(10)
    print(f"\n3. HEROISM time outside score evaluations (n={n}, M=16, d=64, 10 steps)")
    for K, N in ((2, 2), (3, 3), (4, 4)):
        Heroism(K, N).run(t, schedules.log_snr(2), x[:100])
        runs = []
        for _ in range(7):                      # the fastest of 7 runs, with its own score time
            t.t, t.calls = 0.0, []
            t0 = time.perf_counter()
            out = Heroism(K, N).run(t, taus, x)
            runs.append((time.perf_counter() - t0, t.t))
            del out                             # freeing the 51 MB output is not the run's time
        total, inside = min(runs)
        rows = t.calls[0][0]
        replay = best_of(lambda: _replay(base, x[:rows], t.calls), 2)
        print(f"   K={K} N={N}: {1 - inside / total:.1%} of {total:.2f} s outside the score; "
              f"{len(t.calls)} evaluations of {rows} rows take {inside:.2f} s in the run, {replay:.2f} s replayed")


def bench_structured(quick):
    print("\n4. jacobian='structured' vs 'full' (gmm-iso, HEROISM K=3 N=3, 12 steps to tau 0.3, n=64): seconds")
    dims = (8, 32, 128) if quick else (8, 32, 128, 512, 2048)
    t = targets.make("gmm-iso", 8, 0)         # load or compile both paths before timing (full is timed once)
    for mode in ("structured", "full"):
        Heroism(3, 3).run(t, schedules.log_snr(12, 0.3), t.sample(4, 0.999, np.random.default_rng(0)), jacobian=mode)
    prev = None
    for d in dims:
        t = targets.make("gmm-iso", d, 0)
        x = t.sample(64, 0.999, np.random.default_rng(0))
        taus = schedules.log_snr(12, 0.3)      # fewer steps fold the map at large d
        ts = best_of(lambda: Heroism(3, 3).run(t, taus, x, jacobian="structured"), 2)
        tf = best_of(lambda: Heroism(3, 3).run(t, taus, x, jacobian="full"), 0) if d <= 512 else np.nan
        grow = "" if prev is None else f"   growth per 4x d: structured {ts / prev[0]:.1f}x, full {tf / prev[1]:.1f}x"
        print(f"   d={d:<5} structured {ts:8.3f}  full {tf:8.3f}  full/structured {tf / ts:8.1f}x{grow}")
        prev = (ts, tf)


STUDY = """
[study]
name = "bench"
[defaults]
target = "gmm-aniso"
dim = 8
n = 20000
metrics = ["tv", "kl"]
[[grid]]
K = [2, 3, 4]
steps = [8, 12, 16, 24, 32, 48]
"""


def _timed_sweep(study, out, jobs, env):
    """Wall time of `theory-check run` in a fresh process (import and worker start-up included)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "theory_check.cli", "run", str(study), "--out", str(out),
                    "--jobs", str(jobs), "--no-progress"], check=True, env=env, capture_output=True)
    return time.perf_counter() - t0


def bench_sweep(quick):
    """Two comparisons: workers of one thread each, 2 vs 1 (how well a sweep spreads over
    workers), and the defaults, where --jobs 1 already runs its kernels on every core."""
    one = dict(os.environ, **sweep._ONE_THREAD)
    with tempfile.TemporaryDirectory() as tmp:
        p = pathlib.Path(tmp) / "bench.toml"
        p.write_text(STUDY if not quick else STUDY.replace("[8, 12, 16, 24, 32, 48]", "[8, 16]"))
        t = {(env, jobs): _timed_sweep(p, pathlib.Path(tmp) / f"o-{env}-{jobs}", jobs, one if env == "one" else None)
             for env in ("one", "all") for jobs in (1, 2)}
    print(f"\n5. sweep of {3 * (2 if quick else 6)} runs ({os.cpu_count()} cores), wall time of `theory-check run`:")
    print(f"   one thread per worker:  1 worker {t['one', 1]:.1f} s, 2 workers {t['one', 2]:.1f} s: "
          f"speed-up {t['one', 1] / t['one', 2]:.2f}x")
    print(f"   defaults (--jobs 1 threads its kernels on all cores): {t['all', 1]:.1f} s vs --jobs 2 "
          f"{t['all', 2]:.1f} s: speed-up {t['all', 1] / t['all', 2]:.2f}x")


def bench_memory_and_cache(quick):
    n, d, K = (20_000 if quick else 100_000), 64, 4
    t = targets.make("gmm-iso", d, 0)
    x = t.sample(n, 0.999, np.random.default_rng(0))
    taus = schedules.log_snr(4)
    Heroism(K, K).run(t, taus, x[:10])
    tracemalloc.start()
    Heroism(K, K).run(t, taus, x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    unit = 8.0 * n * d * K
    print(f"\n6. peak memory of HEROISM K={K} (n={n}, d={d}, jacobian none): {peak / 2 ** 20:.0f} MiB "
          f"= {peak / unit:.2f} x (n d K float64) = {peak / (8.0 * n * d):.2f} x the output (n d float64)")
    code = ("import time; t0 = time.perf_counter(); import numpy as np; from theory_check import targets, schedules;"
            "from theory_check.samplers import Heroism; t = targets.make('gmm-aniso', 4, 0);"
            "x = t.sample(100, 0.999, np.random.default_rng(0));"
            "Heroism(3, 3).run(t, schedules.log_snr(8), x, jacobian='full'); print(time.perf_counter() - t0)")
    runs_ = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout) for _ in range(2)]
    print(f"   fresh process, import + first run: {runs_[0]:.2f} s then {runs_[1]:.2f} s (Numba cache on disk)")


def _iso_mixture(rng):
    return targets.IsotropicGaussianMixture(np.full(16, 1 / 16), 3 * rng.normal(size=(16, 64)), np.full(16, 0.2))


SAMPLERS_7 = ("ddim", "dpm2m", "dpm3m", "dpm2s", "unipc", "deis", "ipndm", "heun", "rk4", "heroism")


def bench_samplers_outside(quick):
    """Every sampler's share of time outside its score evaluations (timed inside the run)."""
    n = 20_000 if quick else 100_000
    rng = np.random.default_rng(1)
    base = _iso_mixture(rng)
    t = Timed(base)
    x = base.sample(n, 0.999, rng)
    taus = schedules.log_snr(20)
    print(f"\n7. time outside score evaluations, every sampler (n={n}, M=16, d=64, 20 steps; goal <= 15%)")
    print(f"   {'sampler':10s} {'NFE':>5s} {'run s':>7s} {'score s':>8s} {'outside':>8s}")
    for name in SAMPLERS_7:
        smp = S.make(name)
        smp.run(t, schedules.log_snr(2), x[:100])
        runs = []
        for _ in range(3):
            t.t, t.calls = 0.0, []
            t0 = time.perf_counter()
            out = smp.run(t, taus, x)
            runs.append((time.perf_counter() - t0, t.t, out.nfe))
            del out
        total, inside, nfe = min(runs)
        print(f"   {name:10s} {nfe:5d} {total:7.2f} {inside:8.2f} {1 - inside / total:8.1%}")


def bench_diffusers(quick):
    """theory-check vs diffusers' DDIMScheduler and DPMSolverMultistepScheduler (2M), each driven
    by a score of the same isotropic mixture: ours by the Numba kernel, diffusers' by a batched
    torch float64 evaluation (log-sum-exp over the 16 components, one matmul for the distances),
    torch limited to the same number of threads as Numba. Time per NFE and the ratio."""
    try:
        import torch
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
    except ImportError:
        print("\n8. diffusers side by side: skipped (pip install -e '.[compare]')")
        return
    import numba
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    n = 20_000 if quick else 100_000
    rng = np.random.default_rng(2)
    base = _iso_mixture(rng)
    x = base.sample(n, 0.999, rng)
    w, m, c = torch.tensor(np.full(16, 1 / 16)), torch.tensor(base.means), torch.tensor(base.variances)

    def eps_torch(xt, tau):
        a = (1 - tau) ** 0.5
        v = a * a * c + tau                                   # (M,)
        am = a * m                                            # (M, d)
        d2 = (xt * xt).sum(1, keepdim=True) - 2 * xt @ am.T + (am * am).sum(1)
        lw = torch.log(w) - 0.5 * xt.shape[1] * torch.log(2 * torch.pi * v) - 0.5 * d2 / v
        r = torch.softmax(lw, dim=1) / v                      # r_k / v_k
        s = -xt * r.sum(1, keepdim=True) + r @ am
        return -(tau ** 0.5) * s

    def diffusers_run(scheduler):
        scheduler.set_timesteps(20)
        sample = torch.tensor(x)
        with torch.no_grad():
            for ts in scheduler.timesteps:
                tau = float(1 - scheduler.alphas_cumprod[int(ts)])
                sample = scheduler.step(eps_torch(sample, tau), ts, sample).prev_sample
        return sample

    probe = x[:1000]
    err = float(np.abs(eps_torch(torch.tensor(probe), 0.3).numpy() + np.sqrt(0.3) * base.score(probe, 0.3)).max())
    if not err < 1e-9:
        raise AssertionError(f"the torch score differs from the target's by {err:.3g}")
    print(f"\n8. theory-check vs diffusers schedulers (n={n}, M=16, d=64, 20 steps, float64, {threads} threads; goal >= 10x per NFE;\n   the torch score equals the target's to {err:.1e})")
    for name, sched in (("ddim", DDIMScheduler(num_train_timesteps=1000)),
                        ("dpm2m", DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++",
                                                              solver_order=2))):
        taus = schedules.log_snr(20)
        ours = S.make(name)
        ours.run(base, taus, x[:100])
        t_ours = best_of(lambda: ours.run(base, taus, x), 2)
        t_diff = best_of(lambda: diffusers_run(sched), 2)
        print(f"   {name:6s} theory-check {t_ours / 20 * 1e3:7.1f} ms/NFE, diffusers + torch score "
              f"{t_diff / 20 * 1e3:7.1f} ms/NFE: ratio {t_diff / t_ours:.1f}x")


def bench_jacobian_chain(quick):
    """The full-Jacobian mode's per-evaluation linear algebra: the chain J_i @ D_i and slogdet of
    n small d x d matrices, as GFLOP/s beside this machine's large-GEMM rate (2000 x 2000, all
    threads), NumPy's batched calls against the Numba kernels (one BLAS / LAPACK call per sample
    from the Numba threads); goal >= 50% of the GEMM rate for d >= 64."""
    rng = np.random.default_rng(3)
    A = rng.normal(size=(2000, 2000))
    gemm = 2 * 2000 ** 3 / best_of(lambda: A @ A, 3) / 1e9
    print(f"\n9. full-Jacobian chain and slogdet (GFLOP/s; large GEMM here {gemm:.1f}; goal >= 50% of it for d >= 64)")
    print(f"   {'d':>4s} {'n':>6s} {'matmul':>8s} {'chain':>8s} {'% GEMM':>7s} {'np slogdet':>11s} {'slogdet':>8s} {'% GEMM':>7s}")
    for d in (32, 64, 128):
        n = max(64, (2 ** 20 if quick else 2 ** 22) // (d * d))
        J, D = rng.normal(size=(n, d, d)), rng.normal(size=(n, d, d))
        out, sign, ld = np.empty_like(J), np.empty(n), np.empty(n)
        mm = 2 * n * d ** 3 / best_of(lambda: np.matmul(J, D), 3) / 1e9
        ch = 2 * n * d ** 3 / best_of(lambda: kernels.chain(J, D, out), 3) / 1e9
        lu = 2 / 3 * n * d ** 3
        ns = lu / best_of(lambda: np.linalg.slogdet(D), 3) / 1e9
        ks = lu / best_of(lambda: kernels.slogdet(D, sign, ld), 3) / 1e9
        print(f"   {d:4d} {n:6d} {mm:8.1f} {ch:8.1f} {ch / gemm:7.0%} {ns:11.1f} {ks:8.1f} {ks / gemm:7.0%}")


def _search_pair(spec):
    """(new, old) searches of one minimal-mode spec on the same deterministic probe function."""
    from theory_check import runs, search
    from theory_check import samplers as S
    target, sampler = runs.build(spec)
    jac = runs.jacobian_mode(target, spec)
    memo = {}

    def probe(steps, rows):
        if (steps, rows) not in memo:
            try:
                r = runs._one(spec, target, sampler, steps, jac, rows=None if rows == spec["n"] else rows)
                memo[steps, rows] = (r["tv"], r["tv_se"])
            except S.NumericalError:
                memo[steps, rows] = None
        return memo[steps, rows]
    args = (probe, spec["eps"], spec["n"], spec["max_steps"])
    return search.minimal_steps(*args), search.bisection(*args)


def bench_search(quick):
    """Item 10: the search of SPEC 12 against the bisection, as costs in steps at the full n divided by steps_min (a
    deterministic count: no timing). Synthetic power laws, then the built-in minimal-mode studies'
    --quick searches (each run once and shared by both searches)."""
    import math
    from theory_check import report, search, sweep
    print("\n10. minimal-NFE search cost (sum of steps x rows / n, in runs at steps_min; goal: median <= 2.5)")
    new, old = [], []
    for rel in (0.02, 0.05, 0.15):
        for p_ in (0.5, 1, 2, 3, 4, 6):
            for eps in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
                for A in (0.3, 1.0, 30.0):
                    probe = (lambda A, p_, rel: lambda s, r: (A * s ** -p_, rel * A * s ** -p_ * math.sqrt(4000 / r)))(A, p_, rel)
                    a, b = search.minimal_steps(probe, eps, 4000, 4096), search.bisection(probe, eps, 4000, 4096)
                    if a.steps_min:
                        new.append(a.cost / a.steps_min)
                        old.append(b.cost / b.steps_min)
    print(f"   synthetic power laws ({len(new)} curves): median new {np.median(new):.2f}, bisection {np.median(old):.2f}")
    print(f"   {'study':12s} {'searches':>8s} {'agree 3%':>9s} {'median new':>11s} {'bisection':>10s}  disagreements")
    for name in ("epsilon", "dimension", "tightness"):
        path = next(p for p in report.study_files() if p.stem == name)
        specs = [s for s in sweep.load_study(path, quick=True)[2] if s["mode"] == "minimal"]
        if quick:
            specs = specs[:6]
        rows, agree, bad = [], 0, []
        for spec in specs:
            a, b = _search_pair(spec)
            if a.censored or b.censored:
                agree += a.censored == b.censored
                if a.censored != b.censored:
                    bad.append((spec["target"], spec["dim"], spec["K"], a.steps_min, b.steps_min))
                continue
            rows.append((a.cost / a.steps_min, b.cost / b.steps_min))
            ok = abs(a.steps_min - b.steps_min) <= max(1, search.REL_RESOLUTION * max(a.steps_min, b.steps_min))
            agree += ok
            if not ok:
                bad.append((spec["target"], spec["dim"], spec["K"], a.steps_min, b.steps_min))
        r = np.array(rows) if rows else np.full((1, 2), np.nan)
        print(f"   {name:12s} {len(specs):8d} {agree:>4d}/{len(specs):<4d} {np.median(r[:, 0]):11.2f} {np.median(r[:, 1]):10.2f}  {bad or ''}")
    bench_committed_searches()


BISECTION_RECORD = pathlib.Path(__file__).with_name("bisection_20261127.csv")
RUN_PARAMS = ["target", "dim", "target_seed", "target_args", "score_eps", "sampler", "sampler_args", "K", "N", "nodes",
              "sweep", "schedule", "tau_min", "tau_max", "n", "seed", "init", "metrics", "jacobian", "eps", "max_steps"]


def _canonical(v):
    """A run parameter as one string whatever pandas made of its column (2, 2.0 and "2" alike; missing "");
    a product target's target_args as JSON with numbers as floats and make's defaults dropped (the rows of
    2026-11-27 wrote {"scale": 1.0, "width": 1.0}, today's write {} for the same target)."""
    import json
    from theory_check.targets import products
    if isinstance(v, float):
        return "" if np.isnan(v) else (str(int(v)) if v.is_integer() else repr(float(v)))
    if isinstance(v, str) and v.startswith("{"):
        args = {k: float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for k, x in json.loads(v).items()}
        return json.dumps({k: x for k, x in sorted(args.items()) if products.DEFAULTS.get(k) != x})
    return str(v)


def _why(old, new, eps):
    """Why two certified steps_min of one spec differ: changed numbers at a step both probed at the full n
    (the code between the two results), or a TV curve that crosses eps more than once."""
    from theory_check import report
    a, b = report.full_n_probes(old), report.full_n_probes(new)
    for row, who in ((old, "bisection"), (new, "new search")):
        if report.censored_by_prediction(row):
            return f"the {who} censored on its model's prediction, without a run at max_steps"
    common = [s for s in a if s in b and np.isfinite(a[s][0]) and np.isfinite(b[s][0])]
    dev = max((abs(a[s][0] - b[s][0]) / abs(a[s][0]) for s in common), default=0.0)
    passes = {s for d in (a, b) for s, (tv, se) in d.items() if np.isfinite(tv) and tv + 2 * se <= eps}
    fails = {s for d in (a, b) for s, (tv, se) in d.items() if not (np.isfinite(tv) and tv + 2 * se <= eps)}
    if passes and fails and min(passes) < max(fails):
        return f"TV + 2 se crosses eps more than once (passes at {min(passes)}, fails at {max(fails)})"
    if dev > 1e-9:
        return f"TV moved by up to {dev:.1e} relative at steps probed by both"
    return "same TV at every shared step: the searches bracketed differently"


def bench_committed_searches(root=None):
    """The committed results/ searches (the new search) against the bisection's record of the same specs (results/
    of 2026-11-27, commit 85fff84, numerics 84c5ebb2): agreement of steps_min within the resolution, costs, and
    the reason of every disagreement. A deterministic count from the CSVs: no search is rerun."""
    import pandas as pd
    from theory_check import report, search
    root = pathlib.Path(root or pathlib.Path(__file__).resolve().parent.parent / "results")
    old = pd.read_csv(BISECTION_RECORD, keep_default_na=False, na_values=[""])
    print("   committed searches: results/*.csv (new search) vs the bisection's record of 2026-11-27 "
          f"({BISECTION_RECORD.name})")
    print(f"   {'study':12s} {'matched':>8s} {'agree 3%':>9s} {'median new':>11s} {'bisection':>10s}")
    reasons = []
    for name, o in old.groupby("study", sort=False):
        path = root / f"{name}.csv"
        if not path.exists():
            continue
        n = pd.read_csv(path, keep_default_na=False, na_values=[""])
        n = n[(n["mode"] == "minimal") & (n["status"] == "ok")]
        if "search_cost" not in n:
            print(f"   {name:12s} made by the bisection itself (no search_cost column): nothing to compare")
            continue
        key = lambda d: d[RUN_PARAMS].apply(lambda c: c.map(_canonical)).agg("|".join, axis=1)
        m = o.assign(_k=key(o)).merge(n.assign(_k=key(n)), on="_k", suffixes=("_old", ""))
        agree, ratios = 0, []
        for r in m.to_dict("records"):
            a, b, ca, cb = r["steps_min"], r["steps_min_old"], bool(r["censored"]), bool(r["censored_old"])
            if ca or cb:
                ok = ca == cb
            else:
                ok = abs(a - b) <= max(1, search.REL_RESOLUTION * max(a, b))
                ratios.append((report.search_cost(r) / a, report.search_cost({"search": r["search_old"]}) / b))
            agree += ok
            if not ok:
                old_row = {"search": r["search_old"], "n": r["n"], "censored": r["censored_old"], "max_steps": r["max_steps"]}
                reasons.append(f"{name}: {r['target']} d={r['dim']} {r['sampler']} K={r['K']} N={r['N']} eps={r['eps']}: "
                               f"bisection {'censored' if cb else int(b)}, new {'censored' if ca else int(a)} ({_why(old_row, r, r['eps'])})")
        q = np.array(ratios) if ratios else np.full((1, 2), np.nan)
        print(f"   {name:12s} {len(m):8d} {agree:>4d}/{len(m):<4d} {np.median(q[:, 0]):11.2f} {np.median(q[:, 1]):10.2f}")
    for line in reasons:
        print("     " + line)


_DEFAULT_PATH = """
import sys, time
import numpy as np
import theory_check
if sys.argv[1] == "tuned":
    theory_check.tune_process()
import numba
from theory_check import sample, samplers, schedules, targets
if sys.argv[2] == "ddim":
    rng = np.random.default_rng(1)
    t = targets.IsotropicGaussianMixture(np.full(16, 1 / 16), 3 * rng.normal(size=(16, 64)), np.full(16, 0.2))
    x = t.sample(int(sys.argv[3]), 0.999, rng)
    run = lambda: samplers.DDIM().run(t, schedules.log_snr(20), x)
    samplers.DDIM().run(t, schedules.log_snr(2), x[:100])
else:
    t = targets.make("gmm-aniso", dim=16, seed=0)
    run = lambda: sample(t, samplers.Heroism(K=3, N=3), schedules.log_snr(40), n=int(sys.argv[3]), seed=0, jacobian="full")
    sample(t, samplers.Heroism(K=3, N=3), schedules.log_snr(40), n=50, seed=0, jacobian="full")
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter(); run(); best = min(best, time.perf_counter() - t0)
print(best, numba.threading_layer())
"""


def _default_path_time(mode, case, n, layer=None):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")}
    if layer:
        env["NUMBA_THREADING_LAYER"] = layer
    out = subprocess.run([sys.executable, "-c", _DEFAULT_PATH, mode, case, str(n)], capture_output=True,
                         text=True, env=env, check=True).stdout.split()
    return float(out[0]), out[1]


def bench_default_path(quick):
    """Item 11: a plain library call against the tuned process (the CLI's), each in a fresh process,
    interleaved; on the idle machine and beside one busy process (a machine shared with other work,
    where idle threads that spin take the cores the computation needs)."""
    cases = (("ddim", 20_000 if quick else 100_000, "DDIM, isotropic mixture d 64, 20 steps"),
             ("readme", 4000 if quick else 20_000, "README example: HEROISM K 3, gmm-aniso d 16, full Jacobian"))
    print("\n11. default path: plain library call vs after tune_process(), fresh processes (goal: plain <= 1.2 x tuned)")
    for load in (False, True):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load else None
        try:
            for case, n, what in cases:
                t = {m: min(_default_path_time(m, case, n) for _ in range(2)) for m in ("plain", "tuned")}
                print(f"   {'one busy process' if load else 'idle machine':16s} {what} (n {n}): plain {t['plain'][0]:.2f} s, "
                      f"tuned {t['tuned'][0]:.2f} s, plain/tuned {t['plain'][0] / t['tuned'][0]:.2f} "
                      f"(Numba threading layer {t['plain'][1]})")
            if load:        # what the TBB layer buys: the same plain call on OpenMP, whose idle threads spin
                omp = _default_path_time("plain", case, n, layer="omp")[0]
                print(f"   {'':16s} the same plain call on Numba's OpenMP layer: {omp:.2f} s = {omp / t['tuned'][0]:.2f} x tuned")
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    bench_scores(a.quick)
    bench_outside(a.quick)
    bench_structured(a.quick)
    bench_sweep(a.quick)
    bench_memory_and_cache(a.quick)
    bench_samplers_outside(a.quick)
    bench_diffusers(a.quick)
    bench_jacobian_chain(a.quick)
    bench_search(a.quick)
    bench_default_path(a.quick)
    return 0
