"""theory-check: a numerical verification harness for fast diffusion samplers (HEROISM et al.)."""

import os

__version__ = "0.1.0"

# Samplers alternate Numba kernels (GNU OpenMP threads) with NumPy BLAS calls (OpenBLAS threads).
# libgomp's threads spin for 300000 iterations after each parallel region by default and take the
# cores from OpenBLAS's threads, and the other way round: a full-Jacobian HEROISM run at d = 128
# took 4.6 s that way and 0.74 s with a short spin (measured; results are unchanged). The runtime
# reads this when Numba first starts its thread pool, after this import; a value set by the user wins.
os.environ.setdefault("GOMP_SPINCOUNT", "3000")


def _keep_freed_memory():
    """Let glibc's malloc keep freed blocks for reuse instead of returning them to the system.

    By default it serves blocks above a (dynamic) threshold by fresh mmaps and trims free memory
    at the top of the heap, so a sampler's next score output or node array of the same size lands
    on pages the kernel must map and zero again: 512 page faults per 2 MiB array, ~400 us, as much
    as 70% of the score evaluation that writes it (measured, HEROISM K = 4, d = 64). Blocks up to
    32 MiB (glibc's maximum threshold) now come from the heap, and up to 1 GiB of free heap is kept.
    Other platforms keep their allocator's behaviour."""
    import ctypes
    import sys
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt     # the C library the interpreter runs on
    except (OSError, AttributeError):           # no mallopt (not glibc): nothing to tune
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 << 20)
    mallopt(M_TRIM_THRESHOLD, 1 << 30)


_keep_freed_memory()

from . import samplers, schedules, targets  # noqa: E402,F401
from .sampling import Result, sample  # noqa: E402,F401
