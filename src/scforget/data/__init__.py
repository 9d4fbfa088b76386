"""Forget sets, member/non-member splits, matched negatives and cell-index normalisation."""

from ._donors import pseudo_donors
from ._index import CellSpec, as_positions
from ._matched import MatchedNegatives, matched_negatives
from ._splits import ForgetSplit, heldout_split, scattered_forget, structured_forget

__all__ = [
    "CellSpec",
    "ForgetSplit",
    "MatchedNegatives",
    "as_positions",
    "heldout_split",
    "matched_negatives",
    "pseudo_donors",
    "scattered_forget",
    "structured_forget",
]
