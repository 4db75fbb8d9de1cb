"""`python -m theory_check` is the `theory-check` command."""

import sys

from .cli import main

sys.exit(main())
