"""The method registry: one dispatch from ``method="name"`` to the code that runs it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from scforget._utils import accepted_keywords, close_matches

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass
    from scvi.train import TrainingPlan

MethodKind = Literal["exact", "training", "parameter"]


@dataclass
class UnlearnContext:
    """Everything a method needs to run, resolved and validated by :func:`scforget.unlearn`.

    Attributes
    ----------
    forget
        Positions of the cells to forget (all were training cells).
    retain
        Positions of the training cells used as the retain set.
    validation
        Positions of never-trained validation cells (may be empty); disjoint from ``forget``.
    max_epochs
        Epoch budget (resolved from the method's default when the user gave none).
    batch_size
        Minibatch size.
    params
        The method's own hyper-parameters (validated against its signature).
    seed
        Seed of the run, or ``None`` for the caller's global seed.
    accelerator, devices
        Passed to Lightning.
    trainer_kwargs
        Extra keyword arguments for :class:`scvi.train.Trainer`.
    recipe
        How the input model was trained (epochs, batch size, plan arguments); see
        :func:`scforget.methods.training_recipe`.
    """

    forget: np.ndarray
    retain: np.ndarray
    validation: np.ndarray
    max_epochs: int
    batch_size: int
    params: dict[str, Any]
    seed: int | None
    accelerator: str
    devices: Any
    trainer_kwargs: dict[str, Any]
    recipe: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


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


_REGISTRY: dict[str, MethodSpec] = {}


def _plan_params(plan: type) -> tuple[frozenset[str], dict[str, Any]]:
    from scvi.train import TrainingPlan

    names, _ = accepted_keywords(plan.__init__, TrainingPlan.__init__)
    names.discard("module")
    defaults = {}
    for cls in reversed(plan.__mro__):
        if "__init__" in vars(cls):
            for p in inspect.signature(cls.__init__).parameters.values():
                if p.name in names and p.default is not p.empty:
                    defaults[p.name] = p.default
    return frozenset(names), defaults


def _function_params(fn: Callable) -> tuple[frozenset[str], dict[str, Any]]:
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[2:]  # skip (model, context)
    names = frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    defaults = {p.name: p.default for p in params if p.default is not p.empty}
    return names, defaults


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
        hyper-parameters.
    function
        Function of a parameter-space (or exact) method; its keyword-only parameters after
        ``(model, context)`` are the method's hyper-parameters.
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
        from scforget.methods._runner import run_training_plan

        params, defaults = _plan_params(plan)
        shown = _plan_own_params(plan, params)
        kind = kind or "training"
        run = (runner or run_training_plan)(plan)
        default_epochs = default_epochs or (lambda e: max(1, round(0.1 * e)))
    else:
        params, defaults = _function_params(function)
        shown = tuple(sorted(params))
        params = params | frozenset(extra_params)
        kind = kind or "parameter"

        def run(model, ctx, _fn=function):
            _fn(model, ctx, **ctx.params)

        default_epochs = default_epochs or (lambda e: 0)
    spec = MethodSpec(
        name=name,
        kind=kind,
        description=description,
        reference=reference,
        run=run,
        params=params,
        defaults=defaults,
        default_epochs=default_epochs,
        plan=plan,
        shown=shown,
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
    One row per method with columns ``name``, ``kind``, ``description``, ``reference`` and
    ``parameters`` (the method's hyper-parameters with their defaults).
    """
    rows = [
        {
            "name": s.name,
            "kind": s.kind,
            "description": s.description,
            "reference": s.reference,
            "parameters": ", ".join(f"{k}={s.defaults.get(k)!r}" for k in s.shown),
        }
        for s in _REGISTRY.values()
    ]
    return pd.DataFrame(rows, columns=["name", "kind", "description", "reference", "parameters"])


def _plan_own_params(plan: type, params: frozenset[str]) -> tuple[str, ...]:
    """Hyper-parameters a plan adds on top of scvi-tools' TrainingPlan, plus ``lr``."""
    from scvi.train import TrainingPlan

    base, _ = accepted_keywords(TrainingPlan.__init__)
    return tuple(sorted((params - base) | {"lr"}))


def default_params(spec: MethodSpec) -> dict[str, Any]:
    """The defaults of a method's shown hyper-parameters (recorded with every run)."""
    return {k: spec.defaults[k] for k in spec.shown if k in spec.defaults}
