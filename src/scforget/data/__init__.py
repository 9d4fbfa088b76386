"""Forget sets, member/non-member splits and cell-index normalisation."""

from ._index import CellSpec, as_positions
from ._splits import ForgetSplit, heldout_split, scattered_forget, structured_forget

__all__ = ["CellSpec", "ForgetSplit", "as_positions", "heldout_split", "scattered_forget", "structured_forget"]
