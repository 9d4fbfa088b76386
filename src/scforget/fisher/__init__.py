"""Diagonal Fisher information of scvi-tools models and forget/retain overlap diagnostics.

:func:`diagonal` computes the per-sample diagonal Fisher with vectorised per-cell gradients (layer
samplers registered with :func:`register_sampler`; :func:`module_diagonal` for any module);
:func:`overlap` compares forget and retain cells per parameter category against a null reference;
:func:`classifier_baseline` gives the same comparison for classifiers; :func:`unlearnability` turns
it into a pre-flight verdict. This room computes diagnostics only: it trains no models.
"""

from ._categories import CATEGORIES, categories, gather
from ._classifier import ClassifierBaseline, classifier_baseline
from ._engine import DiagonalFisher, diagonal, elbo_per_cell, module_diagonal
from ._overlap import FisherOverlap, overlap
from ._samplers import register_sampler
from ._unlearnability import Unlearnability, unlearnability

__all__ = [
    "CATEGORIES",
    "ClassifierBaseline",
    "DiagonalFisher",
    "FisherOverlap",
    "Unlearnability",
    "categories",
    "classifier_baseline",
    "diagonal",
    "elbo_per_cell",
    "gather",
    "module_diagonal",
    "overlap",
    "register_sampler",
    "unlearnability",
]
