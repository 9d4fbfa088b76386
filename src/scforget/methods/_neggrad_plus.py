"""NegGrad+: descend on retain cells and ascend on forget cells in one joint loss."""

from __future__ import annotations

from ._joint_ascent import NegGradPlusPlan
from ._registry import register

__all__ = ["NegGradPlusPlan"]

register(
    "neggrad_plus",
    plan=NegGradPlusPlan,
    description="Joint retain descent and bounded forget ascent, retain_loss − λ·forget_loss (default: 10% of "
    "training epochs).",
    reference="Kurmanji2023; Choi2023; Suprun2023",
)
