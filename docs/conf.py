"""Sphinx configuration for apocal's documentation."""

import shutil
from pathlib import Path

import apocal

# automodapi writes a page per public name into api/ and never removes one:
# start afresh, so that a name taken out of the API does not linger as a page
# outside every toctree (a warning, which -W makes an error).
shutil.rmtree(Path(__file__).parent / "api", ignore_errors=True)

project = "apocal"
author = "apocal developers"
copyright = "2026, apocal developers"
version = release = apocal.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx_automodapi.automodapi",
    "numpydoc",
]

# numpydoc renders the Parameters/Returns sections; automodapi builds the
# API pages (one per public name).
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
automodapi_toctreedirnm = "api"
automodsumm_inherited_members = False
autodoc_typehints = "none"
default_role = "obj"
nitpicky = False

# No intersphinx: the documentation must build offline (CI has no network).
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
html_title = f"apocal {release}"
