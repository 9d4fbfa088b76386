"""One normaliser for every way a user can name a set of cells."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData

CellSpec: TypeAlias = Sequence[int] | Sequence[str] | np.ndarray | pd.Series | pd.Index
"""Positional integers, a boolean mask, obs names, or a boolean :class:`pandas.Series` aligned on obs."""


def _obs_names(target: AnnData | pd.Index | Sequence[str]) -> pd.Index:
    if hasattr(target, "obs_names"):
        return pd.Index(target.obs_names)
    return pd.Index(target)


def as_positions(
    cells: CellSpec | Any,
    target: AnnData | pd.Index | Sequence[str],
    *,
    argument: str = "forget",
    allow_empty: bool = False,
) -> np.ndarray:
    """Turn any cell specification into sorted, unique positions into ``target``.

    Parameters
    ----------
    cells
        Positional integers, a boolean mask of length ``n_obs``, obs names, or a boolean
        :class:`pandas.Series` indexed by obs names (any order).
    target
        The AnnData (or its obs names) the positions refer to.
    argument
        Name of the user-facing argument, used in error messages.
    allow_empty
        Whether an empty selection is acceptable.

    Returns
    -------
    Sorted unique positions as an ``int64`` array.

    Raises
    ------
    TypeError
        For ``None``, unsupported types, or non-integer positions.
    ValueError
        For out-of-range or negative positions, unknown obs names, masks of the wrong length,
        misaligned Series, NaN, or an empty selection when ``allow_empty`` is false.
    """
    names = _obs_names(target)
    n_obs = len(names)
    if cells is None:
        raise TypeError(f"`{argument}` is None; pass positions, a boolean mask, obs names or a boolean Series.")
    if isinstance(cells, slice):
        raise TypeError(f"`{argument}` is a slice; pass `np.arange(n_obs)[{argument}]` instead.")

    if isinstance(cells, pd.Series):
        if cells.dtype == bool:
            if not cells.index.isin(names).all() or len(cells) != n_obs or not cells.index.is_unique:
                raise ValueError(
                    f"The boolean Series given as `{argument}` is not aligned on obs: its index must hold "
                    f"exactly the {n_obs} obs names. Use `adata.obs[...] == value` on the same AnnData."
                )
            mask = cells.reindex(names).to_numpy()
            return np.flatnonzero(mask).astype(np.int64) if mask.any() or allow_empty else _empty(argument)
        cells = cells.to_numpy()
    if isinstance(cells, pd.Index):
        cells = cells.to_numpy()
    if isinstance(cells, str | int | np.integer):
        cells = [cells]
    arr = np.asarray(list(cells) if isinstance(cells, set | frozenset) else cells)
    if arr.ndim != 1:
        raise ValueError(f"`{argument}` must be one-dimensional; got shape {arr.shape}.")
    if arr.size == 0:
        if allow_empty:
            return np.zeros(0, dtype=np.int64)
        return _empty(argument)

    if arr.dtype == bool:
        if arr.size != n_obs:
            raise ValueError(
                f"The boolean mask given as `{argument}` has length {arr.size}, but the AnnData has {n_obs} cells. "
                "Build the mask on the same AnnData the model was set up with."
            )
        pos = np.flatnonzero(arr)
        if pos.size == 0 and not allow_empty:
            return _empty(argument)
        return pos.astype(np.int64)

    if arr.dtype.kind in "OUS":
        if not all(isinstance(x, str) for x in arr):
            raise TypeError(f"`{argument}` mixes strings and other values; pass either obs names or integer positions.")
        pos = names.get_indexer(arr)
        missing = arr[pos < 0]
        if missing.size:
            shown = ", ".join(repr(m) for m in missing[:5])
            raise ValueError(
                f"{missing.size} obs name(s) in `{argument}` are not in the AnnData (e.g. {shown}). "
                "Check that you pass names from the AnnData the model was set up with."
            )
        return _dedupe(pos, argument)

    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise ValueError(f"`{argument}` contains NaN; positions must be integers.")
        if not np.all(np.mod(arr, 1) == 0):
            raise TypeError(
                f"`{argument}` contains non-integer positions (e.g. {arr[np.mod(arr, 1) != 0][0]}); "
                "pass integer positions, a boolean mask or obs names."
            )
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"`{argument}` has unsupported dtype {arr.dtype}; pass ints, a boolean mask or obs names.")
    if (arr < 0).any():
        raise ValueError(
            f"`{argument}` contains negative positions (e.g. {arr[arr < 0][0]}); positions count from 0. "
            "Use `n_obs + i` if you meant to count from the end."
        )
    if (arr >= n_obs).any():
        raise ValueError(
            f"`{argument}` contains positions out of range (max {arr.max()}, but the AnnData has {n_obs} cells)."
        )
    return _dedupe(arr.astype(np.int64), argument)


def _empty(argument: str) -> np.ndarray:
    raise ValueError(f"`{argument}` selects no cells; pass at least one cell.")


def _dedupe(pos: np.ndarray, argument: str) -> np.ndarray:
    uniq = np.unique(pos)
    if uniq.size < pos.size:
        warnings.warn(
            f"`{argument}` lists {pos.size - uniq.size} cell(s) more than once; duplicates were removed.",
            UserWarning,
            stacklevel=3,
        )
    return uniq.astype(np.int64)
