"""Samplers for the probability-flow ODE dx/dtau = -(x + s(x, tau)) / (2 (1 - tau)) (SPEC 5, 10).

Every sampler has `run(target, taus, x, jacobian="none"|"full"|"structured"|"diagonal") -> Output` mapping
samples at taus[0] to samples at taus[-1], with the exact number of score evaluations `nfe`
(one evaluation of a batch counts once) and, when a Jacobian mode is asked for,
`logdet` (n,) = log |det d x_out / d x_in| of the whole discrete map; and `nfe(steps)`,
`nfe_per_step(steps)`. Bring your own: subclass `Sampler` (see its docstring), wrap a
k-diffusion-style NumPy function with `from_function`, or name either as "package.module:attr"
in `make`, a TOML study or the CLI.

Modules: `base` (the contract and the derivative algebra), `heroism`, `singlestep` (DDIM,
DPM-Solver++ 2S, Heun, RK4), `multistep` (DPM-Solver++ 2M/3M, UniPC, DEIS, iPNDM), `reference`
(the DOP853 ground truth, DDPM), `functional` (`from_function`).
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np

from .base import JACOBIAN_MODES, KnownLogdet, NumericalError, Output, Sampler, Tangent
from .functional import DifferentiationError, FunctionSampler, TangentArray, from_function
from .heroism import Heroism, lagrange_kappa_weights, step_nodes
from .multistep import DEIS, IPNDM, DPMSolverPP, UniPC, ab_weights
from .reference import DDPM, Reference
from .singlestep import DDIM, RK4, DPMSolverPP2S, Heun

__all__ = ["Sampler", "Tangent", "Output", "NumericalError", "KnownLogdet", "JACOBIAN_MODES",
           "Heroism", "DDIM", "DPMSolverPP", "DPMSolverPP2S", "UniPC", "DEIS", "IPNDM", "Heun", "RK4",
           "DDPM", "Reference", "from_function", "FunctionSampler", "TangentArray", "DifferentiationError",
           "make", "canonical", "SAMPLER_NAMES", "ALIASES", "parse_N", "lagrange_kappa_weights", "step_nodes",
           "ab_weights"]

# canonical name -> (class, fixed parameters). make(name, **params) adds the caller's parameters.
REGISTRY = {
    "heroism": (Heroism, {}),
    "ddim": (DDIM, {}),
    "dpm2m": (DPMSolverPP, dict(order=2)),
    "dpm3m": (DPMSolverPP, dict(order=3)),
    "dpm3m-taylor": (DPMSolverPP, dict(order=3, coefficient="taylor", warmup="2s")),
    "dpm2s": (DPMSolverPP2S, {}),
    "unipc": (UniPC, {}),
    "unipc-bh1": (UniPC, dict(variant="bh1")),
    "deis": (DEIS, {}),
    "deis-tab": (DEIS, dict(basis="tau")),
    "ipndm": (IPNDM, {}),
    "heun": (Heun, {}),
    "rk4": (RK4, {}),
    "ddpm": (DDPM, {}),
    "reference": (Reference, {}),
}
# the names people use (k-diffusion, diffusers, ComfyUI), case-insensitive, '_' = '-'
ALIASES = {
    "euler": "ddim", "dpmpp-2m": "dpm2m", "dpm-solver++": "dpm2m", "dpmsolver++": "dpm2m", "dpm-solver-pp": "dpm2m",
    "dpmpp-3m": "dpm3m", "dpmpp-3m-taylor": "dpm3m-taylor", "dpmpp-2s": "dpm2s", "dpm-solver++-2s": "dpm2s",
    "unipc-bh2": "unipc", "uni-pc": "unipc", "uni-pc-bh2": "unipc", "uni-pc-bh1": "unipc-bh1",
    "deis-tab": "deis-tab", "ipndm-4": "ipndm", "dopri": "reference", "dop853": "reference",
}
SAMPLER_NAMES = tuple(REGISTRY)


def canonical(name: str) -> str:
    """The registry's name for a built-in sampler name or alias (case-insensitive; '_' = '-'), or
    `name` unchanged for "package.module:attr".

    >>> canonical("DPMPP_2M"), canonical("euler")
    ('dpm2m', 'ddim')
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"sampler must be a non-empty string, got {name!r}")
    if ":" in name:
        return name
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLER_NAMES)}, an alias "
                         f"({', '.join(sorted(ALIASES))}) or 'package.module:attr'; got {name!r}")
    return key


def _search_working_directory():
    """Put the working directory on the import path, after the installed packages, as the place
    where a user's "module:attr" is found (like `python -m`). Only when a module is named: a
    tqdm.py or ot.py lying in the working directory never shadows an installed package."""
    import os
    import sys
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def load(name: str):
    """Import "package.module:attr" and return the attribute, accepted only when it is a `Sampler`
    subclass or a plain Python function (checked before anything is called)."""
    module, _, attr = name.partition(":")
    if not module or not attr:
        raise ValueError(f"sampler {name!r} must read 'package.module:attr'")
    _search_working_directory()
    try:
        mod = importlib.import_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:    # noqa: BLE001 -- any import failure (SystemExit too) is the user's module's
        what = f"sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"sampler {name!r}: cannot import module {module!r} ({what})") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"sampler {name!r}: module {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj) and issubclass(obj, Sampler):
        return obj
    if inspect.isfunction(obj):
        return obj
    raise ValueError(f"sampler {name!r}: {attr} is a {type(obj).__name__}, not a theory_check Sampler subclass "
                     "or a function fn(model, x, sigmas); refused")


def make(name: str, **params) -> Sampler:
    """A sampler by name with its parameters.

    Built-in names (case-insensitive; '_' and '-' alike): heroism (K, N, nodes, sweep), ddim
    (= euler), dpm2m (= dpmpp_2m, dpm-solver++), dpm3m (= dpmpp_3m: the released update, as in
    diffusers), dpm3m-taylor (the third-order coefficient with the 2S warm-up), dpm2s (= dpmpp_2s),
    unipc (= unipc_bh2; order 3), unipc-bh1, deis (log-rho, as diffusers), deis-tab, ipndm, heun,
    rk4, ddpm (seed), reference (rtol, atol). "package.module:attr" imports a user's `Sampler`
    subclass (instantiated with `params`) or function (wrapped by `from_function`, `params`
    passed to it as keyword arguments). Importing a module runs its code, as a Python script would.

    Examples
    --------
    >>> make("dpmpp_2m")
    DPMSolverPP(order=2, warmup='lower', coefficient='released')
    >>> make("UniPC", variant="bh1", order=2)
    UniPC(order=2, variant='bh1', corrector=True, lower_order_final=False)
    """
    key = canonical(name)
    if ":" in key:
        obj = load(key)
        if inspect.isfunction(obj):
            return from_function(obj, name=key, **params)
        cls, fixed = obj, {}
    else:
        cls, fixed = REGISTRY[key]
    try:
        return cls(**{**fixed, **params})
    except TypeError as exc:
        raise ValueError(f"sampler_args: {name!r} ({cls.__name__}) does not accept these parameters "
                         f"{sorted(params)} ({exc})") from None


def parse_N(N, K):
    """N given as an int, "paper", None, or an expression in K: "K", "K-1", "K+1", "K-2", "2K".
    With K = "log" (the order grows with the steps), "K" means N = K (None).

    >>> parse_N("K-1", 4), parse_N("paper", 4)
    (3, 'paper')
    """
    if K != "log" and (isinstance(K, (bool, np.bool_)) or not isinstance(K, (int, np.integer))):
        raise ValueError(f"K must be a positive integer or 'log', got {K!r}")
    if isinstance(N, (int, np.integer)) and not isinstance(N, bool) or N == "paper" or N is None:
        return N
    if isinstance(N, str):
        expr = N.replace(" ", "")
        if K == "log":
            if expr == "K":
                return None
            raise ValueError(f"N must be an integer, 'paper' or 'K' when K = 'log'; got {N!r}")
        table = {"K": K, "K-1": K - 1, "K+1": K + 1, "2K": 2 * K, "K-2": K - 2}
        if expr in table and isinstance(K, (int, np.integer)):
            return max(table[expr], 0)
    raise ValueError(f"N must be an integer, 'paper', or one of K, K-1, K+1, K-2, 2K; got {N!r}")
