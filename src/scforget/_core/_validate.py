"""Argument checks shared by every room: flags, counts, numbers, choices, keywords, close matches.

Each check raises before any work starts, with a message that names the argument and what it takes.
Flags are real booleans and counts are real integers: ``True`` is not ``1``, ``3.0`` is not ``3``.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


def check_bool(value: Any, argument: str) -> bool:
    """``value`` if it is a bool (or numpy bool); a ``TypeError`` naming ``argument`` otherwise."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise TypeError(f"`{argument}` must be True or False; got {value!r} ({type(value).__name__}).")


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def check_int(
    value: Any,
    argument: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """``value`` as an ``int`` if it is an integer within ``[minimum, maximum]``.

    Booleans and floats are refused (``True`` is not a count and ``2.0`` is not an index).
    """
    if value is None and allow_none:
        return None
    bounds = _bounds_text(minimum, maximum, integer=True)
    if not _is_integer(value):
        raise TypeError(
            f"`{argument}` must be an integer{bounds}{' or None' if allow_none else ''}; "
            f"got {value!r} ({type(value).__name__})."
        )
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"`{argument}` must be an integer{bounds}; got {value!r}.")
    return int(value)


def check_number(
    value: Any,
    argument: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    allow_none: bool = False,
    allow_inf: bool = False,
) -> float | None:
    """``value`` as a ``float`` if it is a real number within the given bounds (booleans refused)."""
    if value is None and allow_none:
        return None
    none = " or None" if allow_none else ""
    if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
        raise TypeError(f"`{argument}` must be a number{none}; got {value!r} ({type(value).__name__}).")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"`{argument}` must be a finite number{none}; got {value!r}.")
    low_bad = minimum is not None and (v <= minimum if exclusive_minimum else v < minimum)
    high_bad = maximum is not None and (v >= maximum if exclusive_maximum else v > maximum)
    if low_bad or high_bad:
        lo = "" if minimum is None else f"{'>' if exclusive_minimum else '>='} {minimum:g}"
        hi = "" if maximum is None else f"{'<' if exclusive_maximum else '<='} {maximum:g}"
        rng = " and ".join(x for x in (lo, hi) if x)
        raise ValueError(f"`{argument}` must be a number {rng}{none}; got {value!r}.")
    return v


def check_choice(value: Any, options: Iterable[Any], argument: str) -> Any:
    """``value`` if it is one of ``options``; a ``ValueError`` listing them (with close matches) otherwise."""
    options = tuple(options)
    if isinstance(value, str | int | float | bool | type(None)) and any(
        value == o and type(value) is type(o) for o in options
    ):
        return value
    hint = close_matches(value, [str(o) for o in options]) if isinstance(value, str) else ""
    raise ValueError(f"`{argument}` must be one of {', '.join(map(repr, options))}; got {value!r}.{hint}")


def _bounds_text(minimum: float | None, maximum: float | None, *, integer: bool) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def close_matches(name: Any, options: Iterable[str], n: int = 3) -> str:
    """A sentence suggesting the options ``name`` probably meant (empty if none).

    Matching ignores case and also accepts substrings, so ``"SCRUB"`` suggests ``"scrub"`` and
    ``"fisher"`` suggests ``"fisher_forgetting"`` and ``"relative_fisher"``; misspellings are caught
    by :func:`difflib.get_close_matches` on the lower-cased names.
    """
    options = [str(o) for o in options]
    if not isinstance(name, str) or not name or not options:
        return ""
    key = name.lower()
    lowered = {o.lower(): o for o in options}
    found: list[str] = []
    if key in lowered:
        found.append(lowered[key])
    if len(key) >= 3:
        found += [o for o in options if key in o.lower() and o not in found]
    found += [
        lowered[m] for m in difflib.get_close_matches(key, list(lowered), n=n, cutoff=0.6) if lowered[m] not in found
    ]
    if not found:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in found[:n]) + "?"


def accepted_keywords(*callables: Callable) -> tuple[set[str], bool]:
    """Union of the keyword parameters of ``callables`` and whether any accepts ``**kwargs``."""
    names: set[str] = set()
    var_kw = False
    for fn in callables:
        for p in inspect.signature(fn).parameters.values():
            if p.kind == p.VAR_KEYWORD:
                var_kw = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names.add(p.name)
    names.discard("self")
    return names, var_kw
