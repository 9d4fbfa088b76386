"""The method registry: one dispatch from ``method="name"`` to the code that runs it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from scforget._core import accepted_keywords, close_matches

from ._base import UnlearningTrainingPlan
from ._context import UnlearnContext
from ._hyperparams import TRAINING_PLAN_BOUNDS, Bound, annotations_of, check_hyperparameters
from ._runner import run_training_plan

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass
    from scvi.train import TrainingPlan

MethodKind = Literal["exact", "training", "parameter"]
RunFunction = Callable[["BaseModelClass", UnlearnContext], None]


@dataclass(frozen=True)
class MethodSpec:
    """A registered unlearning method.

    Attributes
    ----------
    name
        Registry name used as ``method=``.
    kind
        ``"exact"`` (retraining), ``"training"`` (a TrainingPlan run through scvi-tools' TrainRunner) or
        ``"parameter"`` (a direct edit of the parameters).
    description
        One line for :func:`available`.
    reference
        Citation (bibtex key or short text).
    run
        ``run(model, context)`` updates ``model`` in place; the model is already a copy unless the
        user asked for ``inplace=True``. It may write extra information into ``context.info``.
    params
        Names of the method's hyper-parameters (accepted in ``plan_kwargs`` or as keyword arguments).
    defaults
        Default values of those hyper-parameters, for documentation and records.
    default_epochs
        ``f(training_epochs) -> epochs`` used when the user passes no ``max_epochs``.
    plan
        The TrainingPlan class for training-based methods.
    shown
        The hyper-parameters listed by :func:`available` and recorded with their defaults.
    annotations
        Type annotation of each hyper-parameter, with its range as :class:`Bound` metadata (checked
        before any work).
    bounds
        Ranges of hyper-parameters whose annotation has none (scvi-tools' TrainingPlan arguments).
    accepts_epochs
        Whether the method trains (``max_epochs > 0`` is meaningful).
    manual_optimization
        Whether the plan optimises manually (Lightning's ``gradient_clip_val`` cannot apply).
    guarantee
        What the method promises: ``"exact"`` (the result is what training without the forgotten cells
        gives), ``"(epsilon, delta)-DP"`` or ``"approximate"``.
    designs
        The kinds of model the method runs on: ``"scvi"`` (a trained scVI/CondSCVI), ``"sharded"``
        (:class:`scforget.model.ShardedSCVI`), ``"adapters"`` (:class:`scforget.model.AdapterSCVI`).
    check
        ``check(model, params, forget)`` raising before any work when the method cannot run on ``model``
        or cannot forget the cells at positions ``forget`` (training cells).
    """

    name: str
    kind: MethodKind
    description: str
    reference: str
    run: RunFunction
    params: frozenset[str]
    defaults: dict[str, Any]
    default_epochs: Callable[[int], int]
    plan: type[TrainingPlan] | None = None
    shown: tuple[str, ...] = ()
    annotations: Mapping[str, Any] = field(default_factory=dict)
    bounds: Mapping[str, Bound] = field(default_factory=dict)
    accepts_epochs: bool = True
    manual_optimization: bool = False
    guarantee: str = "approximate"
    designs: tuple[str, ...] = ("scvi",)
    check: Callable[[Any, Mapping[str, Any], np.ndarray], None] | None = None

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise before any work if a hyper-parameter has the wrong type or lies outside its range."""
        check_hyperparameters(params, self.annotations, self.bounds, f"method {self.name!r}")


_REGISTRY: dict[str, MethodSpec] = {}


def _plan_inits(plan: type) -> list:
    """The ``__init__`` of every class from ``plan`` up to scvi-tools' TrainingPlan (most derived first)."""
    from scvi.train import TrainingPlan

    out = []
    for cls in plan.__mro__:
        if "__init__" in vars(cls):
            out.append(vars(cls)["__init__"])
        if cls is TrainingPlan:
            break
    return out


def _plan_params(plan: type) -> tuple[frozenset[str], dict[str, Any]]:
    inits = _plan_inits(plan)
    names, _ = accepted_keywords(*inits)
    names.discard("module")
    defaults = {}
    for init in reversed(inits):
        for p in inspect.signature(init).parameters.values():
            if p.name in names and p.default is not p.empty:
                defaults[p.name] = p.default
    return frozenset(names), defaults


def _plan_annotations(plan: type) -> dict[str, Any]:
    return annotations_of(*_plan_inits(plan))


def _function_params(fn: Callable) -> tuple[frozenset[str], dict[str, Any]]:
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[2:]  # skip (model, context)
    names = frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    defaults = {p.name: p.default for p in params if p.default is not p.empty}
    return names, defaults


def _plan_own_params(plan: type) -> tuple[str, ...]:
    """Hyper-parameters a plan declares itself (up to, not including, its scforget/scvi-tools base), plus ``lr``."""
    from scvi.train import TrainingPlan

    names: set[str] = {"lr"}
    for cls in plan.__mro__:
        if cls is TrainingPlan or cls is UnlearningTrainingPlan:
            break
        if "__init__" in vars(cls):
            names |= accepted_keywords(vars(cls)["__init__"])[0]
    names.discard("module")
    return tuple(sorted(names))


def register(
    name: str,
    *,
    plan: type[TrainingPlan] | None = None,
    function: Callable | None = None,
    kind: MethodKind | None = None,
    description: str,
    reference: str = "",
    default_epochs: Callable[[int], int] | None = None,
    extra_params: Iterable[str] = (),
    extra_annotations: Iterable[Callable] = (),
    bounds: Mapping[str, Bound] | None = None,
    accepts_epochs: bool | None = None,
    guarantee: str | None = None,
    designs: Iterable[str] = ("scvi",),
    check: Callable[[Any, Mapping[str, Any], np.ndarray], None] | None = None,
    runner: Callable[[type], RunFunction] | None = None,
    overwrite: bool = False,
) -> MethodSpec:
    """Register an unlearning method so that ``unlearn(..., method=name)`` can run it.

    Give exactly one of ``plan`` (a :class:`scvi.train.TrainingPlan` subclass, usually of
    :class:`scforget.train.UnlearningTrainingPlan`, run on paired retain/forget batches) or
    ``function`` (``function(model, context, **params)`` that edits ``model`` in place).

    Parameters
    ----------
    name
        Name used as ``method=``.
    plan
        TrainingPlan class of a training-based method. Its ``__init__`` keywords are the method's
        hyper-parameters; their annotations give their types and the plan's ``bounds`` their ranges.
    function
        Function of a parameter-space (or exact) method; its keyword-only parameters after
        ``(model, context)`` are the method's hyper-parameters, typed by their annotations.
    kind
        Defaults to ``"training"`` for plans and ``"parameter"`` for functions.
    description
        One-line description shown by :func:`available`.
    reference
        Source paper.
    default_epochs
        Epoch budget as a function of the input model's training epochs. Defaults to 10% of them
        (at least one) for training methods and 0 for parameter edits.
    extra_params
        Further accepted hyper-parameter names, for a ``function`` that takes ``**kwargs``.
    extra_annotations
        Callables whose annotated keyword parameters type ``extra_params`` (the first one wins).
    bounds
        Allowed ranges of numeric hyper-parameters by name, for parameters whose annotation carries no
        :class:`~scforget.methods.Bound` (declare ranges in the signature: ``alpha: PositiveFloat``).
    accepts_epochs
        Whether ``max_epochs > 0`` is meaningful for a ``function``; defaults to ``True`` unless
        ``default_epochs`` gives 0 epochs.
    guarantee
        ``"exact"``, ``"(epsilon, delta)-DP"`` or ``"approximate"``; defaults to ``"exact"`` for
        ``kind="exact"`` and ``"approximate"`` otherwise.
    designs
        Kinds of model the method runs on (see :class:`MethodSpec`).
    check
        ``check(model, params, forget)``, run by :func:`scforget.unlearn` before any work, with ``forget``
        the positions of the training cells to forget.
    runner
        For ``plan``: a factory ``runner(plan) -> run`` replacing the default TrainRunner-based runner
        (e.g. to prepare data a plan needs before training).
    overwrite
        Replace an existing registration of ``name``.

    Returns
    -------
    The registry entry.
    """
    if (plan is None) == (function is None):
        raise TypeError("Pass exactly one of `plan` or `function` to register().")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"A method named {name!r} is already registered; pass overwrite=True to replace it.")
    if plan is not None:
        params, defaults = _plan_params(plan)
        shown = _plan_own_params(plan)
        annotations = _plan_annotations(plan)
        plan_bounds = {**TRAINING_PLAN_BOUNDS, **(bounds or {})}
        spec_kw = {
            "kind": kind or "training",
            "run": (runner or run_training_plan)(plan),
            "default_epochs": default_epochs or (lambda e: max(1, round(0.1 * e))),
            "bounds": plan_bounds,
            "accepts_epochs": True,
            "manual_optimization": bool(getattr(plan, "manual_optimization", False)),
        }
    else:
        params, defaults = _function_params(function)
        shown = tuple(sorted(params))
        params = params | frozenset(extra_params)
        annotations = annotations_of(function, *extra_annotations)

        def run(model, ctx, _fn=function):
            _fn(model, ctx, **ctx.params)

        epochs = default_epochs or (lambda e: 0)
        spec_kw = {
            "kind": kind or "parameter",
            "run": run,
            "default_epochs": epochs,
            "bounds": dict(bounds or {}),
            "accepts_epochs": (epochs(100) > 0) if accepts_epochs is None else bool(accepts_epochs),
        }
    spec_kw["guarantee"] = guarantee or ("exact" if spec_kw["kind"] == "exact" else "approximate")
    spec = MethodSpec(
        name=name,
        designs=tuple(designs),
        check=check,
        description=description,
        reference=reference,
        params=params,
        defaults=defaults,
        plan=plan,
        shown=shown,
        annotations={k: v for k, v in annotations.items() if k in params},
        **spec_kw,
    )
    _REGISTRY[name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """The registry entry of ``name``; raises a ``ValueError`` naming close matches otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"`method` must be a string; got {type(name).__name__}. See scforget.methods.available().")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown unlearning method {name!r}.{close_matches(name, _REGISTRY)} "
            f"Available: {', '.join(sorted(_REGISTRY))} (see scforget.methods.available())."
        ) from None


def available() -> pd.DataFrame:
    """The registered unlearning methods.

    Returns
    -------
    One row per method with columns ``name``, ``kind``, ``guarantee``, ``designs``, ``description``,
    ``reference`` and ``parameters`` (the method's hyper-parameters with their defaults).
    """
    rows = [
        {
            "name": s.name,
            "kind": s.kind,
            "guarantee": s.guarantee,
            "designs": ", ".join(s.designs),
            "description": s.description,
            "reference": s.reference,
            "parameters": ", ".join(f"{k}={s.defaults.get(k)!r}" for k in s.shown),
        }
        for s in _REGISTRY.values()
    ]
    columns = ["name", "kind", "guarantee", "designs", "description", "reference", "parameters"]
    return pd.DataFrame(rows, columns=columns)


def default_params(spec: MethodSpec) -> dict[str, Any]:
    """The defaults of a method's shown hyper-parameters (recorded with every run)."""
    return {k: spec.defaults[k] for k in spec.shown if k in spec.defaults}
