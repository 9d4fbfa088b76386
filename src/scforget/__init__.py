"""scforget: machine unlearning and membership-inference auditing for scvi-tools models."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from . import data, datasets, fisher, methods, model, pl, privacy, train
from ._core import local_fleet
from .methods import unlearn
from .privacy import audit

try:
    __version__ = version("scforget")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

_logger = logging.getLogger("scforget")
if not _logger.handlers:
    _logger.addHandler(logging.NullHandler())

__all__ = [
    "audit",
    "data",
    "datasets",
    "fisher",
    "local_fleet",
    "methods",
    "model",
    "pl",
    "privacy",
    "train",
    "unlearn",
    "__version__",
]
