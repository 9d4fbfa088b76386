"""Types and ranges of method hyper-parameters, checked before any work starts.

The type and the allowed range of each hyper-parameter come from its annotation in the method's
signature (a plan's ``__init__`` up its class hierarchy, or a parameter-space function): a range is
a :class:`Bound` in :data:`typing.Annotated` metadata, e.g. ``lr: PositiveFloat = 1e-3``. Only
scvi-tools' own TrainingPlan arguments, whose signature is not ours, get their ranges from
:data:`TRAINING_PLAN_BOUNDS`. ``lr="fast"``, ``True`` for a step count or a negative weight fail
here, with the parameter's name, instead of deep inside a fit.
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np

from scforget._core import check_bool, check_int, check_number


@dataclass(frozen=True)
class Bound:
    """Allowed range of a numeric hyper-parameter (``None`` is always accepted when the type allows it)."""

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False

    def __repr__(self) -> str:
        lo = "" if self.minimum is None else f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}"
        hi = "" if self.maximum is None else f"{'<' if self.exclusive_maximum else '<='} {self.maximum:g}"
        return " and ".join(x for x in (lo, hi) if x) or "any"

    def check(self, value: Any, name: str) -> None:
        """Raise a ``ValueError`` naming ``name`` unless ``value`` lies in the range."""
        if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
            return
        check_number(
            value,
            name,
            minimum=self.minimum,
            maximum=self.maximum,
            exclusive_minimum=self.exclusive_minimum,
            exclusive_maximum=self.exclusive_maximum,
            allow_inf=self.maximum is None and not self.exclusive_maximum,
        )


POSITIVE = Bound(0, exclusive_minimum=True)
NON_NEGATIVE = Bound(0)
AT_LEAST_ONE = Bound(1)
OPEN_UNIT = Bound(0, 1, exclusive_minimum=True, exclusive_maximum=True)

#: Annotated types of hyper-parameters: the type and the range in one place.
PositiveFloat = Annotated[float, POSITIVE]
NonNegativeFloat = Annotated[float, NON_NEGATIVE]
PositiveInt = Annotated[int, AT_LEAST_ONE]
NonNegativeInt = Annotated[int, NON_NEGATIVE]
OpenFraction = Annotated[float, OPEN_UNIT]
Fraction = Annotated[float, Bound(0, 1, exclusive_minimum=True)]
AboveOne = Annotated[float, Bound(1, exclusive_minimum=True)]
AtLeastOne = Annotated[float, AT_LEAST_ONE]

#: Ranges of scvi-tools' TrainingPlan arguments (its signature carries types only).
TRAINING_PLAN_BOUNDS = {
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "eps": POSITIVE,
    "n_epochs_kl_warmup": AT_LEAST_ONE,
    "n_steps_kl_warmup": AT_LEAST_ONE,
    "max_kl_weight": NON_NEGATIVE,
    "min_kl_weight": NON_NEGATIVE,
    "lr_factor": OPEN_UNIT,
    "lr_patience": NON_NEGATIVE,
    "lr_threshold": NON_NEGATIVE,
    "lr_min": NON_NEGATIVE,
}


def _evaluate(annotation: Any, namespace: dict[str, Any]) -> Any:
    """The annotation as an object (``None`` when it cannot be evaluated, e.g. a type-checking-only name)."""
    if not isinstance(annotation, str):
        return annotation
    try:
        # as typing.get_type_hints does, one parameter at a time so that one unresolvable name skips only it
        return eval(annotation, {**vars(typing), **vars(cabc), **namespace})
    except Exception:  # noqa: BLE001 - unresolvable annotations are simply not type-checked
        return None


def annotations_of(*callables: Callable) -> dict[str, Any]:
    """Evaluated annotations of the keyword parameters of ``callables`` (first callable wins)."""
    out: dict[str, Any] = {}
    for fn in callables:
        fn = inspect.unwrap(fn)
        namespace = getattr(fn, "__globals__", {})
        for p in inspect.signature(fn).parameters.values():
            if p.name in out or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.annotation is p.empty:
                continue
            ann = _evaluate(p.annotation, namespace)
            if ann is not None:
                # a parameter that defaults to None accepts None, whatever its annotation says
                out[p.name] = ann | None if p.default is None and isinstance(ann, type) else ann
    return out


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits ``annotation`` (the shapes used by scforget and scvi-tools plans)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _matches(value, args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if annotation is bool:
        try:
            check_bool(value, "_")
        except TypeError:
            return False
        return True
    if annotation is int:
        try:
            check_int(value, "_")
        except TypeError:
            return False
        return True
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    if annotation is str:
        return isinstance(value, str)
    if origin in (cabc.Sequence, list, tuple, cabc.Iterable):
        if isinstance(value, str) or not isinstance(value, cabc.Sequence | cabc.Set):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        return all(_matches(v, inner) for v in value)
    if origin in (dict, cabc.Mapping):
        return isinstance(value, cabc.Mapping)
    if origin is cabc.Callable or annotation is cabc.Callable:
        return callable(value)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # anything more exotic is left to the method


_NAMES = {bool: "True or False", int: "an integer", float: "a number", str: "a string", type(None): "None"}


def _describe(annotation: Any) -> str:
    """The annotation in words: ``int | None`` is "an integer or None"."""
    if annotation in _NAMES:
        return _NAMES[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _describe(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (cabc.Sequence, list, tuple, cabc.Iterable):
        inner = _describe(args[0]) if args else "values"
        return f"a list or tuple of {inner.removeprefix('a ').removeprefix('an ')}s" if args else "a list or tuple"
    if origin is cabc.Callable or annotation is cabc.Callable:
        return "a callable"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "").replace(
        "collections.abc.", ""
    )


def _choices(annotation: Any) -> tuple | None:
    """The allowed values of a ``Literal`` annotation (possibly ``| None``), else ``None``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return args
    if origin in (typing.Union, types.UnionType):
        lits = [a for a in args if typing.get_origin(a) is typing.Literal]
        if lits and all(typing.get_origin(a) is typing.Literal or a is type(None) for a in args):
            return tuple(v for a in lits for v in typing.get_args(a)) + ((None,) if type(None) in args else ())
    return None


def bounds_in(annotation: Any) -> list[Bound]:
    """The :class:`Bound` metadata of an annotation (also inside ``X | None``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return [m for m in annotation.__metadata__ if isinstance(m, Bound)]
    if origin in (typing.Union, types.UnionType):
        return [b for a in args for b in bounds_in(a)]
    return []


def _element_annotation(annotation: Any) -> Any:
    """The element annotation of ``Sequence[X]`` (also inside ``| None``), else ``None``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (cabc.Sequence, list, tuple) and args and args[-1] is not Ellipsis:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        return next((e for a in args if (e := _element_annotation(a)) is not None), None)
    return None


def check_hyperparameters(
    params: Mapping[str, Any], annotations: Mapping[str, Any], bounds: Mapping[str, Bound], where: str
) -> None:
    """Raise a ``TypeError`` or ``ValueError`` naming the first hyper-parameter of the wrong type or range.

    Ranges come from the annotations' :class:`Bound` metadata, else from ``bounds`` (by name).
    """
    from scforget._core import close_matches

    for name, value in params.items():
        ann = annotations.get(name)
        if ann is not None and not _matches(value, ann):
            choices = _choices(ann)
            if choices is not None and isinstance(value, str):
                hint = close_matches(value, [c for c in choices if isinstance(c, str)])
                raise ValueError(f"`{name}` of {where} must be {_describe(ann)}; got {value!r}.{hint}")
            raise TypeError(f"`{name}` of {where} must be {_describe(ann)}; got {value!r} ({type(value).__name__}).")
        try:
            if ann is not None and _element_annotation(ann) is not None and isinstance(value, cabc.Sequence):
                for v in value:  # e.g. ``Sequence[PositiveInt]``: every element in range
                    for bound in bounds_in(_element_annotation(ann)):
                        bound.check(v, name)
            declared = bounds_in(ann) if ann is not None else []
            for bound in declared or ([bounds[name]] if name in bounds else []):
                bound.check(value, name)
        except ValueError as err:
            raise ValueError(f"{err} (a hyper-parameter of {where})") from None
