"""Sphinx configuration of the conntrack_lib documentation."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "conntrack_lib"
author = "conntrack_lib developers"
copyright = "2026, conntrack_lib developers"  # Sphinx's own name
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "cliff.sphinxext",
    "oslo_config.sphinxext",
]
# cliff.sphinxext: the program name shown in the generated CLI reference.
autoprogram_cliff_application = "conntrack-lib"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
suppress_warnings = ["ref.python"]
