"""Validation of models and arguments before any audit work starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scforget import _compat

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: scvi-tools model classes (and their subclasses) whose module follows the VAE protocol used here.
SUPPORTED = ("SCVI", "CondSCVI", "SCANVI", "TOTALVI")


def supported_classes() -> tuple[type, ...]:
    """The supported scvi-tools model classes."""
    import scvi

    return tuple(getattr(scvi.model, name) for name in SUPPORTED)


def check_model(model: BaseModelClass) -> None:
    """Raise if ``model`` cannot be audited (wrong type, untrained, minified)."""
    if not isinstance(model, supported_classes()):
        raise TypeError(
            f"Cannot audit a {type(model).__name__}: membership signals need a VAE whose decoder returns a "
            f"count distribution. Supported: {', '.join(SUPPORTED)} from scvi.model and their scforget "
            "subclasses (scforget.model.SCVI, scforget.model.CondSCVI). TOTALVI (MuData) supports the "
            "signal-based attacks."
        )
    if not _compat.check_if_trained(model):
        raise RuntimeError("The model is not trained yet; call `model.train()` before auditing it.")
    if _compat.is_minified(model):
        raise ValueError("The model's AnnData is minified (no counts); audit a model set up on full counts.")
