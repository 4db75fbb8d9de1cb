"""theory-check: a numerical verification harness for fast diffusion samplers (HEROISM et al.)."""

import os

__version__ = "0.1.0"

# Samplers alternate Numba kernels (GNU OpenMP threads) with NumPy BLAS calls (OpenBLAS threads).
# libgomp's threads spin for 300000 iterations after each parallel region by default and take the
# cores from OpenBLAS's threads, and the other way round: a full-Jacobian HEROISM run at d = 128
# took 4.6 s that way and 0.74 s with a short spin (measured; results are unchanged). The runtime
# reads this when Numba first starts its thread pool, after this import; a value set by the user wins.
os.environ.setdefault("GOMP_SPINCOUNT", "3000")

from . import samplers, schedules, targets  # noqa: E402,F401
from .sampling import Result, sample  # noqa: E402,F401
