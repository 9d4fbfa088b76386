"""Versions of the packages that determine a result."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

_PACKAGES = ("scforget", "scvi-tools", "torch", "lightning", "anndata", "numpy", "opacus")


def package_versions() -> dict[str, str]:
    """Versions of scforget and the packages that determine an unlearning or audit result."""
    out = {}
    for pkg in _PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - editable installs without metadata
            out[pkg] = "unknown"
    return out
