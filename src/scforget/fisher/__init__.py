"""Diagonal Fisher information of scvi-tools models and forget/retain overlap diagnostics.

:func:`diagonal` computes the per-sample diagonal Fisher with vectorised per-cell gradients;
:func:`overlap` compares forget and retain cells per parameter category against a null reference;
:func:`classifier_baseline` gives the same comparison for classifiers; :func:`unlearnability` turns
it into a pre-flight verdict.
"""

from ._categories import CATEGORIES, categories
from ._classifier import ClassifierBaseline, classifier_baseline
from ._engine import DiagonalFisher, diagonal, elbo_per_cell
from ._overlap import FisherOverlap, overlap
from ._unlearnability import Unlearnability, estimate_retrain_seconds, unlearnability

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
    "estimate_retrain_seconds",
    "overlap",
    "unlearnability",
]
