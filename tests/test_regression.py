"""Regression of error rates (SPEC 8): recompute the committed baseline and fail if any TV, KL or
observed rate moves, in either direction. The baseline is written by `theory-check reproduce`,
never by hand.

Tolerance: a run is a pure function of its spec and seed, and the kernels' results do not depend
on thread counts, so an unchanged implementation reproduces TV to ~5e-12 relative (rounding of
BLAS-level sums). 1e-9 relative leaves a margin of 200 over that, and catches any change of the
numerics: a halved TV fails as surely as a doubled one. A deliberate change of numerics
regenerates results/ (and with it this baseline)."""

import json
import pathlib

import numpy as np
import pytest

from theory_check import report, runs

BASELINE = pathlib.Path(__file__).resolve().parent.parent / "results" / "baseline.json"
RTOL = 1e-9


def _entries():
    return json.loads(BASELINE.read_text())["entries"]


def _key(spec):
    return json.dumps(spec, sort_keys=True)


@pytest.fixture(scope="module")
def recomputed():
    return {_key(e["spec"]): runs.evaluate(runs.normalise(dict(e["spec"], metrics=["tv", "kl"]))) for e in _entries()}


def test_baseline_covers_the_configured_specs():
    # the committed baseline is the one `reproduce` writes for report.BASELINE_SPECS
    assert [_key(e["spec"]) for e in _entries()] == [_key(s) for s in report.BASELINE_SPECS]
    assert {e["jacobian"] for e in _entries()} == {"full", "structured", "diagonal"}


def test_baseline_tv_and_kl_are_reproduced(recomputed):
    for e in _entries():
        row = recomputed[_key(e["spec"])]
        assert row["status"] == "ok" and row["nfe"] == e["nfe"] and row["jacobian"] == e["jacobian"], e["spec"]
        assert abs(row["tv"] - e["tv"]) <= RTOL * e["tv"], (e["spec"], row["tv"], e["tv"])
        assert abs(row["kl"] - e["kl"]) <= RTOL * abs(e["kl"]) + 1e-15, (e["spec"], row["kl"], e["kl"])


def test_baseline_rates_are_reproduced(recomputed):
    # observed rate log(TV(S1)/TV(S2)) / log(S2/S1) between each configuration's two step counts
    pairs = {}
    for e in _entries():
        spec = dict(e["spec"])
        steps = spec.pop("steps")
        pairs.setdefault(_key(spec), {})[steps] = (e["tv"], recomputed[_key(e["spec"])]["tv"])
    assert len(pairs) == len(_entries()) // 2
    for spec, d in pairs.items():
        s1, s2 = sorted(d)
        base = np.log(d[s1][0] / d[s2][0]) / np.log(s2 / s1)
        new = np.log(d[s1][1] / d[s2][1]) / np.log(s2 / s1)
        assert abs(new - base) <= 1e-6, (spec, base, new)
