"""Sphinx configuration: the API reference from the package's numpy-style docstrings (napoleon)
and a gallery of runnable examples (sphinx-gallery, from ../examples). Built with warnings as
errors by .ci/run: python -m sphinx -W --keep-going -b html docs docs/_build/html"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import theory_check  # noqa: E402

project = "theory-check"
author = "theory-check developers"
release = version = theory_check.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.napoleon", "sphinx.ext.mathjax",
              "sphinx_gallery.gen_gallery", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.md5", "auto_examples/*.json", "sg_execution_times.rst"]
html_theme = "alabaster"
html_static_path = []
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autosummary_generate = False
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True            # class attributes as fields: the re-exported classes would describe them twice
myst_heading_anchors = 3
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
}
# A parameter type such as "Target" or "Tangent" resolves to the class both where it is defined
# and where a package re-exports it (theory_check.targets.Target is theory_check.targets.base.Target):
# Sphinx reports the two names as ambiguous though they are one object.
suppress_warnings = ["ref.python"]

# The docstrings are plain-text numpy style written for `help()`: |x| is a norm, * a product,
# x_i an index. reStructuredText reads those as substitutions, emphasis and references, so
# before Sphinx parses a docstring they are escaped outside code (``...``, `...`, >>> lines,
# indented literal blocks after ::).
_CODE = re.compile(r"(``[^`]*``|`[^`]*`)")


def _escape_text(text):
    parts = _CODE.split(text)
    for i in range(0, len(parts), 2):
        p = parts[i]
        p = p.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")
        p = re.sub(r"(?<=\w)_(?=\W|$)", r"\\_", p)          # a trailing underscore: a reference in rst
        parts[i] = p
    return "".join(parts)


def _escape(app, what, name, obj, options, lines):
    literal, indent = False, 0
    for k, line in enumerate(lines):
        stripped = line.strip()
        cur = len(line) - len(line.lstrip())
        if literal and stripped and cur <= indent:
            literal = False
        if stripped.startswith(">>>") or stripped.startswith("...") and k and lines[k - 1].strip().startswith((">>>", "...")):
            continue
        if literal or not stripped:
            continue
        if k and lines[k - 1].strip() == "" and k >= 2 and lines[k - 2].strip().startswith(">>>"):
            continue                                          # a doctest's expected output
        body = line[cur:]
        bullet = body[:2] if body.startswith(("* ", "- ")) else ""        # a list item's marker stays one
        lines[k] = line[:cur] + bullet + _escape_text(body[len(bullet):])
        if stripped.endswith("::"):
            literal, indent = True, cur


def setup(app):
    app.connect("autodoc-process-docstring", _escape)
