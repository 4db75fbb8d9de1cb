"""theory-check: a numerical verification harness for fast diffusion samplers (HEROISM et al.)."""

__version__ = "0.1.0"

from . import samplers, schedules, targets  # noqa: E402,F401
from .sampling import Result, sample  # noqa: E402,F401
