"""theory-check: a numerical verification harness for fast diffusion samplers (HEROISM et al.).

Importing the package changes nothing in the process. A plain library call is already on the
fast path: Numba runs its parallel kernels on TBB (the `tbb` dependency), whose idle workers do
not spin against OpenBLAS's threads; measured within 1.2x of the tuned process, idle or beside
a busy process (benchmarks item 11). `tune_process()` (called by the command line, the sweep
workers and the benchmarks) adds two process-wide settings; a library user may call it too.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

__all__ = ["samplers", "schedules", "targets", "sample", "Result", "load", "tune_process", "__version__"]


def load(out: str | os.PathLike, study: str | None = None) -> dict[str, pd.DataFrame] | pd.DataFrame:  # noqa: F821 -- pandas imported lazily
    """The study rows of a results folder (`run`'s or `reproduce`'s --out) as typed DataFrames,
    {study: DataFrame}, or one study's frame: see `report.load_typed`."""
    from .report import load_typed
    return load_typed(out, study)


def tune_process() -> None:
    """Process-wide settings for speed (results do not change), applied once:

    * GOMP_SPINCOUNT=3000 unless set (it matters where Numba falls back to its OpenMP layer,
      i.e. without TBB): samplers alternate Numba kernels (GNU OpenMP threads) with
      NumPy BLAS calls (OpenBLAS threads); libgomp's threads spin for 300000 iterations after each
      parallel region by default and take the cores from OpenBLAS's threads, and the other way
      round: a full-Jacobian HEROISM run at d = 128 took 4.6 s that way and 0.74 s with a short
      spin (measured). Numba reads it when it first starts its thread pool.
    * glibc's malloc keeps freed blocks for reuse (mallopt: blocks up to 32 MiB from the heap, up to
      1 GiB of free heap kept) instead of returning them to the system: otherwise each new 2 MiB
      score output is first-touched again, 512 page faults, ~400 us, up to 70% of the evaluation
      that writes it (measured, HEROISM K = 4, d = 64). The price: resident memory stays near its
      peak. Other platforms keep their allocator's behaviour.
    """
    os.environ.setdefault("GOMP_SPINCOUNT", "3000")
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


from . import samplers, schedules, targets  # noqa: E402,F401
from .sampling import Result, sample  # noqa: E402,F401
