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
