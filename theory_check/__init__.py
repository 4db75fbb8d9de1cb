"""theory-check: a numerical verification harness for fast diffusion samplers (HEROISM et al.)."""

__version__ = "0.1.0"

from . import schedules, targets  # noqa: E402,F401
