"""One run of a study: a spec (a flat dict of parameters) in, one tidy row (a flat dict) out.

`evaluate(spec)` is a pure function of the spec: every random draw is seeded from it, so the
row does not depend on which process or machine computes it. A numerical failure of the
sampler is recorded in the row (status "failed", the reason) rather than raised.

Spec keys (defaults in DEFAULTS)::

    target, dim, target_seed        the benchmark instance (targets.make)
    target_args                     the product families' shape parameters (a table: scale, width)
    score_eps, score_field          a score-error field on the target (targets.errors): "smooth" (Perturbed)
                                    and "fourier" of size score_eps > 0 (fourier: frequency score_omega;
                                    separable on the products), "quantised" at score_levels training levels,
                                    "learned" (an MLP trained by denoising score matching, score_eps 0)
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

from . import checks, search
from . import metrics as M
from . import samplers as S
from . import schedules, targets
from .sampling import INITS, auto_jacobian, sample

__all__ = ["DEFAULTS", "METRICS", "SCHEDULES", "normalise", "build", "make_sampler", "schedule", "evaluate", "cost",
           "memory_estimate", "available_memory", "check_memory"]

DEFAULTS = dict(target="gmm-aniso", dim=4, target_seed=0, target_args={}, score_eps=0.0, score_field="smooth",
                score_omega=1.0, score_levels=1000,
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
        out[name] = {k: _canonical_number(v) for k, v in sorted(args.items())}
    _check_args(out)
    if out["sampler"] != "heroism":
        out.update(K=None, N=None, nodes=None, sweep=None)
    else:
        out["N"] = S.parse_N(out["N"], out["K"])
        if out["K"] == 1:       # one node per step: the sweeps have nothing to refine (the same map, the same NFE)
            out["N"] = 1
    out["schedule"] = {"karras": "edm"}.get(out["schedule"], out["schedule"])    # the EDM grid's other name
    if isinstance(out["target"], str):
        out["target"] = targets.canonical(out["target"])
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
    # raises ValueError on any bad value, before anything runs (the error field's parameters are
    # checked by _validate_field: building it would draw its normalisation sample for every spec)
    target, sampler = build(out, field=False)
    _check_modes(out, target, sampler)
    return out


def _check_modes(out, target, sampler):
    """A metric the run cannot compute is refused before the run, never dropped from its row:
    TV, KL and the minimal-NFE search need the log-determinant of a deterministic map, and an
    explicit Jacobian mode must suit the target."""
    if isinstance(sampler, S.Sampler) and type(sampler).nfe is S.Sampler.nfe:
        raise ValueError(f"sampler: {type(sampler).__name__} must implement nfe(steps), the number of score "
                         "evaluations of a run (see samplers.Sampler)")
    wants = [m for m in ("tv", "kl") if m in out["metrics"]] + (["mode = 'minimal'"] if out["mode"] == "minimal" else [])
    if wants:
        what = " and ".join(wants)
        if out["jacobian"] == "none":
            raise ValueError(f"metrics: {what} need the map's log-determinant, which jacobian = 'none' does not "
                             "compute; use jacobian = 'auto', or metrics coupling, w2 alone")
        if not getattr(sampler, "deterministic", True):
            raise ValueError(f"metrics: {what} need the log-determinant of a deterministic map and {sampler!r} is "
                             "stochastic; use metrics w2 or coupling")
        if out["n"] < 2:
            raise ValueError(f"n must be >= 2 for {what} (a standard error needs two samples), got {out['n']}")
    keeps = targets.KEEPS[out["score_field"]]             # `target` is the base: the field is not built here
    structured = target.active_basis is not None and "structured" in keeps
    diagonal = getattr(target, "diagonal", False) and "diagonal" in keeps
    if out["jacobian"] == "structured" and not structured:
        raise ValueError(f"jacobian: 'structured' needs a target with an active basis and {out['target']}"
                         f"{' with a score error' if out['score_field'] else ''} has none; use 'full' or 'auto'")
    if out["jacobian"] == "diagonal" and not diagonal:
        raise ValueError(f"jacobian: 'diagonal' needs a product target (rademacher-cube, uniform-cube, product-gmm) "
                         f"and {out['target']}{' with a score error' if out['score_field'] else ''} is not one; use 'full' or 'auto'")


def _canonical_number(v):
    """An integral float as an int (order = 2.0 is order = 2), so that one run has one key."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 53:
        return int(v)
    return v


# Parameters that are run parameters of their own: given in sampler_args they would run while
# the row recorded the run parameter's value, so they are refused there.
_OWN_PARAMETERS = {"heroism": ("K", "N", "nodes", "sweep"), "ddpm": ("seed",)}


def _check_args(out):
    """sampler_args and target_args against the run's own parameters and the target's
    signature; target_args equal to the target's defaults are dropped (one run, one key)."""
    own = [k for k in _OWN_PARAMETERS.get(out["sampler"], ()) if k in out["sampler_args"]]
    if own:
        raise ValueError(f"sampler_args: {own[0]} is a run parameter of {out['sampler']}: set {own[0]} = "
                         f"{out['sampler_args'][own[0]]!r} beside sampler, not in sampler_args (the row records it)")
    from .targets import products
    name, args = out["target"], out["target_args"]
    allowed = products.PARAMS.get(name, ())
    for k in args:
        if k in ("dim", "seed", "target_seed"):
            raise ValueError(f"target_args: {k} is not a shape parameter; set it as the run parameter "
                             f"{'target_seed' if 'seed' in k else k} (--{'target-seed' if 'seed' in k else k})")
        if k not in allowed:
            raise ValueError(f"target_args: {k} is not a parameter of {name} "
                             f"({', '.join(allowed) if allowed else 'it takes none'})")
    defaults = products.DEFAULTS
    out["target_args"] = {k: v for k, v in args.items()
                          if not (k in defaults and not isinstance(v, bool) and v == defaults[k])}


JACOBIANS = ("auto", "none", "full", "structured", "diagonal")
SCORE_BANDS = (0.0, 1e-2, 1e-1, 1.0)        # tau bands of the rows' score_err_bands
MAX_STEPS = 10 ** 6             # steps, max_steps and nfe_budget: beyond, a schedule alone is tens of MB per run
W2_METHODS = ("exact", "sliced")
W2_EXACT_MAX_N = 10_000         # POT's network simplex is O(n^3): ~1 min at n = 1e4 here


def _validate_values(out):
    """Every value of a run, each error naming its parameter (SPEC: exit 2, nothing computed)."""
    for k, minimum in (("dim", 1), ("target_seed", 0), ("steps", 1), ("n", 1), ("seed", 0), ("max_steps", 1)):
        out[k] = checks.integer(out[k], k, minimum=minimum)
    for k in ("steps", "max_steps", "nfe_budget"):
        if out[k] is not None and checks.integer(out[k], k, minimum=1) > MAX_STEPS:
            raise ValueError(f"{k} must be <= {MAX_STEPS} (a schedule of {out[k]} noise levels; the largest "
                             f"studies use 4096 steps), got {out[k]}")
    if out["nfe_budget"] is not None:
        out["nfe_budget"] = checks.integer(out["nfe_budget"], "nfe_budget", minimum=1)
    out["score_eps"] = checks.positive(out["score_eps"], "score_eps", allow_zero=True)
    _validate_field(out)
    out["tau_min"], out["tau_max"] = checks.tau(out["tau_min"], "tau_min"), checks.tau(out["tau_max"], "tau_max")
    if not out["tau_min"] < out["tau_max"]:
        raise ValueError(f"tau_min must be < tau_max, got {out['tau_min']} >= {out['tau_max']}")
    if out["schedule"] == "paper":
        try:
            schedules.paper(out["steps"] + 1)
        except ValueError as exc:
            raise ValueError(f"steps: the paper's schedule has no {out['steps']} steps in float64 ({exc})") from None
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


def _validate_field(out):
    """The score-error field's parameters; those of an inactive field are None (one run, one key)."""
    field = "smooth" if out["score_field"] is None else out["score_field"]     # None: a normalised spec's inactive field
    if field not in targets.FIELDS:
        raise ValueError(f"score_field must be one of {targets.FIELDS}, got {checks.show(field)}")
    if field == "quantised" and out["score_eps"]:
        raise ValueError("score_eps must be 0 with score_field = 'quantised': its error is set by score_levels")
    if field == "learned" and out["score_eps"]:
        raise ValueError("score_eps must be 0 with score_field = 'learned': its error is set by the training")
    active = field in ("quantised", "learned") or out["score_eps"] > 0
    out["score_field"] = field if active else None
    out["score_omega"] = checks.positive(out["score_omega"], "score_omega") if active and field == "fourier" else None
    if active and field == "quantised":
        out["score_levels"] = checks.integer(out["score_levels"], "score_levels", minimum=1)
        if out["score_levels"] > 1000:
            raise ValueError(f"score_levels must be <= 1000 (the timesteps of DDPM's grid), got {out['score_levels']}")
    else:
        out["score_levels"] = None


# Peak memory of a run (bytes), estimated from its spec alone so that a hopeless request is refused
# before anything is allocated. Each term is a count of float64 arrays, measured with tracemalloc
# on runs of every path (tests/test_reliability_iii.py checks that the estimate bounds the measured
# peak); the counts carry a margin of about 1.5.
_SAMPLE_ARRAYS = 12                 # x_in, x_out, logp_in, the sampler's states and its metric copies
_FULL_ARRAYS = 24                   # (rows, d, d) derivative arrays alive in one chunk (full mode)
_PERTURBED_DRAWS = 4096             # Perturbed's normalisation sample (targets.Perturbed)


def _jacobian_of(spec):
    """The Jacobian mode a run will use, from its spec alone (`jacobian_mode` without the target)."""
    from .targets import products
    if not {"tv", "kl"} & set(spec["metrics"]) and spec["mode"] == "fixed":
        return "none"
    if spec["jacobian"] != "auto":
        return spec["jacobian"]
    keeps = targets.KEEPS[spec.get("score_field")]
    if spec["target"] in products.NAMES:
        return "diagonal" if "diagonal" in keeps else "full"
    return "full" if spec["target"] == "gmm-aniso" or spec["dim"] <= 4 or "structured" not in keeps else "structured"


def _target_bytes(spec):
    d = spec["dim"]
    total = 64 * d * 8
    if spec["target"] in ("gmm-aniso", "subspace-gmm"):     # M = 3 ambient d x d covariances, eigh work
        total += 3 * d * d * 8 * 6
    field = spec.get("score_field")
    if field == "smooth":                                   # Perturbed: A, R (d x width), its draws
        width = max(d, 8)
        total += (3 * d * width + 4 * _PERTURBED_DRAWS * max(d, width)) * 8
    elif field == "fourier":                                # features (m = 64, or 16 per coordinate)
        total += (4 * _PERTURBED_DRAWS * d + 6 * 256 * d * 64 + 4 * spec["n"] * d * 16) * 8
    elif field == "learned":                                # the layers' Jacobians, (rows, width, d) each
        rows = min(spec["n"], S.Sampler.chunk_rows(d, "full"))
        total += 6 * rows * targets.learned.TRAINING["width"] * (d + 2) * 8
    return total


def memory_estimate(spec):
    """Bytes a run needs at its peak, roughly: the target (and a score-error field), the samples
    and their copies, one chunk of derivatives (a full Jacobian carries d x d floats per sample,
    a chunk has `Sampler.chunk_rows` rows), and exact W2's cost matrix."""
    n, d = spec["n"], spec["dim"]
    total = _target_bytes(spec) + _SAMPLE_ARRAYS * n * d * 8
    if _jacobian_of(spec) == "full":
        rows = min(n, S.Sampler.chunk_rows(d, "full"))
        total += _FULL_ARRAYS * rows * d * d * 8
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


def build(spec, field=True):
    """(target, sampler) for a normalised spec: `targets.make` (wrapped in `targets.Perturbed`
    when score_eps > 0, or another field of targets.errors, unless field=False) and `make_sampler`."""
    target = targets.make(spec["target"], spec["dim"], spec["target_seed"], **spec["target_args"])
    field = spec.get("score_field") if field else None
    if field == "smooth":
        target = targets.Perturbed(target, spec["score_eps"], seed=spec["target_seed"])
    elif field == "fourier":
        target = targets.FourierError(target, spec["score_eps"], omega=spec["score_omega"], seed=spec["target_seed"],
                                      separable=target.diagonal)
    elif field == "quantised":
        target = targets.QuantisedError(target, spec["score_levels"])
    elif field == "learned":
        target = targets.LearnedScore(target, dict(seed=spec["target_seed"]))
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
    return auto_jacobian(target, None)


def cost(spec):
    """A rough relative cost of evaluating a spec (score evaluations x samples x per-sample
    work), used only to order runs, longest first. A minimal-mode search is charged as a run at
    max_steps / 4 (a rough stand-in for its probes); the reference solver as 20
    evaluations per step (DOP853 takes 12 per accepted step, and finer steps than the schedule)."""
    if spec["mode"] == "fixed" and spec["nfe_budget"]:
        nfe = spec["nfe_budget"]
    else:
        steps = max(1, spec["max_steps"] // 4) if spec["mode"] == "minimal" else spec["steps"]
        try:
            nfe = make_sampler(spec).nfe(steps)
        except (Exception, SystemExit):     # noqa: BLE001 -- a user's sampler fails in its row, not while runs are ordered
            nfe = steps
    return float(nfe) * spec["n"] * spec["dim"] * (spec["dim"] if spec["jacobian"] == "full" else 1)


def _one(spec, target, sampler, steps, jac, rows=None):
    """Run at `steps` steps (on the first `rows` samples, default all); the metric fields of a row."""
    taus = schedule(spec, steps)
    r = sample(target, sampler, taus, spec["n"], spec["init"], spec["seed"], jac, rows=rows)
    row = dict(steps=steps, nfe=r.nfe, tau_end=float(taus[-1]), sample_time=r.wall_time)
    if jac != "none":
        m = M.tv_kl(target, r)
        row.update(tv=m.tv, tv_se=m.tv_se, kl=m.kl, kl_se=m.kl_se, ess=m.ess, kl_tail=m.kl_tail,
                   kl_se_reliable=m.kl_se_reliable)
    if "coupling" in spec["metrics"]:
        ref = S.Reference(1e-10, 1e-12).run(target, taus, r.x_in).x
        row["coupling_rmse"] = M.coupling_rmse(r, ref)
    if "w2" in spec["metrics"]:
        row["w2"], row["w2_floor"] = M.w2_report(target, r, spec["w2_method"], seed=spec["seed"])
    if r.score_error is not None:
        row["score_err"], row["jac_err"], row["jac_err_op"] = r.score_error
        # the same per noise band [lo, hi): where along the path the estimate is good or bad
        row["score_err_bands"] = [[lo, hi, *target.score_error((lo, hi))] for lo, hi in zip(SCORE_BANDS[:-1], SCORE_BANDS[1:])]
    return row


def evaluate(spec):
    """The row for one spec (normalised by `normalise`): the spec, the metrics, status "ok" or
    "failed" with the error (any exception of the run: the sweep goes on), or "unavailable" when
    building it needs an optional dependency this install lacks (the error says what to install;
    the sweep does not cache such a row), and the wall time.
    A pure function of the spec: every random draw is seeded from it."""
    t0 = time.perf_counter()
    row = dict(spec, metrics=",".join(spec["metrics"]), sampler_args=json.dumps(spec["sampler_args"]),
               target_args=json.dumps(spec["target_args"]))
    try:
        target, sampler = build(spec)
    except targets.learned.MissingDependency as exc:     # torch, for the learned score: say what to install
        return dict(row, status="unavailable", error=str(exc), wall_time=time.perf_counter() - t0)
    jac = jacobian_mode(target, spec)
    row.update(jacobian=jac, status="ok", error="")
    try:
        if spec["mode"] == "fixed":
            if spec["nfe_budget"]:
                row["steps"] = sampler.steps_for_budget(spec["nfe_budget"])
            row.update(_one(spec, target, sampler, row["steps"], jac))
        else:
            row.update(_minimal(spec, target, sampler, jac))
    except (S.NumericalError, FloatingPointError) as exc:
        row.update(status="failed", error=str(exc))
    except SystemExit as exc:       # a user's sampler called sys.exit: its run failed, the sweep goes on
        row.update(status="failed", error=f"the sampler called sys.exit({exc.code!r})")
    except Exception as exc:        # noqa: BLE001 -- any failure of one run is that run's row, not the sweep's
        interrupt = _interruption(exc)
        if interrupt is not None:   # a signal arrived inside a compiled kernel: the run was not computed
            raise interrupt from None
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    if SIGNALLED:
        raise SIGNALLED[-1]()
    row["wall_time"] = time.perf_counter() - t0
    return row


# Signals the CLI's handlers saw (their exception classes). A handler runs between bytecodes, and
# when that is inside Numba's dispatcher the exception it raises can be cleared there (argument
# typing falls back and clears errors), so the signal would be lost and the run would end normally:
# `evaluate` re-raises a recorded signal when its run returns.
SIGNALLED = []


def _interruption(exc):
    """The KeyboardInterrupt (or other non-Exception, e.g. the CLI's SIGTERM) behind `exc`, if any.
    A signal handler that raises while a Numba kernel runs surfaces as "SystemError: ... returned a
    result with an exception set" with the interrupt as its cause: such a run was interrupted, not
    failed, and must never become a cached failed row."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if not isinstance(exc, Exception):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _minimal(spec, target, sampler, jac):
    """Smallest steps with TV + 2 se <= eps at the full n, to 3 % (`search.minimal_steps`, SPEC 12):
    prefix probes that may only reject, power-law proposals, certification at the full n. A run that
    folds or goes non-finite counts as not reaching eps. Every probe [steps, rows, tv, se] is kept in
    the row (`search`), with the search's cost in steps at the full n (`search_cost`)."""
    full = {}

    def probe(steps, rows):
        try:
            r = _one(spec, target, sampler, steps, jac, rows=None if rows == spec["n"] else rows)
        except S.NumericalError:
            return None
        if rows == spec["n"]:
            full[steps] = r
        return r["tv"], r["tv_se"]

    res = search.minimal_steps(probe, spec["eps"], spec["n"], spec["max_steps"])
    if res.censored:
        best = full[max(full)] if full else dict(steps=max(p[0] for p in res.probes), tv=math.nan, tv_se=math.nan,
                                                 nfe=math.nan)
    else:
        best = full[res.steps_min]
    return dict(best, censored=res.censored, steps_min=np.nan if res.censored else res.steps_min,
                nfe_min=np.nan if res.censored else best["nfe"], search=json.dumps([list(p) for p in res.probes]),
                search_cost=res.cost)
