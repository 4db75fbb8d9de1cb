"""A learned score: a small MLP trained by denoising score matching on exact samples of a target
(SPEC 11, the field "learned").

The network predicts the noise, eps_hat(x, tau) = skip(x, tau) + f_theta(c_in(tau) (x - a mu), emb(lambda)),
and the score estimate is s_hat = -eps_hat / sqrt(tau). `skip` is the exact noise prediction of the
Gaussian with the data's mean mu and mean coordinate variance sigma^2,
skip = sqrt(tau) (x - a mu) / (a^2 sigma^2 + tau), so the network learns the departure from it
(the role of EDM's c_skip; Karras, Aittala, Aila & Laine 2022); c_in = 1 / sqrt(a^2 sigma^2 + tau)
keeps the input at unit scale; emb(lambda) holds sin and cos of lambda = log(a / sqrt(tau)) at
eight frequencies. f_theta is an MLP with SiLU activations.

Training (`train`, torch on the CPU, float64, one thread, so the same spec gives the same weights
to the bit on any machine with the same torch): every step draws a fresh batch of exact samples
x_0 ~ q_{tau_0} (tau_0 = 1e-4) and levels tau with lambda uniform on the schedules' range
(tau from 1e-3 to 0.999), forms x = r x_0 + sigma_c z with r = a(tau)/a(tau_0) and
sigma_c^2 = tau - r^2 tau_0 (so x ~ q_tau exactly), and minimises
E |(sigma_c / sqrt(tau)) eps_hat(x, tau) - z|^2, the denoising score matching loss of the
transition from tau_0 (Vincent 2011), whose minimiser is the exact score. Adam with a cosine decay
of the learning rate.

Evaluation (`MLPScore`) is NumPy: the forward pass and its Jacobian in x (the chain through the
layers, W_L D_{L-1} ... D_1 W_1 c_in plus the skip's), so a cached network needs no torch.
The weights are cached on disk (`cache_dir()`) under a hash of the training spec, the target (a
fingerprint of its exact draws) and the torch version.
"""

import hashlib
import json
import math
import os
import pathlib
import tempfile

import numpy as np

from .. import checks
from .errors import ScoreError

__all__ = ["TRAINING", "MLPScore", "LearnedScore", "MissingDependency", "train", "load_or_train", "cache_dir", "training_key"]

TRAINING = dict(width=128, depth=3, steps=3000, batch=512, lr=2e-3, seed=0)
TAU_0 = 1e-4                    # the training data: exact draws of q_{tau_0}
TAU_RANGE = (1e-3, 0.999)       # the levels trained on (the schedules' range)
FREQUENCIES = 8


def cache_dir():
    """Where trained networks are kept: $THEORY_CHECK_CACHE, else ~/.cache/theory-check."""
    root = os.environ.get("THEORY_CHECK_CACHE") or pathlib.Path.home() / ".cache" / "theory-check"
    return pathlib.Path(root) / "learned"


def _spec(training):
    spec = dict(TRAINING, **(training or {}))
    unknown = set(spec) - set(TRAINING)
    if unknown:
        raise ValueError(f"training: unknown keys {sorted(unknown)}; known: {sorted(TRAINING)}")
    for k in ("width", "depth", "steps", "batch", "seed"):
        spec[k] = checks.integer(spec[k], f"training {k}", minimum=0 if k == "seed" else 1)
    spec["lr"] = checks.positive(spec["lr"], "training lr")
    return spec


def _moments(base, seed):
    x0 = base.sample(4096, TAU_0, np.random.default_rng([seed, 11]))
    return x0.mean(axis=0), float(np.mean(x0.var(axis=0)))


def _fingerprint(base, training):
    """The training spec and the target's identity: its class, dimension and the bytes of 64
    seeded exact draws."""
    spec = _spec(training)
    draws = base.sample(64, 0.5, np.random.default_rng(12345))
    h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    h.update(f"{type(base).__name__}:{base.dim}".encode())
    h.update(np.ascontiguousarray(draws).tobytes())
    return h.hexdigest()


def _versioned(fingerprint):
    import torch
    return hashlib.sha256(f"{fingerprint}:{torch.__version__}".encode()).hexdigest()[:20]


def training_key(base, training=None):
    """The cache key of a network: `_fingerprint` and the torch version that trains it."""
    return _versioned(_fingerprint(base, training))


def _embedding(lam, xp):
    k = 2.0 ** xp.arange(FREQUENCIES) / 8.0
    z = lam[:, None] * k[None]
    return xp.concatenate([xp.sin(z), xp.cos(z)], 1)


def _levels(n, rng):
    lo, hi = [0.5 * (math.log1p(-t) - math.log(t)) for t in TAU_RANGE[::-1]]     # lambda(0.999) < lambda(1e-3)
    lam = rng.uniform(lo, hi, n)
    return 1.0 / (1.0 + np.exp(2.0 * lam)), lam


class MissingDependency(ImportError):
    """Training needs torch and this install has none (the message says what to install)."""


def train(base, training=None):
    """Train the network on `base` (a Target); returns its weights as a dict of NumPy arrays.
    Needs torch (the `[compare]` extra)."""
    try:
        import torch
    except ImportError:
        raise MissingDependency("score_field 'learned' trains its network with torch, which is not installed: "
                          "pip install -e '.[compare]' (a CPU-only torch works: pip install torch "
                          "--index-url https://download.pytorch.org/whl/cpu)") from None
    spec = _spec(training)
    d = base.dim
    mu, var = _moments(base, spec["seed"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                # the same weights whatever the machine's core count
    try:
        gen = torch.Generator().manual_seed(spec["seed"])
        sizes = [d + 2 * FREQUENCIES] + [spec["width"]] * spec["depth"] + [d]
        params = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            scale = 0.0 if i == len(sizes) - 2 else 1.0 / math.sqrt(fan_in)     # the skip alone at the start
            W = (torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) * scale).requires_grad_()
            b = torch.zeros(fan_out, dtype=torch.float64, requires_grad=True)
            params += [W, b]
        opt = torch.optim.Adam(params, lr=spec["lr"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, spec["steps"])
        rng = np.random.default_rng([spec["seed"], 13])
        mu_t = torch.from_numpy(mu)
        for _ in range(spec["steps"]):
            x0 = base.sample(spec["batch"], TAU_0, rng)
            tau, lam = _levels(spec["batch"], rng)
            z = rng.standard_normal((spec["batch"], d))
            r = np.sqrt((1.0 - tau) / (1.0 - TAU_0))
            sig_c = np.sqrt(tau - r * r * TAU_0)
            x = r[:, None] * x0 + sig_c[:, None] * z
            tau_t, lam_t = torch.from_numpy(tau), torch.from_numpy(lam)
            eps_hat = _torch_eps(params, torch.from_numpy(x), tau_t, lam_t, mu_t, var)
            w = torch.from_numpy(sig_c / np.sqrt(tau))[:, None]
            loss = torch.mean(torch.sum((w * eps_hat - torch.from_numpy(z)) ** 2, 1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    finally:
        torch.set_num_threads(threads)
    out = {f"p{i}": p.detach().numpy().copy() for i, p in enumerate(params)}
    out.update(mu=mu, var=np.array(var))
    return out


def _torch_eps(params, x, tau, lam, mu, var):
    """The network in torch (training, and the tests' independent evaluation)."""
    import torch
    a = torch.sqrt(1.0 - tau)[:, None]
    c = a * a * var + tau[:, None]
    y = x - a * mu
    h = torch.cat([y / torch.sqrt(c), _embedding(lam, torch)], 1)
    for i in range(0, len(params) - 2, 2):
        h = torch.nn.functional.silu(h @ params[i].T + params[i + 1])
    return torch.sqrt(tau)[:, None] * y / c + h @ params[-2].T + params[-1]


class MLPScore:
    """The trained network's score s_hat(x, tau) = -eps_hat(x, tau) / sqrt(tau) and its Jacobian
    in x, in NumPy float64 (no torch needed)."""

    def __init__(self, weights):
        n = len([k for k in weights if k.startswith("p")])
        self.params = [np.asarray(weights[f"p{i}"], dtype=np.float64) for i in range(n)]
        self.mu, self.var = np.asarray(weights["mu"], dtype=np.float64), float(weights["var"])
        self.dim = len(self.mu)

    def __call__(self, x, tau, want_jac=False):
        """(s_hat (n, d), grad s_hat (n, d, d) or None) at one level tau."""
        d = self.dim
        a = math.sqrt(1.0 - tau)
        c = a * a * self.var + tau
        y = x - a * self.mu
        lam = np.full(len(x), 0.5 * (math.log1p(-tau) - math.log(tau)))
        h = np.concatenate([y / math.sqrt(c), _embedding(lam, np)], 1)
        G = None
        if want_jac:            # d h / d x, carried through the layers
            G = np.broadcast_to(self.params[0][:, :d] / math.sqrt(c), (len(x), self.params[0].shape[0], d))
        for i in range(0, len(self.params) - 2, 2):
            u = h @ self.params[i].T + self.params[i + 1]
            sig = 1.0 / (1.0 + np.exp(-u))
            if want_jac:
                if i > 0:
                    G = np.matmul(self.params[i], G)
                G = (sig * (1.0 + u * (1.0 - sig)))[:, :, None] * G        # silu'(u) = sig (1 + u (1 - sig))
            h = u * sig
        eps = math.sqrt(tau) * y / c + h @ self.params[-2].T + self.params[-1]
        s = -eps / math.sqrt(tau)
        if not want_jac:
            return s, None
        J = np.matmul(self.params[-2], G) if len(self.params) > 2 else np.zeros((len(x), d, d))
        J = -(J + (math.sqrt(tau) / c) * np.eye(d)) / math.sqrt(tau)
        return s, J


def _save(path, weights):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **weights)
        os.replace(tmp, path)           # atomic: a concurrent worker training the same network wins or loses whole
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def load_or_train(base, training=None):
    """The weights of the network for (base, training): from the cache, else trained and cached."""
    fingerprint = _fingerprint(base, training)
    try:
        key = _versioned(fingerprint)
    except ImportError:         # without torch, any cached network of this spec and target will do
        found = sorted(cache_dir().glob(f"*-{fingerprint[:12]}.npz"))
        if found:
            return dict(np.load(found[0]))
        train(base, training)           # raises the ImportError saying what to install
    path = cache_dir() / f"{key}-{fingerprint[:12]}.npz"
    if path.exists():
        return dict(np.load(path))
    weights = train(base, training)
    _save(path, weights)
    return weights


class LearnedScore(ScoreError):
    """The field "learned": the score of an MLP trained by denoising score matching on exact
    samples of `base` (module docstring). The truth s(x, tau) is evaluated beside it for the
    records (instrumentation, not counted as a score evaluation). Its Jacobian couples every
    coordinate (jacobian "full" or "none").

    Parameters
    ----------
    base : Target
    training : dict, optional
        Overrides of `TRAINING` (width, depth, steps, batch, lr, seed).
    weights : dict, optional
        Trained weights (from `train`); default: `load_or_train(base, training)`.
    """

    def __init__(self, base, training=None, weights=None):
        super().__init__(base)
        self.training = _spec(training)
        self.net = MLPScore(load_or_train(base, training) if weights is None else weights)
        if self.net.dim != self.dim:
            raise ValueError(f"weights: a network of dimension {self.net.dim} for a target of dimension {self.dim}")

    def __repr__(self):
        return f"LearnedScore({self.base!r}, width={self.training['width']}, steps={self.training['steps']})"

    def _eval(self, x, tau, want_jac):
        s_hat, J_hat = self.net(x, tau, want_jac)
        logq, s, J = self.base._eval(x, tau, want_jac)
        self._record(tau, s_hat - s, (J_hat - J) if want_jac else None)
        return logq, s_hat, J_hat
