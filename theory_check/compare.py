"""Production schedulers on closed-form targets: Hugging Face diffusers with exact scores.

`DiffusersSampler(scheduler)` runs a deterministic diffusers scheduler (DDIM, DPMSolverMultistep,
DPMSolverSinglestep, UniPCMultistep, DEISMultistep, EulerDiscrete, HeunDiscrete) on any target in
float64, with the exact score as its epsilon-prediction model eps = -sqrt(tau) s(x, tau), on the
schedule `taus` you give it (the scheduler's noise levels are overwritten, its own rules for
orders, warm-up and lower_order_final are kept). It is a `Sampler`, so `sample` and
`metrics.tv_kl` give the exact TV and KL of production code.

The log-determinant: a deterministic scheduler's step is linear in (sample, model_output, its
history) with coefficients fixed by the noise levels, so the columns of d x / d x_in, stacked
into the batch beside the samples and given the model-output tangents J_eps d x as their "model
output", come out of the same `step` call as the derivative of the new sample. Linearity is
checked numerically before a run (random inputs u, v and 0.7 u - 1.9 v through every step, on a
copy of the scheduler); a scheduler that is not linear (clip_sample, thresholding, noise) is
refused with a ValueError.

Needs the optional extra: `pip install -e '.[compare]'` (diffusers and torch).

Example (needs the extra)::

    from diffusers import DPMSolverMultistepScheduler
    from theory_check import targets, schedules, sample, metrics, compare
    t = targets.make("gmm-aniso", 8, 0)
    s = compare.DiffusersSampler(DPMSolverMultistepScheduler(final_sigmas_type="sigma_min"))
    r = sample(t, s, schedules.log_snr(20), n=4000, jacobian="full")
    print(metrics.tv_kl(t, r))      # the exact TV and KL of production code
"""

import copy
import math

import numpy as np

from .samplers.base import Sampler, a_of, rho_of

__all__ = ["DiffusersSampler", "SUPPORTED", "schedule_taus"]

VP_SIGMAS = ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "UniPCMultistepScheduler",
             "DEISMultistepScheduler")
VE_SIGMAS = ("EulerDiscreteScheduler", "HeunDiscreteScheduler")
SUPPORTED = ("DDIMScheduler",) + VP_SIGMAS + VE_SIGMAS


_F64 = None


def _torch():
    try:
        import torch
    except ImportError:
        raise ValueError("compare needs the optional extra: pip install -e '.[compare]' (diffusers and torch)") from None
    return torch


def _tensor(a):
    """`a` as a float64 tensor that stays float64 through a scheduler's casts to float32.

    diffusers' DPMSolverMultistepScheduler.step casts the sample to float32 ("upcast to avoid
    precision issues", aimed at float16 pipelines), which would limit a float64 comparison to
    ~1e-7; a request for float32 is kept at float64 instead (README, Deviations)."""
    global _F64
    torch = _torch()
    if _F64 is None:
        class Float64Tensor(torch.Tensor):
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                kwargs = dict(kwargs or {})
                if func is torch.Tensor.to:
                    args = tuple(torch.float64 if x is torch.float32 else x for x in args)
                    if kwargs.get("dtype") is torch.float32:
                        kwargs["dtype"] = torch.float64
                return super().__torch_function__(func, types, args, kwargs)
        _F64 = Float64Tensor
    return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float64)).as_subclass(_F64)


def _numpy(t):
    return t.as_subclass(_torch().Tensor).detach().numpy()


def _kind(scheduler):
    name = type(scheduler).__name__
    if name not in SUPPORTED:
        raise ValueError(f"scheduler: {name} is not supported; supported: {', '.join(SUPPORTED)}")
    if getattr(scheduler.config, "prediction_type", "epsilon") != "epsilon":
        raise ValueError(f"scheduler: prediction_type must be 'epsilon' (the exact model is eps = -sqrt(tau) s), "
                         f"got {scheduler.config.prediction_type!r}")
    return "ddim" if name == "DDIMScheduler" else "vp" if name in VP_SIGMAS else "heun" if "Heun" in name else "ve"


def _prepare(scheduler, taus):
    """A copy of `scheduler` set to run on `taus`; returns (scheduler, timesteps to pass, stage taus)."""
    torch = _torch()
    s = copy.deepcopy(scheduler)
    kind = _kind(s)
    steps = len(taus) - 1
    f64 = dict(dtype=torch.float64)
    sig = np.array([rho_of(t) for t in taus])
    if kind == "ddim":
        s.set_timesteps(steps)
        s.num_inference_steps = s.config.num_train_timesteps        # prev_timestep = t - 1
        s.alphas_cumprod = torch.tensor(1.0 - taus[::-1].copy(), **f64)   # index steps - i -> taus[i]
        s.final_alpha_cumprod = torch.tensor(1.0 - taus[-1], **f64)
        s.timesteps = torch.arange(steps, 0, -1)
        return s, list(s.timesteps), list(taus[:-1])
    if kind == "vp":
        s.set_timesteps(steps)
        s.sigmas = torch.tensor(sig, **f64)
        s.timesteps = torch.arange(steps, 0, -1)
        return s, list(s.timesteps), list(taus[:-1])
    if kind == "ve":
        s.set_timesteps(steps)
        s.sigmas = torch.tensor(sig, **f64)
        s.timesteps = torch.arange(steps, 0, -1, **f64)
        return s, list(s.timesteps), list(taus[:-1])
    # Heun: two stages per step, sigmas [s0, s1, s1, ..., s_{N-1}, s_{N-1}, s_N] (the last step is
    # a Heun step too: diffusers' own grid ends at sigma = 0 with an Euler step)
    s.set_timesteps(steps)
    s.sigmas = torch.tensor(np.concatenate([sig[:1], np.repeat(sig[1:-1], 2), sig[-1:]]), **f64)
    s.timesteps = torch.arange(2 * steps, 0, -1, **f64)
    stage = [taus[(k + 1) // 2] for k in range(2 * steps)]
    return s, list(s.timesteps), stage


def _step(s, model_output, t, sample):
    return s.step(model_output, t, sample, return_dict=False)[0]


def check_linear(scheduler, taus, d=3, seed=0, rtol=1e-9):
    """Raise ValueError unless every step of `scheduler` on `taus` is linear in (sample, model output)."""
    s, ts, stage = _prepare(scheduler, taus)
    ve = _kind(scheduler) in ("ve", "heun")
    rng = np.random.default_rng(seed)
    u, v = 3.0 * rng.standard_normal((2, d)), 3.0 * rng.standard_normal((2, d))
    x = _tensor(np.concatenate([u, v, 0.7 * u - 1.9 * v]))
    if ve:
        x = x / a_of(taus[0])
    for k, t in enumerate(ts):
        mu, mv = 3.0 * rng.standard_normal((2, d)), 3.0 * rng.standard_normal((2, d))
        m = _tensor(np.concatenate([mu, mv, 0.7 * mu - 1.9 * mv]))
        try:
            if ve:
                s.scale_model_input(x, t)
            x = _step(s, m, t, x)
        except Exception as exc:        # noqa: BLE001 -- e.g. thresholding written for image batches
            raise ValueError(f"scheduler: {type(scheduler).__name__}.step failed on a batch of shape (n, d) at stage {k} "
                             f"({type(exc).__name__}: {exc}); refused") from None
        y = _numpy(x)
        err = np.abs(y[4:] - (0.7 * y[:2] - 1.9 * y[2:4])).max()
        if not np.isfinite(err) or err > rtol * max(1.0, np.abs(y).max()):
            raise ValueError(f"scheduler: {type(scheduler).__name__} is not linear in (sample, model_output) at stage {k} "
                             f"(deviation {err:.2g}: clip_sample, thresholding or noise?); refused")


def _tangent_layout(mode, n, d):
    """(pack, unpack) between a derivative and extra batch rows, or (None, None) in mode "none"."""
    if mode == "full":
        return (lambda D: D.transpose(0, 2, 1).reshape(n * d, d),
                lambda rows: rows.reshape(n, d, d).transpose(0, 2, 1))
    if mode == "diagonal":
        return (lambda D: D), (lambda rows: rows)
    return None, None


class DiffusersSampler(Sampler):
    """A deterministic diffusers scheduler as a `Sampler` (see the module docstring).

    Parameters
    ----------
    scheduler : a diffusers scheduler instance (one of `SUPPORTED`), configured as you run it;
        prediction_type must be "epsilon". It is copied, never modified.
    """

    chunked = False          # one scheduler state for the batch
    multistep = True         # intermediate states are internal: only the final map is checked

    def __init__(self, scheduler):
        _kind(scheduler)
        self.scheduler = scheduler
        self._checked = set()

    def nfe(self, steps):
        return 2 * steps if _kind(self.scheduler) == "heun" else steps

    def integrate(self, target, taus, x, Dx, tan, out):
        if tan.mode == "structured":
            raise ValueError("jacobian: DiffusersSampler supports 'none', 'full' and 'diagonal'")
        key = tuple(taus)
        if key not in self._checked:
            check_linear(self.scheduler, taus)
            self._checked.add(key)
        s, ts, stage = _prepare(self.scheduler, taus)
        ve = _kind(self.scheduler) in ("ve", "heun")
        n, d = x.shape
        # a linear step maps each tangent column like a sample: stack them into the batch
        # (full: the d columns of each sample's d x d derivative; diagonal: one row per sample)
        pack, unpack = _tangent_layout(tan.mode, n, d)
        rows = np.concatenate([x, pack(Dx)]) if pack else x
        sample = _tensor(rows / a_of(taus[0]) if ve else rows)
        for t, tau in zip(ts, stage):
            model_in = _numpy(s.scale_model_input(sample, t) if ve else sample)
            y = model_in[:n]
            eps, De = tan.noise(y, tau, unpack(model_in[n:]) if pack else None)
            sample = _step(s, _tensor(np.concatenate([eps, pack(De)]) if pack else eps), t, sample)
        res = _numpy(sample) * (a_of(taus[-1]) if ve else 1.0)
        D = unpack(res[n:]).copy() if pack else None
        yield taus[0], taus[-1], np.ascontiguousarray(res[:n]), D

    def __repr__(self):
        return f"DiffusersSampler({type(self.scheduler).__name__})"


def schedule_taus(scheduler, steps):
    """The noise levels tau of a scheduler's own grid for `steps` steps (diffusers' timesteps and
    sigmas), as a theory-check schedule; a final sigma of 0 becomes the smallest training noise
    level (final_sigmas_type="sigma_min"), since tau must stay in (0, 1).

    Parameters
    ----------
    scheduler : a diffusers scheduler (copied, not modified)
    steps : int

    Returns
    -------
    ndarray (steps + 1,)
    """
    torch = _torch()    # noqa: F841  (the scheduler needs it)
    s = copy.deepcopy(scheduler)
    kind = _kind(s)
    s.set_timesteps(steps)
    ac = s.alphas_cumprod.double().numpy()
    if kind == "ddim":
        t = s.timesteps.numpy()
        prev = t - s.config.num_train_timesteps // s.num_inference_steps
        taus = np.concatenate([1 - ac[t], [1 - (ac[prev[-1]] if prev[-1] >= 0 else ac[0])]])
    else:
        sig = s.sigmas.double().numpy()
        if kind == "heun":
            sig = np.concatenate([sig[:1], sig[1::2]])
        sig = np.where(sig > 0, sig, math.sqrt((1 - ac[0]) / ac[0]))
        taus = sig ** 2 / (1 + sig ** 2)
    return np.asarray(taus, float)
