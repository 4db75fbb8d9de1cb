"""Product targets (SPEC section 9): X0 with independent coordinates, each a one-dimensional law
whose noised marginal is known in closed form.

For X0 = (X0^1, ..., X0^d) with independent coordinates, q_tau(x) = prod_i q1_tau(x_i): log q
is a sum over coordinates, the score acts coordinate-wise, and the score Jacobian is diagonal.
Every sampler of SPEC 5 then maps each coordinate on its own, so the Jacobian of the whole
discrete map is diagonal too: jacobian="diagonal" carries it as an (n, d) array (log det =
sum_i log|D_ii|, O(n d) per step), which makes d >= 1e4 measurable. Unlike the mixtures, whose
number of non-Gaussian directions is fixed, a product has d of them: its difficulty grows with d.

One-dimensional laws (a = sqrt(1 - tau)):

* `Uniform(c)`: uniform on [-c, c] (bounded support, a density jump at the boundary).
* `Rademacher(c)`: +-c with probability 1/2 (the 2^d atoms of the cube {-c, c}^d).
* `Mixture1D(w, m, v)`: sum_k w_k N(m_k, v_k) (v_k >= 0; v_k = 0 is an atom).

The Numba kernels are `kernels.product_into` (with NumPy/SciPy twins in `kernels`).

Example
-------
>>> import numpy as np
>>> t = Product(Uniform(1.0), 3)
>>> x = t.sample(2, 0.5, np.random.default_rng(0))
>>> t.score(x, 0.5).shape
(2, 3)
"""

import numpy as np

from .. import checks, kernels
from .base import Target

__all__ = ["Uniform", "Rademacher", "Mixture1D", "Product", "NAMES", "make"]


class _Law:
    """A one-dimensional law with a closed-form noised marginal (kernel code `law`, `params`)."""

    law: int
    params: np.ndarray

    def coefficients(self, tau):
        """What the kernel needs at noise level tau (here the parameters themselves)."""
        return self.params

    def eval(self, x, tau):
        """(log q1, s1, s1') elementwise at x (any shape), noise level tau."""
        x = np.atleast_1d(np.asarray(x, float))
        # one coordinate per row: the driver's row sums are then the elementwise values
        flat = np.ascontiguousarray(x.reshape(-1, 1))
        lq, s, ds = np.empty(len(flat)), np.empty_like(flat), np.empty_like(flat)
        tau = checks.tau(tau)
        kernels.product_into(self.law, self.coefficients(tau), flat, tau, True, lq, s, ds)
        return lq.reshape(x.shape), s.reshape(x.shape), ds.reshape(x.shape)

    def __eq__(self, other):
        return type(self) is type(other) and np.array_equal(self.params, other.params)

    def __hash__(self):
        return hash((type(self).__name__, self.params.tobytes()))


class Uniform(_Law):
    """Uniform law on [-c, c]: q1_tau(x) = Z / (2 a c), Z = Phi((x + a c)/sqrt tau) - Phi((x - a c)/sqrt tau).

    Evaluated in scaled, reflected form (`kernels._uniform1`) so that log q1, s1 and s1' stay
    accurate to ~1e-11 relative for |x| up to 40 and tau down to 1e-6 (tested against mpmath).

    >>> Uniform(2.0)
    Uniform(c=2)
    """

    law = 0

    def __init__(self, c=1.0):
        self.c = checks.positive(c, "c")
        self.params = np.array([[self.c]])

    def sample0(self, shape, rng):
        return rng.uniform(-self.c, self.c, shape)

    def moments(self):
        return 0.0, self.c ** 2 / 3.0

    def __repr__(self):
        return f"Uniform(c={self.c:g})"


class Rademacher(_Law):
    """+-c with probability 1/2: s1 = (b tanh(b x / tau) - x)/tau with b = a c.

    >>> Rademacher(1.0).eval(0.0, 0.5)[1] == 0          # (+0 or -0: the kernels allow either sign of zero)
    array([ True])
    """

    law = 1

    def __init__(self, c=1.0):
        self.c = checks.positive(c, "c")
        self.params = np.array([[self.c]])

    def sample0(self, shape, rng):
        return self.c * np.where(rng.random(shape) < 0.5, -1.0, 1.0)

    def moments(self):
        return 0.0, self.c ** 2

    def __repr__(self):
        return f"Rademacher(c={self.c:g})"


class Mixture1D(_Law):
    """One-dimensional Gaussian mixture sum_k w_k N(m_k, v_k); v_k = 0 gives an atom.

    >>> Mixture1D([0.5, 0.5], [-1.0, 1.0], [0.1, 0.1])
    Mixture1D(w=[0.5, 0.5], m=[-1.0, 1.0], v=[0.1, 0.1])
    """

    law = 2

    def __init__(self, w, m, v):
        self.w = checks.probability_vector(w, "w")
        self.m = checks.array(m, "m", shape=self.w.shape)
        self.v = checks.array(v, "v", shape=self.w.shape)
        if np.any(self.v < 0):
            raise ValueError(f"v must be >= 0 (variances), got {self.v.tolist()}")
        self.params = np.stack([np.log(self.w), self.m, self.v])

    def coefficients(self, tau):
        """Rows a m_k, 1/sig_k^2 and log w_k - log(2 pi sig_k^2)/2, sig_k^2 = a^2 v_k + tau."""
        sig2 = (1.0 - tau) * self.v + tau
        return np.stack([np.sqrt(1.0 - tau) * self.m, 1.0 / sig2, np.log(self.w) - 0.5 * np.log(2 * np.pi * sig2)])

    def sample0(self, shape, rng):
        k = rng.choice(len(self.w), size=shape, p=self.w)
        return self.m[k] + np.sqrt(self.v[k]) * rng.standard_normal(shape)

    def moments(self):
        mean = float(self.w @ self.m)
        return mean, float(self.w @ (self.v + self.m ** 2)) - mean ** 2

    def __repr__(self):
        r = lambda v: [round(float(t), 6) for t in v]          # noqa: E731
        return f"Mixture1D(w={r(self.w)}, m={r(self.m)}, v={r(self.v)})"


class Product(Target):
    """The product target X0 = (X0^1, ..., X0^d) with independent coordinates.

    Parameters
    ----------
    laws : law or sequence of d laws
        One law for every coordinate (`Uniform`, `Rademacher`, `Mixture1D`), or one per coordinate.
    dim : int, optional
        Required when `laws` is a single law.

    Notes
    -----
    log q_tau(x) = sum_i log q1_tau(x_i); the score Jacobian is diag(s1'(x_i)). Supports
    jacobian="diagonal" (and "full", which embeds the diagonal, for small d).

    Examples
    --------
    >>> import numpy as np
    >>> t = Product(Rademacher(1.0), 2)
    >>> s, ds = t.score_diagonal(np.ones((1, 2)), 0.5)     # ds: the diagonal of the score Jacobian
    >>> bool(np.allclose(np.diagonal(t.score_jacobian(np.ones((1, 2)), 0.5), axis1=1, axis2=2), ds))
    True
    """

    diagonal = True

    def __init__(self, laws, dim=None):
        if isinstance(laws, _Law):
            if dim is None:
                raise ValueError("dim must be given with a single law")
            self.dim = checks.integer(dim, "dim", minimum=1)
            laws = [laws] * self.dim
        else:
            laws = list(laws)
            if not laws or not all(isinstance(v, _Law) for v in laws):
                raise ValueError("laws must be a law or a non-empty sequence of laws (Uniform, Rademacher, Mixture1D)")
            if dim is not None and checks.integer(dim, "dim", minimum=1) != len(laws):
                raise ValueError(f"dim must equal the number of laws ({len(laws)}), got {dim}")
            self.dim = len(laws)
        self.laws = laws
        groups = {}
        for i, law in enumerate(laws):
            groups.setdefault(law, []).append(i)
        # columns sharing a law are evaluated in one kernel call (all of them for the named instances)
        self._groups = [(law, None if len(cols) == self.dim else np.array(cols)) for law, cols in groups.items()]

    def _eval_diag(self, x, tau, want_ds, want_logq=True):
        """(log q (n,) or None, s (n, d), ds (n, d) or None): the fused path of jacobian="diagonal"."""
        n, d = x.shape
        logq = np.zeros(n)
        s = np.empty((n, d))
        ds = np.empty((n, d)) if want_ds else None
        for law, cols in self._groups:
            xc = np.ascontiguousarray(x if cols is None else x[:, cols])     # a copy only when needed
            lq = np.empty(n)
            sc = s if cols is None else np.empty((n, len(cols)))
            dc = (ds if cols is None else np.empty((n, len(cols)))) if want_ds else np.empty((0, xc.shape[1]))
            kernels.product_into(law.law, law.coefficients(tau), xc, tau, want_logq, lq, sc, dc)
            logq += lq
            if cols is not None:
                s[:, cols] = sc
                if want_ds:
                    ds[:, cols] = dc
        return logq if want_logq else None, s, ds

    def _eval(self, x, tau, want_jac):
        logq, s, ds = self._eval_diag(x, tau, want_jac)
        J = None
        if want_jac:
            J = np.zeros((*x.shape, x.shape[1]))
            idx = np.arange(x.shape[1])
            J[:, idx, idx] = ds
        return logq, s, J

    def score_diagonal(self, x, tau):
        """(s, ds): the score and the diagonal of its Jacobian, each (n, d)."""
        x, tau = checks.batch(x, self.dim), checks.tau(tau)
        _, s, ds = self._eval_diag(x, tau, True)
        return self._finite(s, "score", tau), self._finite(ds, "score_jacobian", tau)

    def _sample(self, n, tau, rng):
        x0 = np.empty((n, self.dim))
        for law, cols in self._groups:
            if cols is None:
                x0[...] = law.sample0((n, self.dim), rng)
            else:
                x0[:, cols] = law.sample0((n, len(cols)), rng)
        return np.sqrt(1.0 - tau) * x0 + np.sqrt(tau) * rng.standard_normal((n, self.dim))

    def mean_cov(self, tau):
        mom = np.array([law.moments() for law in self.laws])
        a2 = 1.0 - tau
        return np.sqrt(a2) * mom[:, 0], np.diag(a2 * mom[:, 1] + tau)

    def __repr__(self):
        if len(self._groups) == 1:
            return f"Product({self.laws[0]!r}, dim={self.dim})"
        return f"Product(dim={self.dim}, laws={len(self._groups)} distinct)"


# -- named instances ---------------------------------------------------------------------------

NAMES = ("rademacher-cube", "uniform-cube", "product-gmm")

# product-gmm's 1-D law: three modes, asymmetric in weight, place and width (mean -0.13, sd 1.0)
PRODUCT_GMM = dict(w=[0.5, 0.3, 0.2], m=[-1.0, 0.4, 1.25], sd=[0.3, 0.15, 0.45])

PARAMS = {"rademacher-cube": ("scale",), "uniform-cube": ("scale",), "product-gmm": ("scale", "width")}
DEFAULTS = dict(scale=1.0, width=1.0)       # make's defaults: a run's target_args equal to them are dropped


def make(name, dim, scale=DEFAULTS["scale"], width=DEFAULTS["width"]):
    """A named product instance in R^dim (SPEC 9)::

        rademacher-cube  +-scale in every coordinate (the 2^d atoms of the cube)
        uniform-cube     uniform on [-scale, scale] in every coordinate
        product-gmm      every coordinate the 3-mode mixture PRODUCT_GMM, means times `scale`,
                         standard deviations times `width` (the tightness probe varies both)

    >>> make("uniform-cube", 4)
    Product(Uniform(c=1), dim=4)
    """
    scale = checks.positive(scale, "scale")
    width = checks.positive(width, "width")
    if name == "rademacher-cube":
        return Product(Rademacher(scale), dim)
    if name == "uniform-cube":
        return Product(Uniform(scale), dim)
    if name == "product-gmm":
        p = PRODUCT_GMM
        return Product(Mixture1D(p["w"], scale * np.array(p["m"]), (width * np.array(p["sd"])) ** 2), dim)
    raise ValueError(f"name must be one of {', '.join(NAMES)}; got {name!r}")
