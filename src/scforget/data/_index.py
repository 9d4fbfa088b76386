"""One normaliser for every way a user can name a set of cells."""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pandas as pd

from scforget._core import warn

if TYPE_CHECKING:
    from anndata import AnnData

CellSpec: TypeAlias = Sequence[int] | Sequence[str] | np.ndarray | pd.Series | pd.Index
"""Positional integers, a boolean mask, obs names, or a boolean :class:`pandas.Series` aligned on obs."""

_HOW = "pass positions, a boolean mask, obs names or a boolean Series such as `adata.obs['cell_type'] == 'DC'`"


def _obs_names(target: AnnData | pd.Index | Sequence[str]) -> pd.Index:
    if hasattr(target, "obs_names"):
        return pd.Index(target.obs_names)
    return pd.Index(target)


def _check_unique(names: pd.Index, argument: str) -> None:
    if not names.is_unique:
        dup = names[names.duplicated()]
        raise ValueError(
            f"`{argument}` names cells, but the AnnData has {dup.size} duplicated obs name(s) (e.g. {dup[0]!r}), so "
            "a name can mean several cells. Make them unique before setting up the model "
            "(`adata.obs_names_make_unique()`), or pass positions or a boolean mask."
        )


def _refuse_container(cells: Any, argument: str) -> None:
    """Specific messages for objects that hold cells but are not a cell specification."""
    kind = type(cells).__name__
    if hasattr(cells, "obs_names") and hasattr(cells, "n_obs"):
        raise TypeError(
            f"`{argument}` is an {kind} (a subset of the data?); pass its cells by name: `{argument}=subset.obs_names`."
        )
    if isinstance(cells, pd.DataFrame):
        raise TypeError(
            f"`{argument}` is a DataFrame; pass one boolean column (e.g. `df['col'] == value`) or its index of obs "
            "names (`df.index`)."
        )
    if isinstance(cells, Iterator) or isinstance(cells, dict):
        raise TypeError(f"`{argument}` is a {kind}; {_HOW}. A generator can be passed as `list(generator)`.")
    if isinstance(cells, slice):
        raise TypeError(f"`{argument}` is a slice; pass `np.arange(n_obs)[{argument}]` instead.")


def _from_series(cells: pd.Series, names: pd.Index, argument: str, allow_empty: bool) -> np.ndarray | None:
    """Positions of a boolean Series aligned on obs; ``None`` for a Series of names or positions."""
    aligned = len(cells) == len(names) and cells.index.isin(names).all()
    if cells.dtype == bool:
        if not aligned or not cells.index.is_unique:
            raise ValueError(
                f"The boolean Series given as `{argument}` is not aligned on obs: its index must hold exactly the "
                f"{len(names)} obs names. Use `adata.obs[...] == value` on the same AnnData."
            )
        _check_unique(names, argument)
        mask = cells.reindex(names).to_numpy()
        return np.flatnonzero(mask).astype(np.int64) if mask.any() or allow_empty else _empty(argument)
    if aligned and len(names) > 0:
        col = cells.name if cells.name is not None else "key"
        value = cells.iloc[0]
        raise TypeError(
            f"`{argument}` is a column of per-cell values (a Series indexed by the obs names), not a selection. "
            f"Select cells with a comparison, e.g. `adata.obs[{col!r}] == {value!r}`."
        )
    return None


def _element_kind(values: list[Any]) -> str:
    """``"str"``, ``"bool"``, ``"int"``, ``"float"`` or ``"mixed"`` for the elements of a list or tuple."""
    kinds = set()
    for v in values:
        if isinstance(v, str):
            kinds.add("str")
        elif isinstance(v, bool | np.bool_):
            kinds.add("bool")
        elif isinstance(v, numbers.Integral):
            kinds.add("int")
        elif isinstance(v, numbers.Real):
            kinds.add("float")
        else:
            kinds.add(type(v).__name__)
    if not kinds:
        return "empty"
    if kinds == {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else "mixed"


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
        For ``None``, AnnData objects, DataFrames, generators, per-cell label columns, sequences that mix
        names and positions, and non-integer positions.
    ValueError
        For out-of-range or negative positions, unknown obs names, names that are not unique in
        ``target``, masks of the wrong length, misaligned Series, NaN, or an empty selection when
        ``allow_empty`` is false.
    """
    names = _obs_names(target)
    n_obs = len(names)
    if cells is None:
        raise TypeError(f"`{argument}` is None; {_HOW}.")
    _refuse_container(cells, argument)
    if isinstance(cells, pd.Series):
        pos = _from_series(cells, names, argument, allow_empty)
        if pos is not None:
            return pos
        cells = cells.to_numpy()
    if isinstance(cells, pd.Index):
        cells = cells.to_numpy()
    if isinstance(cells, str | numbers.Integral) and not isinstance(cells, bool):
        cells = [cells]
    if isinstance(cells, set | frozenset):
        cells = sorted(cells, key=str)
    if isinstance(cells, list | tuple):
        kind = _element_kind(list(cells))
        if kind == "mixed":
            raise TypeError(
                f"`{argument}` mixes obs names, positions or flags (e.g. {list(cells)[:4]!r}); pass only obs names or "
                "only integer positions."
            )
    arr = np.asarray(cells)
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
        _check_unique(names, argument)
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
        raise TypeError(f"`{argument}` has unsupported dtype {arr.dtype}; {_HOW}.")
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
        warn(f"`{argument}` lists {pos.size - uniq.size} cell(s) more than once; duplicates were removed.")
    return uniq.astype(np.int64)
