"""The examples in the public docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["theory_check.samplers", "theory_check.samplers.base", "theory_check.samplers.functional",
           "theory_check.samplers.heroism", "theory_check.samplers.multistep", "theory_check.targets",
           "theory_check.sampling", "theory_check.metrics", "theory_check.schedules", "theory_check.checks",
           "theory_check.fits", "theory_check.runs", "theory_check.kernels",
           "theory_check.targets.base", "theory_check.targets.mixtures", "theory_check.targets.manifolds",
           "theory_check.targets.sphere", "theory_check.targets.errors", "theory_check.targets.products"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0
