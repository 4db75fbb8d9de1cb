"""One run of a study: a spec (a flat dict of parameters) in, one tidy row (a flat dict) out.

`evaluate(spec)` is a pure function of the spec: every random draw is seeded from it, so the
row does not depend on which process or machine computes it. A numerical failure of the
sampler is recorded in the row (status "failed", the reason) rather than raised.

Spec keys (defaults in DEFAULTS):
    target, dim, target_seed        the benchmark instance (targets.make)
    target_args                     the product families' shape parameters (a table: scale, width)
    score_eps                       > 0 wraps the target in Perturbed(score_eps, seed=target_seed)
    sampler, sampler_args           the sampler (samplers.make): a built-in name or alias, or
                                    "package.module:attr"; sampler_args its parameters (a table)
    K, N, nodes, sweep              HEROISM's parameters (K may be "log"; N "K", "K-1", "2K", "paper")
    schedule, steps, tau_min, tau_max   log_snr | edm | paper (paper: T = steps + 1 points)
    nfe_budget                      if set, steps = max(1, nfe_budget // NFE per step)
    n, seed, init                   sample size, seed of x_in, "exact" | "gaussian"
    metrics                         list of: tv, kl, coupling, w2
    mode                            "fixed" | "minimal" (smallest steps with TV + 2 se <= eps)
    eps, max_steps                  for mode = "minimal"
"""

import json
import math
import os
import time

import numpy as np

from . import checks
from . import metrics as M
from . import samplers as S
from . import schedules, targets
from .sampling import INITS, sample

__all__ = ["DEFAULTS", "METRICS", "SCHEDULES", "normalise", "build", "make_sampler", "schedule", "evaluate", "cost",
           "memory_estimate", "available_memory", "check_memory"]

DEFAULTS = dict(target="gmm-aniso", dim=4, target_seed=0, target_args={}, score_eps=0.0,
                sampler="heroism", sampler_args={}, K=3, N="K", nodes="equispaced", sweep="jacobi",
                schedule="log_snr", steps=16, tau_min=1e-3, tau_max=1 - 1e-3, nfe_budget=None,
                n=2000, seed=0, init="exact", metrics=["tv", "kl"], jacobian="auto",
                mode="fixed", eps=None, max_steps=4096, w2_method="sliced")
METRICS = ("tv", "kl", "coupling", "w2")
SCHEDULES = ("log_snr", "edm", "paper")


def normalise(spec):
    """Fill defaults and validate a spec; the result is what gets hashed and stored.

    Parameters
    ----------
    spec : dict
        Run parameters (keys of `DEFAULTS`; unknown keys are an error).

    Returns
    -------
    dict
        The complete, canonical spec (sampler name canonical, metrics in one order).

    Raises
    ------
    ValueError
        Naming the first bad parameter; nothing is computed or allocated (the memory estimate
        is checked before the target is built).

    Examples
    --------
    >>> normalise(dict(sampler="dpmpp_2m", metrics=["kl", "tv"]))["sampler"]
    'dpm2m'
    """
    unknown = set(spec) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown run parameter(s): {', '.join(sorted(unknown))}")
    out = {**DEFAULTS, **spec}
    out["sampler"] = S.canonical(out["sampler"])
    for name in ("sampler_args", "target_args"):
        args = out[name]
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise ValueError(f"{name} must be a table of named parameters, got {args!r}")
        bad = [k for k, v in args.items() if not isinstance(v, (bool, int, float, str))]
        if bad:
            raise ValueError(f"{name}: {bad[0]} must be a number, a boolean or a string, got {checks.show(args[bad[0]])}")
        out[name] = dict(sorted(args.items()))
    if out["sampler"] != "heroism":
        out.update(K=None, N=None, nodes=None, sweep=None)
    else:
        out["N"] = S.parse_N(out["N"], out["K"])
    if out["schedule"] not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {checks.show(out['schedule'])}")
    if isinstance(out["metrics"], str) or not isinstance(out["metrics"], (list, tuple)) or not out["metrics"]:
        raise ValueError(f"metrics must be a non-empty list among {METRICS}, got {checks.show(out['metrics'])}")
    bad = [m for m in out["metrics"] if m not in METRICS]
    if bad:
        raise ValueError(f"metrics must be among {METRICS}, got {bad}")
    out["metrics"] = [m for m in METRICS if m in out["metrics"]]      # one order: duplicates collapse
    if out["mode"] not in ("fixed", "minimal"):
        raise ValueError(f"mode must be 'fixed' or 'minimal', got {checks.show(out['mode'])}")
    if out["mode"] == "minimal" and not (isinstance(out["eps"], (int, float)) and not isinstance(out["eps"], bool)
                                         and 0 < out["eps"] < 1):
        raise ValueError(f"eps must be in (0, 1) for mode = 'minimal', got {checks.show(out['eps'])}")
    _validate_values(out)
    check_memory(out)               # before the target is built: gmm-aniso at d = 1e5 is 240 GB
    build(out)                      # raises ValueError on any bad value, before anything runs
    return out


JACOBIANS = ("auto", "none", "full", "structured", "diagonal")
W2_METHODS = ("exact", "sliced")
W2_EXACT_MAX_N = 10_000         # POT's network simplex is O(n^3): ~1 min at n = 1e4 here


def _validate_values(out):
    """Every value of a run, each error naming its parameter (SPEC: exit 2, nothing computed)."""
    for k, minimum in (("dim", 1), ("target_seed", 0), ("steps", 1), ("n", 1), ("seed", 0), ("max_steps", 1)):
        out[k] = checks.integer(out[k], k, minimum=minimum)
    if out["nfe_budget"] is not None:
        out["nfe_budget"] = checks.integer(out["nfe_budget"], "nfe_budget", minimum=1)
    out["score_eps"] = checks.positive(out["score_eps"], "score_eps", allow_zero=True)
    out["tau_min"], out["tau_max"] = checks.tau(out["tau_min"], "tau_min"), checks.tau(out["tau_max"], "tau_max")
    if not out["tau_min"] < out["tau_max"]:
        raise ValueError(f"tau_min must be < tau_max, got {out['tau_min']} >= {out['tau_max']}")
    if out["init"] not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {checks.show(out['init'])}")
    if out["jacobian"] not in JACOBIANS:
        raise ValueError(f"jacobian must be one of {JACOBIANS}, got {checks.show(out['jacobian'])}")
    if out["w2_method"] not in W2_METHODS:
        raise ValueError(f"w2_method must be one of {W2_METHODS}, got {out['w2_method']!r}")
    if "w2" in out["metrics"] and out["w2_method"] == "exact" and out["n"] > W2_EXACT_MAX_N:
        raise ValueError(f"n must be <= {W2_EXACT_MAX_N} with w2_method = 'exact' (an O(n^3) assignment), "
                         f"got {out['n']}; use 'sliced'")
    if out["mode"] == "minimal" and out["nfe_budget"] is not None:
        raise ValueError("nfe_budget applies to mode = 'fixed' only")


# Rough per-target memory of building and evaluating it (bytes), to refuse hopeless requests early.
def _target_bytes(name, d):
    if name == "gmm-aniso":
        return 3 * d * d * 8 * 6           # covariances, eigenvectors, precisions, eigh workspace
    return 64 * d * 8


def memory_estimate(spec):
    """Bytes a run needs at its peak, roughly: the target, the samples and their copies, one chunk
    of derivatives (a full Jacobian carries d x d floats per sample), and exact W2's cost matrix."""
    n, d = spec["n"], spec["dim"]
    total = _target_bytes(spec["target"], d) + 8 * n * d * 8
    if spec["jacobian"] in ("full", "auto") and {"tv", "kl"} & set(spec["metrics"]) or spec["mode"] == "minimal":
        per = d * d * 8
        if spec["jacobian"] == "full" or spec["target"] in ("gmm-aniso",):
            total += max(16, 2 ** 18 // (d * (d + 1))) * per * 16
    if "w2" in spec["metrics"] and spec["w2_method"] == "exact":
        total += 3 * n * n * 8
    return total


def available_memory():
    """MemAvailable from /proc/meminfo (bytes), else physical memory, else None."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(spec):
    """ValueError (naming n and dim) when `memory_estimate(spec)` exceeds `available_memory()`."""
    need, have = memory_estimate(spec), available_memory()
    if have is not None and need > have:
        raise ValueError(f"n, dim: this run needs about {need / 2 ** 30:.3g} GiB (n = {spec['n']}, dim = {spec['dim']}, "
                         f"target {spec['target']}), more than the {have / 2 ** 30:.3g} GiB available")


def build(spec):
    """(target, sampler) for a normalised spec: `targets.make` (wrapped in `targets.Perturbed`
    when score_eps > 0) and `make_sampler`."""
    target = targets.make(spec["target"], spec["dim"], spec["target_seed"], **spec["target_args"])
    if spec["score_eps"]:
        target = targets.Perturbed(target, spec["score_eps"], seed=spec["target_seed"])
    return target, make_sampler(spec)


def make_sampler(spec):
    """The sampler of a spec: `samplers.make(sampler, **params)` with HEROISM's K, N, nodes, sweep,
    DDPM's seed, and `sampler_args`."""
    params = {}
    if spec["sampler"] == "heroism":
        params = dict(K=spec["K"], N=spec["N"], nodes=spec["nodes"], sweep=spec["sweep"])
    elif spec["sampler"] == "ddpm":
        params = dict(seed=spec["seed"])
    return S.make(spec["sampler"], **{**params, **spec["sampler_args"]})


def schedule(spec, steps):
    """The noise levels of a spec at `steps` steps (the paper's schedule: T = steps + 1 points)."""
    if spec["schedule"] == "paper":
        return schedules.paper(steps + 1)
    if spec["schedule"] == "edm":
        return schedules.edm(steps, spec["tau_min"], spec["tau_max"])
    return schedules.log_snr(steps, spec["tau_min"], spec["tau_max"])


def jacobian_mode(target, spec):
    if not {"tv", "kl"} & set(spec["metrics"]) and spec["mode"] == "fixed":
        return "none"
    if spec["jacobian"] != "auto":
        return spec["jacobian"]
    if getattr(target, "diagonal", False):
        return "diagonal"
    U = target.active_basis
    return "structured" if U is not None and U.shape[1] + 1 < target.dim else "full"


def cost(spec):
    """A rough relative cost of evaluating a spec (score evaluations x samples x per-sample
    work), used only to order runs, longest first. A minimal-mode search is charged as a run at
    max_steps / 4, about what its doubling and bisection add up to; the reference solver as 20
    evaluations per step (DOP853 takes 12 per accepted step, and finer steps than the schedule)."""
    if spec["mode"] == "fixed" and spec["nfe_budget"]:
        nfe = spec["nfe_budget"]
    else:
        steps = max(1, spec["max_steps"] // 4) if spec["mode"] == "minimal" else spec["steps"]
        nfe = make_sampler(spec).nfe(steps)
    return float(nfe) * spec["n"] * spec["dim"] * (spec["dim"] if spec["jacobian"] == "full" else 1)


def _one(spec, target, sampler, steps, jac):
    """Run at `steps` steps; returns the metric fields of a row."""
    taus = schedule(spec, steps)
    r = sample(target, sampler, taus, spec["n"], spec["init"], spec["seed"], jac)
    row = dict(steps=steps, nfe=r.nfe, tau_end=float(taus[-1]), sample_time=r.wall_time)
    if jac != "none":
        m = M.tv_kl(target, r)
        row.update(tv=m.tv, tv_se=m.tv_se, kl=m.kl, kl_se=m.kl_se)
    if "coupling" in spec["metrics"]:
        ref = S.Reference(1e-10, 1e-12).run(target, taus, r.x_in).x
        row["coupling_rmse"] = M.coupling_rmse(r, ref)
    if "w2" in spec["metrics"]:
        row["w2"], row["w2_floor"] = M.w2_report(target, r, spec["w2_method"], seed=spec["seed"])
    if r.score_error is not None:
        row["score_err"], row["jac_err"] = r.score_error
    return row


def evaluate(spec):
    """The row for one spec (normalised by `normalise`): the spec, the metrics, status "ok" or
    "failed" with the error (any exception of the run: the sweep goes on), and the wall time.
    A pure function of the spec: every random draw is seeded from it."""
    t0 = time.perf_counter()
    target, sampler = build(spec)
    jac = jacobian_mode(target, spec)
    row = dict(spec, metrics=",".join(spec["metrics"]), sampler_args=json.dumps(spec["sampler_args"]),
               target_args=json.dumps(spec["target_args"]),
               jacobian=jac, status="ok", error="")
    try:
        if spec["mode"] == "fixed":
            if spec["nfe_budget"]:
                row["steps"] = sampler.steps_for_budget(spec["nfe_budget"])
            row.update(_one(spec, target, sampler, row["steps"], jac))
        else:
            row.update(_minimal(spec, target, sampler, jac))
    except (S.NumericalError, FloatingPointError) as exc:
        row.update(status="failed", error=str(exc))
    except Exception as exc:        # noqa: BLE001 -- any failure of one run is that run's row, not the sweep's
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    row["wall_time"] = time.perf_counter() - t0
    return row


REL_RESOLUTION = 0.03


def _minimal(spec, target, sampler, jac):
    """Smallest steps with TV + 2 se <= eps, to 3% (REL_RESOLUTION): doubling from 2 steps, then
    geometric bisection.
    A run that folds or goes non-finite counts as not reaching eps. Every evaluation is kept
    in the row (`search`) for provenance."""
    eps, cap = spec["eps"], spec["max_steps"]
    seen = {}

    def ok(steps):
        try:
            r = _one(spec, target, sampler, steps, jac)
            seen[steps] = r
            return r["tv"] + 2 * r["tv_se"] <= eps
        except S.NumericalError:
            seen[steps] = dict(steps=steps, tv=math.nan, tv_se=math.nan, nfe=math.nan)
            return False

    lo, hi = 0, 2                   # invariant: lo fails (0 trivially), hi is the candidate
    while hi <= cap and not ok(hi):
        lo, hi = hi, 2 * hi
    censored = hi > cap
    if not censored:
        # Geometric bisection to 3% relative resolution (NFE enters every fit on a log scale;
        # integer resolution at a thousand steps would double the cost for nothing).
        while hi - lo > max(1, REL_RESOLUTION * hi):
            mid = hi // 2 if lo == 0 else int(round(math.sqrt(lo * hi)))
            mid = min(max(mid, lo + 1), hi - 1)
            if ok(mid):
                hi = mid
            else:
                lo = mid
    best = seen[hi] if not censored else seen[max(seen)]
    search = [[s, seen[s].get("tv"), seen[s].get("tv_se")] for s in sorted(seen)]
    return dict(best, censored=bool(censored), steps_min=np.nan if censored else hi,
                nfe_min=np.nan if censored else best["nfe"], search=json.dumps(search))
