"""Sphinx configuration for scforget."""

from __future__ import annotations

import os
import shutil
import sys
from datetime import datetime
from importlib.metadata import metadata
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "extensions"))

# tutorials live at the top level; myst-nb only reads files inside docs/
shutil.copytree(HERE.parent / "tutorials", HERE / "tutorials", dirs_exist_ok=True)

info = metadata("scforget")
project = info["Name"]
author = "scforget developers"
copyright = f"{datetime.now():%Y}, {author}"
version = info["Version"]
release = version
repository_url = "https://github.com/scverse/scforget"

templates_path = ["_templates"]
html_static_path = ["_static"]
master_doc = "index"
default_role = "literal"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
needs_sphinx = "4.0"

extensions = [
    "myst_nb",
    "sphinx_copybutton",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinxcontrib.bibtex",
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
]

autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "braces"
myst_heading_anchors = 6
myst_enable_extensions = ["amsmath", "colon_fence", "deflist", "dollarmath", "html_image", "html_admonition"]
myst_url_schemes = ("http", "https", "mailto")
nb_output_stderr = "remove"
nb_execution_mode = "off"
nb_merge_streams = True
typehints_document_rtype = True
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"

source_suffix = {".rst": "restructuredtext", ".ipynb": "myst-nb", ".myst": "myst-nb", ".md": "myst-nb"}

# Offline builds (CI machines without internet): intersphinx cannot fetch inventories.
if os.environ.get("SCFORGET_OFFLINE_DOCS"):
    intersphinx_mapping = {}
    nitpicky = False
else:
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
        "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "pandas": ("https://pandas.pydata.org/docs/", None),
        "torch": ("https://pytorch.org/docs/stable/", None),
        "lightning": ("https://lightning.ai/docs/pytorch/stable/", None),
        "sklearn": ("https://scikit-learn.org/stable/", None),
        "matplotlib": ("https://matplotlib.org/stable/", None),
        "distributed": ("https://distributed.dask.org/en/stable/", None),
        "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    }
    nitpicky = True

nitpick_ignore = [
    ("py:class", "AnnOrMuData"),
    ("py:class", "CellSpec"),
    ("py:class", "M"),
    ("py:class", "Self"),
]

html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {"repository_url": repository_url, "use_repository_button": True, "path_to_docs": "docs/"}
pygments_style = "default"
