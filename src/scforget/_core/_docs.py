"""Shared docstring fragments, so that a parameter is described once (as scanpy's ``doc_params`` does)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def doc_params(**fragments: str) -> Callable[[F], F]:
    """Replace ``{name}`` in the decorated object's docstring by ``fragments[name]``.

    Only the named placeholders are replaced, so other braces (LaTeX, dict literals) are left alone.
    Fragments are written with the indentation they take in a numpydoc ``Parameters`` section; the
    placeholder stands, indented, where the fragment's first line goes.
    """

    def decorate(obj: F) -> F:
        doc = obj.__doc__ or ""
        for name, text in fragments.items():
            doc = doc.replace("{" + name + "}", text.strip("\n").lstrip(" "))
        obj.__doc__ = doc
        return obj

    return decorate
