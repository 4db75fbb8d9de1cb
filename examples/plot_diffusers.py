"""
A diffusers scheduler's exact TV
================================

`compare.DiffusersSampler` runs a deterministic Hugging Face diffusers scheduler in float64 with the
exact score as its noise-prediction model; the log-determinant of its map is exact (a
deterministic scheduler's step is linear in its inputs), so its TV comes out of the change of
variables as for the built-in samplers. Needs the `compare` extra (diffusers and torch).
"""

import matplotlib.pyplot as plt

from theory_check import compare, metrics, sample, samplers, schedules, targets

try:
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
except ImportError:                                # the example needs pip install -e '.[compare]'
    raise SystemExit("this example needs diffusers: pip install -e '.[compare]'")

t = targets.make("gmm-aniso", 4, 0)
runs = {"diffusers UniPC (order 3)": lambda: compare.DiffusersSampler(UniPCMultistepScheduler(solver_order=3, lower_order_final=False)),
        "diffusers DPM-Solver++ 2M": lambda: compare.DiffusersSampler(DPMSolverMultistepScheduler(final_sigmas_type="sigma_min")),
        "built-in DPM-Solver++ 2M": lambda: samplers.make("dpm2m"),
        "built-in HEROISM K=3, N=3": lambda: samplers.make("heroism", K=3, N=3)}
for name, make in runs.items():
    nfe, tv = [], []
    for k in (10, 20, 40, 80):
        r = sample(t, make(), schedules.log_snr(k), n=2000, seed=0, jacobian="full")
        nfe.append(r.nfe), tv.append(metrics.tv_kl(t, r).tv)
    print(name, ["%.3e" % v for v in tv])
    ours = name.startswith("built-in")            # diffusers dashed, hollow: equal to ours where they coincide
    plt.loglog(nfe, tv, "o-" if ours else "s--", markerfacecolor=None if ours else "white", label=name)
plt.xlabel("score evaluations (NFE)")
plt.ylabel("TV(p_out, q)")
plt.title("gmm-aniso, d = 4: production schedulers beside HEROISM\n(diffusers' DPM-Solver++ 2M equals the built-in one)")
plt.legend(fontsize=8)
plt.show()
