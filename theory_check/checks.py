"""Input validation shared by the public API: every failure is a ValueError naming the parameter."""

import numbers

import numpy as np

from . import kernels

__all__ = ["array", "batch", "tau", "integer", "positive", "probability_vector", "mixture", "psd_eigh", "orthonormal",
           "rng", "show", "all_finite", "MAX_ABS", "TAU_MIN"]


def show(value):
    """A value for an error message: NumPy scalars as plain numbers (1.1, not np.float64(1.1)).

    >>> show(np.float64(1.1))
    '1.1'
    """
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def array(value, name, ndim=None, shape=None, finite=True):
    """`value` as a float64 array, checked for dimensionality, shape and finiteness.

    `shape` may contain None for a free axis.

    Parameters
    ----------
    value : array_like
    name : str
        The parameter's name, for the error message.
    ndim : int, optional
    shape : tuple of (int or None), optional
    finite : bool
        Refuse NaN and inf.

    Returns
    -------
    ndarray (float64)

    Raises
    ------
    ValueError
        Naming `name`: complex or non-numeric values, wrong dimensions or shape, NaN or inf.
    """
    if np.iscomplexobj(value):
        raise ValueError(f"{name} must be real, got complex values")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of real numbers ({exc})") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, arr.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if finite and not all_finite(arr):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def all_finite(arr):
    """True when every entry of a float array is finite. A finite sum proves it (NaN and inf
    propagate through a sum) in one reading pass (`kernels.total`) and no temporary, where np.isfinite(arr).all()
    writes a boolean array as large as the input first; only a non-finite sum (which finite
    entries near the float64 limit can also give) falls back to min and max.

    >>> all_finite(np.array([1.0, np.nan])), all_finite(np.zeros(3)), all_finite(np.array([1e308, 1e308]))
    (False, True, True)
    """
    if arr.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if arr.dtype == np.float64 and arr.flags.c_contiguous and arr.ndim >= 1:
            s = kernels.total(arr.reshape(arr.shape[0], -1))
        else:
            s = arr.sum()
    if np.isfinite(s):
        return True
    return bool(np.isfinite(arr.min()) and np.isfinite(arr.max()))


# Squared distances, and the score Jacobian's outer products, must stay finite in float64.
MAX_ABS = 1e100
TAU_MIN = 1e-12


def batch(x, dim, name="x"):
    """A batch of points: float64 array of shape (n, dim), n >= 1, finite, |entries| <= MAX_ABS.

    >>> batch([[0.0, 1.0]], 2).shape
    (1, 2)
    """
    arr = array(x, name, ndim=2, finite=False)
    if arr.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (n = 0)")
    lo, hi = arr.min(), arr.max()           # one scan each serves both checks (see all_finite)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if max(hi, -lo) > MAX_ABS:
        raise ValueError(f"{name} has entries beyond {MAX_ABS:g} in magnitude, where squared distances overflow float64")
    return arr


def tau(value, name="tau"):
    """A noise level in [TAU_MIN, 1) as a float (below TAU_MIN the score's scale leaves float64).

    >>> tau(np.float64(0.25))
    0.25
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating)):
        arr = np.asarray(value)
        if arr.shape != () or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{name} must be a real scalar, got {show(value)}")
        value = arr.item()
    t = float(value)
    if not (0.0 < t < 1.0):
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {show(t)}")
    if t < TAU_MIN:
        raise ValueError(f"{name} must be >= {TAU_MIN:g}: below it the score's scale 1/tau and its Jacobian's "
                         f"1/tau^2 leave float64's range; got {show(t)}")
    return t


def integer(value, name, minimum=None):
    """`value` as an int (bools and floats refused), at least `minimum`; ValueError naming `name`.

    >>> integer(np.int64(3), "K", minimum=1)
    3
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise ValueError(f"{name} must be an integer, got {show(value)}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def positive(value, name, allow_zero=False):
    """`value` as a finite float > 0 (>= 0 with allow_zero), booleans refused; ValueError naming `name`."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a real number, got {show(value)}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {show(value)}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {show(value)}")
    return v


def boolean(value, name):
    """`value` as a bool: only True or False (a TOML boolean) is accepted, so that the strings
    "false" or "no", which Python's bool() would read as True, are refused with a ValueError.

    >>> boolean(False, "corrector")
    False
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false (a boolean), got {show(value)}")
    return bool(value)


def target(value, name="target"):
    """`value` if it is a `targets.Target`; a score callable or a duck-typed object gets a
    ValueError that says how to wrap it."""
    from .targets import Target
    if not isinstance(value, Target):
        raise ValueError(f"{name} must be a theory_check Target, got {type(value).__name__}; wrap a score "
                         "callable with targets.from_functions(dim, score, ...) or subclass targets.Target")
    return value


def probability_vector(w, name="weights"):
    """A 1-D array of positive numbers summing to 1 (to 1e-10); ValueError naming `name`."""
    w = array(w, name, ndim=1)
    if w.size == 0:
        raise ValueError(f"{name} must not be empty")
    if np.any(w < 0):
        raise ValueError(f"{name} must be non-negative")
    if abs(w.sum() - 1.0) > 1e-10:
        raise ValueError(f"{name} must sum to 1, got sum {show(w.sum())}")
    if np.any(w == 0):
        raise ValueError(f"{name} must be strictly positive (drop zero-weight components)")
    return w


def mixture(weights, means):
    """(weights (M,), means (M, d)) of a mixture, checked against each other."""
    means = array(means, "means", ndim=2)
    M, d = means.shape
    if M == 0 or d == 0:
        raise ValueError(f"means must have shape (M, d) with M, d >= 1, got {means.shape}")
    weights = probability_vector(weights)
    if weights.shape != (M,):
        raise ValueError(f"weights must have shape ({M},) to match means, got {weights.shape}")
    return weights, means


def psd_eigh(cov, name):
    """Eigendecomposition (eigenvalues, eigenvectors) of a symmetric PSD matrix, checked: asymmetry
    beyond 1e-10 relative or an eigenvalue below -1e-10 relative is a ValueError naming `name`;
    negative eigenvalues within that rounding are set to 0, positive ones are kept as given."""
    cov = array(cov, name, ndim=2)
    d = cov.shape[0]
    if cov.shape != (d, d):
        raise ValueError(f"{name} must be square, got shape {cov.shape}")
    scale = max(np.abs(cov).max(), 1e-300)
    if np.abs(cov - cov.T).max() > 1e-10 * scale:
        raise ValueError(f"{name} must be symmetric")
    lam, V = np.linalg.eigh(0.5 * (cov + cov.T))
    if lam.min() < -1e-10 * scale:
        raise ValueError(f"{name} must be positive semi-definite (min eigenvalue {lam.min():.3g})")
    # Negative eigenvalues within rounding of zero are zero (a singular covariance is allowed);
    # positive ones are kept as given, however small: the target stays the one given.
    lam = np.where(lam < 0.0, 0.0, lam)
    return lam, V


def orthonormal(U, name, dim):
    """A (dim, m) array with orthonormal columns (to 1e-10), 1 <= m <= dim; ValueError naming `name`."""
    U = array(U, name, ndim=2)
    if U.shape[0] != dim or U.shape[1] > dim or U.shape[1] == 0:
        raise ValueError(f"{name} must have shape ({dim}, m) with 1 <= m <= {dim}, got {U.shape}")
    if np.abs(U.T @ U - np.eye(U.shape[1])).max() > 1e-10:
        raise ValueError(f"{name} must have orthonormal columns")
    return U


def rng(seed, name="seed"):
    """A numpy Generator from a Generator or a non-negative int seed (None is refused: runs are seeded)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise ValueError(f"{name} must be given (an int or a numpy Generator) for reproducibility")
    return np.random.default_rng(integer(seed, name, minimum=0))
