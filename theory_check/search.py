"""The minimal-NFE search (SPEC 7 and 12): the smallest number of steps whose run at the full
sample size n certifies TV + 2 se <= eps, to REL_RESOLUTION relative resolution.

The definition is the bisection's: `steps_min` passes the certificate at the full n and a run
at max(steps_min - 1, steps_min / 1.03) or fewer steps failed it. What changes is the cost, the
sum over probes of steps x n_probe / n (in steps at the full n):

* a probe may run on a prefix of the sample (the first n / 4^k rows of the same seeded x_in) and
  may then decide only "fails", when TV - 4 se > eps there; a pass is certified at the full n only;
* proposals come from the local power law log TV = a - p log steps through the two nearest probes,
  aiming at TV (1 + 2 rho) = eps (rho = se / TV at the full n, scaled from the probe), safeguarded:
  inside the bracket, at least one resolution step from its ends, geometric bisection when the
  model step would not halve the bracket (or no model is available);
* the prefix of a probe is the smallest whose predicted TV - 4 se clears eps by 20 %: a step
  count far above eps is rejected for a fraction of a run, one near it goes to the full n.

A probe whose TV is above MODEL_MAX_TV is saturated (TV <= 1 bends the curve flat there) and stays
out of the model: until two probes are below it the search doubles, on prefixes. A prediction
beyond max_steps is probed at max_steps: a search is censored only by a failure measured there.
A probe that folds or goes non-finite counts as a fail, as in the bisection. Both searches are
plain functions of a `probe(steps, rows) -> (tv, se) | None` callback, so that they can be tested on
synthetic TV curves (tests/test_search.py) and compared on the same runs (`python -m benchmarks`).

>>> tv = lambda steps, rows: (10.0 / steps ** 2, 0.05 * 10.0 / steps ** 2 * (4000 / rows) ** 0.5)
>>> r = minimal_steps(tv, eps=1e-3, n=4000, max_steps=4096)
>>> r.steps_min, r.cost <= 2.5 * r.steps_min          # TV + 2 se = 11 / steps^2 <= 1e-3 from 104.9
(105, True)
"""

import math
from dataclasses import dataclass, field

__all__ = ["REL_RESOLUTION", "Search", "minimal_steps", "bisection", "resolved"]

REL_RESOLUTION = 0.03
MIN_PREFIX_ROWS = 250           # below this a standard error of TV is itself too noisy to reject on
FOLD_ROWS = 32                  # before any TV is finite, a step count is first tried on this many rows:
                                # a fold there is a fold of the full run (its samples are among the n)
PREFIXES = (64, 16, 4)          # n / 4^k
REJECT_SE = 4.0                 # a prefix rejects when TV - 4 se > eps
PREFIX_MARGIN = 1.2             # ... and a prefix is chosen where the prediction clears eps by 20 %
FIRST_STEPS = 2
MODEL_MAX_TV = 0.5              # TV is at most 1: a probe near it is saturated (or folded), off the power
                                # law; a model through it predicts a crossing far from the true one


@dataclass
class Search:
    """The outcome: steps_min (None when censored at max_steps), the probes [(steps, rows, tv, se)]
    in the order run (tv, se None for a fold), and the cost in steps at the full n."""
    steps_min: int | None
    probes: list = field(default_factory=list)
    n: int = 0

    @property
    def censored(self):
        return self.steps_min is None

    @property
    def cost(self):
        return sum(s * rows for s, rows, _, _ in self.probes) / self.n


def resolved(lo, hi):
    """The bracket (lo fails, hi passes) is as narrow as the resolution asks."""
    return hi - lo <= max(1, REL_RESOLUTION * hi)


def _passes(tv, se, eps):
    return tv is not None and math.isfinite(tv) and math.isfinite(se) and tv + 2.0 * se <= eps


def _rejects(tv, se, eps):
    """A prefix's decision: only "fails", when TV is above eps by 4 standard errors (or a fold)."""
    return tv is None or not math.isfinite(tv) or (math.isfinite(se) and tv - REJECT_SE * se > eps)


def bisection(probe, eps, n, max_steps):
    """The search of SPEC 7: doubling from 2 steps, then geometric bisection, every probe at the full n."""
    probes = []

    def ok(steps):
        r = probe(steps, n)
        tv, se = r if r is not None else (None, None)
        probes.append((steps, n, tv, se))
        return _passes(tv, se, eps)

    lo, hi = 0, FIRST_STEPS
    while hi <= max_steps and not ok(hi):
        lo, hi = hi, 2 * hi
    if hi > max_steps:
        return Search(None, probes, n)
    while not resolved(lo, hi):
        mid = hi // 2 if lo == 0 else int(round(math.sqrt(lo * hi)))
        mid = min(max(mid, lo + 1), hi - 1)
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return Search(hi, probes, n)


def _power_law(points):
    """(log A, p) of TV = A steps^-p through the two probes nearest the crossing, or None."""
    pts = sorted((s, tv) for s, tv in points
                 if tv is not None and math.isfinite(tv) and 0 < tv <= MODEL_MAX_TV)
    if len(pts) < 2:
        return None
    (s1, t1), (s2, t2) = pts[-2], pts[-1]
    p = -(math.log(t2) - math.log(t1)) / (math.log(s2) - math.log(s1))
    if not (math.isfinite(p) and p > 0.05):
        return None                 # flat or rising: no usable model here
    return math.log(t2) + p * math.log(s2), p


def minimal_steps(probe, eps, n, max_steps):
    """The search of SPEC 12. `probe(steps, rows)` runs `steps` steps on the first `rows` of the
    sample and returns (tv, se), or None for a fold or non-finite run; returns a `Search`.

    The result's steps_min passes at the full n; the bracket below it failed (at the full n, or
    on a prefix by 4 se); a censored search (no pass up to max_steps) has steps_min None.
    """
    probes = []
    best = {}                   # steps -> (tv, rho = se/tv scaled to the full n, rows) of its most precise probe
    ladder = [n // k for k in PREFIXES if n // k >= MIN_PREFIX_ROWS] + [n]
    state = dict(lo=0, hi=None, bisect=False)      # lo: the largest known fail; hi: the smallest full-n pass

    done = {}

    def run(steps, rows):
        if (steps, rows) in done:           # a probe is a pure function of (steps, rows): never run twice
            return done[(steps, rows)]
        r = probe(steps, rows)
        tv, se = r if r is not None else (None, None)
        probes.append((steps, rows, tv, se))
        done[(steps, rows)] = (tv, se)
        if (tv is not None and math.isfinite(tv) and tv > 0 and math.isfinite(se)
                and rows >= min(MIN_PREFIX_ROWS, n) and rows >= best.get(steps, (0, 0, 0))[2]):
            best[steps] = (tv, se / tv * math.sqrt(rows / n), rows)
        return tv, se

    def rho():
        """se/TV scaled to the full n, from the most precise unsaturated probe (the first of them at
        that precision); a saturated TV near 1 has a relative se far below the crossing's."""
        usable = [v for v in best.values() if v[0] <= MODEL_MAX_TV]
        return max(usable, key=lambda v: v[2])[1] if usable else 0.05

    def predicted(steps):
        model = _power_law([(s, v[0]) for s, v in best.items()])
        return None if model is None else math.exp(model[0] - model[1] * math.log(steps))

    def decide(steps):
        """'pass' or 'fail' at `steps`: on the smallest prefix whose predicted TV - 4 se clears eps by
        PREFIX_MARGIN (the smallest at all before a model exists), then straight to the full n."""
        if not best and FOLD_ROWS < ladder[0]:      # still folding at every count tried: look for a fold first
            tv, _ = run(steps, FOLD_ROWS)
            if tv is None or not math.isfinite(tv):
                return "fail"
        guess = predicted(steps)
        rows = ladder[0]
        if guess is not None:
            rows = next((r for r in ladder[:-1]
                         if guess * (1.0 - REJECT_SE * rho() * math.sqrt(n / r)) > PREFIX_MARGIN * eps), n)
        if rows < n:
            tv, se = run(steps, rows)
            if _rejects(tv, se, eps):
                return "fail"
        tv, se = run(steps, n)
        return "pass" if _passes(tv, se, eps) else "fail"

    def propose():
        """The model's crossing TV (1 + 2 rho) = eps, safeguarded into the bracket: no closer to lo
        than the largest count whose pass would resolve the bracket (floor(lo / 0.97)), no closer
        to hi than the smallest whose failure would (ceil(0.97 hi)); where these overlap, a count in
        the overlap resolves either way. Geometric bisection when the last model step did not halve
        the bracket; doubling from 2 steps until two probes give a model."""
        lo, hi = state["lo"], state["hi"]
        a = max(math.floor(lo / (1.0 - REL_RESOLUTION)), lo + 1)          # a pass here resolves
        b = min(math.ceil((1.0 - REL_RESOLUTION) * hi), hi - 1) if hi is not None else math.inf  # a fail here resolves
        model = _power_law([(s, v[0]) for s, v in best.items()])
        if model is None:
            cand = (2 * lo if lo else FIRST_STEPS) if hi is None else math.sqrt(max(lo, 1) * hi)
        elif hi is not None and state["bisect"]:
            cand = math.sqrt(max(lo, 1) * hi)
        else:
            cand = math.exp((model[0] - math.log(eps / (1.0 + 2.0 * rho()))) / model[1])
            if hi is None and cand > 64.0 * max(lo, 1):
                # a jump of more than 64x is not trusted: probe a quarter of the way, where the TV is
                # predicted well above eps, so that a prefix rejects it for a fraction of a run
                cand = min(cand / 4.0, 64.0 * max(lo, 1))
        cand = int(round(cand)) if math.isfinite(cand) else a
        if a >= b:
            return min(max(cand, b), a)
        # a crossing predicted within one resolution step of an end is probed at that end, whose
        # result then resolves the bracket one way (a fail just below b, or a pass just above a)
        if cand > (1.0 - REL_RESOLUTION) * b:
            return b
        if cand < a / (1.0 - REL_RESOLUTION):
            return a
        return min(max(cand, a), b)

    def log_width():
        return math.log(state["hi"] / max(state["lo"], 1)) if state["hi"] is not None else math.inf

    while True:
        lo, hi = state["lo"], state["hi"]
        if hi is not None and resolved(lo, hi):
            return Search(hi, probes, n)
        steps = propose()
        if steps > max_steps:
            if lo >= max_steps:
                return Search(None, probes, n)
            steps = max_steps       # censored only by a failure at max_steps, never by a prediction
        width, was_model = log_width(), not state["bisect"]
        if decide(steps) == "pass":
            state["hi"] = steps
        else:
            state["lo"] = steps
            if steps >= max_steps:
                return Search(None, probes, n)
        # a model step that did not halve the bracket is followed by a bisection step
        state["bisect"] = was_model and math.isfinite(width) and log_width() > 0.5 * width
