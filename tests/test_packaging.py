"""environment.yml (conda) and pyproject.toml (pip) list the same dependencies."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# pip name -> conda-forge names
CONDA_NAMES = {"dask[distributed]": {"dask", "distributed"}, "torch": {"pytorch"}}


def _name(req):
    return re.split(r"[<>=!~ ]", req, maxsplit=1)[0].strip().lower()


def test_environment_yml_lists_the_pyproject_dependencies_and_extras():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(proj["dependencies"]) + [r for extra in proj["optional-dependencies"].values() for r in extra]
    pip = set()
    for r in reqs:
        pip |= CONDA_NAMES.get(_name(r), {_name(r)})
    text = (ROOT / "environment.yml").read_text()
    deps = text.split("dependencies:", 1)[1]
    conda = {_name(line.strip()[2:]) for line in deps.splitlines()
             if line.strip().startswith("- ") and not line.strip().startswith(("- pip", "- -e")) and ":" not in line}
    conda -= {"python"}
    assert pip == conda, (pip - conda, conda - pip)


def test_license_and_type_marker_ship():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (ROOT / "LICENSE").read_text().startswith("MIT License") and proj["project"]["license"]["text"] == "MIT"
    assert (ROOT / "theory_check" / "py.typed").exists()
    assert "py.typed" in proj["tool"]["setuptools"]["package-data"]["theory_check"]
    assert any("License :: OSI Approved :: MIT" in c for c in proj["project"]["classifiers"])


def test_the_public_api_is_annotated():
    # every parameter (but self and **params) and the return of the entry points a user calls
    import inspect

    import theory_check
    from theory_check import metrics, samplers, sampling, schedules, sweep, targets
    public = [theory_check.sample, theory_check.load, theory_check.tune_process, sampling.auto_jacobian,
              schedules.log_snr, schedules.edm, schedules.paper, schedules.validate, schedules.tau_to_sigma,
              schedules.sigma_to_tau, metrics.tv_kl, metrics.w2, metrics.w2_report, metrics.coupling_rmse,
              metrics.histogram_tv, metrics.weight_diagnostics, metrics.log_ratio, targets.make, targets.canonical,
              targets.from_functions, samplers.make, samplers.canonical, samplers.Sampler.run, samplers.Sampler.nfe,
              samplers.Sampler.nfe_per_step, samplers.Sampler.steps_for_budget, sweep.load_study, sweep.run_study]
    missing = []
    for fn in public:
        sig = inspect.signature(fn)
        for name, p in sig.parameters.items():
            if name != "self" and p.kind is not p.VAR_KEYWORD and p.annotation is inspect.Parameter.empty:
                missing.append(f"{fn.__qualname__}({name})")
        if sig.return_annotation is inspect.Signature.empty:
            missing.append(f"{fn.__qualname__} -> ?")
    assert not missing, missing
