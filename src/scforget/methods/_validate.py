"""Argument checks shared by the parameter-space methods (raised before any Fisher work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._registry import UnlearnContext


def check_positive(value: float, name: str) -> None:
    """Raise a ``ValueError`` unless ``value`` is a positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number; got {value!r}.")


def check_no_epochs(ctx: UnlearnContext, method: str) -> None:
    """Raise a ``ValueError`` when a training budget is given to a method that does not train."""
    if ctx.max_epochs:
        raise ValueError(
            f"{method!r} edits parameters without training, so `max_epochs` must be 0 (got {ctx.max_epochs}). "
            "For a retain fine-tune afterwards, run unlearn(result, forget, method='finetune')."
        )
