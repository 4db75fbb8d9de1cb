"""
A study end to end
==================

A study is a TOML file: here HEROISM K = 2 and 3 and DPM-Solver++ 2M on a 2-D anisotropic Gaussian
mixture at 4-32 steps. `sweep.run_study` runs it (resumable: rerun it and nothing is recomputed),
`theory_check.load` reads the rows back as typed frames, `fits.generic_table` measures each
configuration's order (the slope of log TV against log NFE, with its interval) and
`plots.figure_for` draws the study's figure.
"""

import pathlib
import tempfile

import matplotlib.pyplot as plt

import theory_check
from theory_check import fits, plots, sweep

tmp = pathlib.Path(tempfile.mkdtemp())
(tmp / "demo.toml").write_text("""
[study]
name = "demo"
description = "HEROISM K = 2, 3 and DPM-Solver++ 2M on gmm-aniso, d = 2"
[defaults]
target = "gmm-aniso"
dim = 2
n = 2000
metrics = ["tv", "kl"]
steps = [4, 8, 16, 32]
[[grid]]
sampler = "heroism"
K = [2, 3]
N = "K"
[[grid]]
sampler = "dpm2m"
""")
sweep.run_study(tmp / "demo.toml", tmp / "out", jobs=1, progress=False)
df = theory_check.load(tmp / "out", "demo")
print(df[["sampler", "K", "N", "steps", "nfe", "tv", "tv_se"]].to_string(index=False))

# %%
# The measured order per configuration (95% t-interval on four points, its df stated):
print(fits.generic_table(df)[["sampler", "K", "order", "ci_lo", "ci_hi", "ci_method"]].to_string(index=False))

# %%
# The figure the CLI would draw for this study:
plots.figure_for("demo")(df, tmp / "demo.png")
plt.figure(figsize=(7, 4.5))
plt.imshow(plt.imread(tmp / "demo.png"))
plt.axis("off")
plt.show()
