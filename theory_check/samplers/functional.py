"""`from_function`: a k-diffusion-style sampler written with NumPy, with exact NFE and logdet.

A k-diffusion sampler is a function `fn(model, x, sigmas, **kwargs)` where `sigmas` are VE noise
levels sigma = sqrt(tau / (1 - tau)) in decreasing order, `x` is in VE scale (x / a), and
`model(x, sigma)` returns the Tweedie denoiser D (SPEC 2). Its steps are linear combinations
of the state and of model outputs with coefficients that depend only on the sigmas, so the
derivative of the whole map follows by forward-mode differentiation: the arrays handed to `fn`
carry their tangent through sums, differences, products and quotients with scalars, and model
calls. Anything else (a product of two states, np.clip, indexing, ...) raises
`DifferentiationError` naming the operation; jacobian="none" hands `fn` plain arrays and always
works.
"""

import functools
import inspect
import numbers

import numpy as np

from .base import NumericalError, Sampler, a_of, rho_of, tau_of_rho

__all__ = ["from_function", "FunctionSampler", "TangentArray", "DifferentiationError"]


class DifferentiationError(ValueError):
    """An operation in a user's sampler function that forward-mode tangents cannot follow."""


def _scalar(v):
    if isinstance(v, (numbers.Real, np.floating, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return float(v)
    if isinstance(v, np.ndarray) and v.ndim == 0 and np.issubdtype(v.dtype, np.number):
        return float(v)
    return None


class TangentArray(np.lib.mixins.NDArrayOperatorsMixin):
    """An (n, d) array of states with its derivative with respect to x_in (opaque, see
    `base.Tangent`). Supports +, - (with each other or with constants), * and / by scalars,
    unary -, `.shape`, `len`; every other NumPy operation raises `DifferentiationError`."""

    __array_priority__ = 1000

    def __init__(self, value, D, tangent):
        self.value, self.D, self._tan = value, D, tangent

    shape = property(lambda self: self.value.shape)
    ndim = property(lambda self: self.value.ndim)
    dtype = property(lambda self: self.value.dtype)

    def __len__(self):
        return len(self.value)

    def _new(self, value, D):
        return TangentArray(value, D, self._tan)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = f"numpy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        if method != "__call__" or kwargs:
            raise DifferentiationError(f"from_function: cannot differentiate {name} with out= or where= or as a {method}")
        lin = self._tan.lin
        if ufunc in (np.add, np.subtract) and len(inputs) == 2:
            a, b = inputs
            sign = 1.0 if ufunc is np.add else -1.0
            if isinstance(a, TangentArray) and isinstance(b, TangentArray):
                return self._new(ufunc(a.value, b.value), lin([1.0, sign], [a.D, b.D]))
            if isinstance(a, TangentArray):            # state +- constant
                return self._new(ufunc(a.value, np.asarray(b)), a.D)
            return self._new(ufunc(np.asarray(a), b.value), lin([sign], [b.D]))  # constant +- state
        if ufunc is np.multiply and len(inputs) == 2:
            a, b = inputs
            if isinstance(b, TangentArray):
                a, b = b, a
            c = _scalar(b)
            if c is None:
                raise DifferentiationError(f"from_function: cannot differentiate {name} of a state by "
                                           f"{'another state' if isinstance(b, TangentArray) else 'a non-scalar array'}; "
                                           "only products with scalars are linear")
            return self._new(a.value * c, lin([c], [a.D]))
        if ufunc in (np.true_divide, np.divide) and len(inputs) == 2:
            a, b = inputs
            c = _scalar(b)
            if not isinstance(a, TangentArray) or c is None:
                raise DifferentiationError(f"from_function: cannot differentiate {name} unless a state is divided by a scalar")
            return self._new(a.value / c, lin([1.0 / c], [a.D]))
        if ufunc is np.negative:
            return self._new(-inputs[0].value, lin([-1.0], [inputs[0].D]))
        if ufunc is np.positive:
            return inputs[0]
        raise DifferentiationError(f"from_function: cannot differentiate {name}; the tangent arrays support "
                                   "+, -, * and / by scalars and model calls (anything else runs only with jacobian='none', i.e. metrics coupling or w2)")

    def __array_function__(self, func, types, args, kwargs):
        raise DifferentiationError(f"from_function: cannot differentiate numpy.{func.__name__} "
                                   "(anything beyond +, -, * and / by scalars runs only with jacobian='none', i.e. metrics coupling or w2)")

    def __array__(self, dtype=None, copy=None):
        raise DifferentiationError("from_function: converting a state to a plain array would drop its derivative")

    def __getitem__(self, item):
        raise DifferentiationError("from_function: cannot differentiate indexing of a state")

    def __getattr__(self, name):
        # x.T, x.mean(), x.reshape(...): anything but the arithmetic above loses the derivative
        if name.startswith("__"):
            raise AttributeError(name)
        raise DifferentiationError(f"from_function: cannot differentiate the state's .{name} (the tangent arrays "
                                   "support +, -, * and / by scalars and model calls; anything else runs only "
                                   "with jacobian='none', i.e. metrics coupling or w2)")

    def __repr__(self):
        return f"TangentArray(shape={self.value.shape})"


class FunctionSampler(Sampler):
    """A sampler from a k-diffusion-style NumPy function (see `from_function`)."""

    chunked = False          # the function sees the whole batch, as the user wrote it
    multistep = True         # its intermediate states are not seen: the final map is checked

    def __init__(self, fn, name=None, **kwargs):
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {type(fn).__name__}")
        self.fn, self.kwargs = fn, kwargs
        self.name = name or getattr(fn, "__qualname__", repr(fn))
        try:            # a parameter the function does not take fails here, before any run
            inspect.signature(fn).bind(None, None, None, **kwargs)
        except TypeError as exc:
            raise ValueError(f"sampler_args: {self.name} does not take {sorted(kwargs)} ({exc})") from None
        except ValueError:          # no signature to read (a builtin): the call itself will tell
            pass

    @functools.lru_cache(maxsize=256)
    def nfe(self, steps):
        """Counted by running the function once on one sample of N(0, 1) (k-diffusion samplers call
        the model a number of times that depends on the sigmas only)."""
        from ..targets import IsotropicGaussianMixture
        from .. import schedules
        t = IsotropicGaussianMixture([1.0], [[0.0]], [1.0])
        return self.run(t, schedules.log_snr(steps), np.zeros((1, 1))).nfe

    def integrate(self, target, taus, x, Dx, tan, out):
        sigmas = np.array([rho_of(t) for t in taus])
        a0, a_end = a_of(taus[0]), a_of(taus[-1])
        tracked = tan.mode != "none"

        def model(z, sigma):
            if isinstance(sigma, (bool, np.bool_)):
                raise ValueError(f"model: sigma must be a number (one noise level for the batch), got {sigma!r}")
            sig = _scalar(sigma)
            if sig is None:
                arr = np.asarray(sigma, float)
                if arr.size == 0 or not np.all(arr == arr.flat[0]):
                    raise ValueError("model: sigma must be a scalar (one noise level for the batch)")
                sig = float(arr.flat[0])
            if not (sig > 0 and np.isfinite(sig)):
                raise ValueError(f"model: sigma must be finite and > 0, got {sig!r}")
            tau = tau_of_rho(sig)
            if not 0.0 < tau < 1.0:
                raise ValueError(f"model: sigma {sig!r} is outside the noise levels a float64 tau in (0, 1) can represent")
            a = a_of(tau)
            if isinstance(z, TangentArray) and z.value.shape != x.shape:
                raise ValueError(f"model: x must have the batch's shape {x.shape}, got {z.value.shape}")
            if isinstance(z, TangentArray):
                Dd, dD = tan.data(a * z.value, tau, tan.lin([a], [z.D]))
                return TangentArray(Dd, dD, tan)
            if tracked:
                raise DifferentiationError("from_function: the model was called on a plain array, not on a state "
                                           "derived from x: its derivative is unknown")
            z = np.asarray(z)
            if z.shape != x.shape or not np.isrealobj(z) or not np.issubdtype(z.dtype, np.number) or z.dtype == bool:
                raise ValueError(f"model: x must be the batch's real array of shape {x.shape} (n samples, d "
                                 f"coordinates), got {z.dtype} of shape {z.shape}")
            return tan.data(a * z.astype(float), tau, None)[0]

        z0 = x / a0
        z = TangentArray(z0, tan.lin([1.0 / a0], [Dx]), tan) if tracked else z0
        res = self.fn(model, z, sigmas, **self.kwargs)
        if isinstance(res, TangentArray):
            value, D = res.value, res.D
        elif tracked:
            raise DifferentiationError("from_function: the function returned a plain array; return the state "
                                       "(the derivative of a constant map is singular)")
        else:
            res = np.asarray(res)
            if not np.isrealobj(res) or not np.issubdtype(res.dtype, np.number):
                raise ValueError(f"from_function: the function returned {res.dtype} values; it must return the "
                                 "final state as real numbers")
            value, D = res.astype(float), None
        if value.shape != x.shape:
            raise NumericalError(len(taus) - 2, taus[0], taus[-1],
                                 f"the function returned shape {value.shape}, expected {x.shape}")
        yield taus[0], taus[-1], a_end * value, tan.lin([a_end], [D]) if tracked else None

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"from_function({self.name}{extra})"


def from_function(fn, name=None, **kwargs):
    """A `Sampler` from a k-diffusion-style function `fn(model, x, sigmas, **kwargs)` written with NumPy.

    `sigmas` are VE noise levels sigma = sqrt(tau / (1 - tau)) in decreasing order (sigmas[-1] > 0:
    the schedule's last tau), `x` is in VE scale (x / a) and `model(x, sigma)` returns the Tweedie
    denoiser D(x a, tau(sigma)). Every call of `model` on the batch counts as one evaluation. With
    a Jacobian mode, `x` and the model's outputs are `TangentArray`s that carry their derivative
    through +, -, and * or / by scalars, so the log-determinant is exact; any other operation
    raises `DifferentiationError` naming it (jacobian="none" hands plain arrays and always works).
    `kwargs` are passed to `fn` (TOML `sampler_args`, CLI `--sampler-arg`).

    Examples
    --------
    Euler in sigma (k-diffusion's `sample_euler` without churn), which equals `DDIM`:

    >>> import numpy as np
    >>> from theory_check import targets, schedules, samplers
    >>> def euler(model, x, sigmas):
    ...     for s, s_next in zip(sigmas[:-1], sigmas[1:]):
    ...         d = (x - model(x, s)) / s
    ...         x = x + d * (s_next - s)
    ...     return x
    >>> t = targets.make("gmm-iso", 2, 0)
    >>> x = t.sample(5, 0.999, np.random.default_rng(0))
    >>> taus = schedules.log_snr(12)
    >>> mine = samplers.from_function(euler).run(t, taus, x, jacobian="full")
    >>> ddim = samplers.DDIM().run(t, taus, x, jacobian="full")
    >>> bool(np.allclose(mine.x, ddim.x, rtol=1e-12) and np.allclose(mine.logdet, ddim.logdet, atol=1e-10))
    True
    """
    if not (inspect.isfunction(fn) or isinstance(fn, functools.partial) or inspect.ismethod(fn)):
        raise ValueError(f"fn must be a Python function fn(model, x, sigmas), got {type(fn).__name__}")
    return FunctionSampler(fn, name, **kwargs)
