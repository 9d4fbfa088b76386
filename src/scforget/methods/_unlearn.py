"""The ``unlearn()`` entry point: validate everything, copy the model, run the method, record."""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from scforget import _compat
from scforget._clone import clone_model
from scforget._recipe import training_recipe
from scforget._utils import accepted_keywords, close_matches, package_versions, seeded
from scforget.data import as_positions

from ._record import RECORDS_ATTR, make_record
from ._registry import MethodSpec, UnlearnContext, default_params, get_method

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec

M = TypeVar("M", bound="BaseModelClass")

_EXPLICIT = {"max_epochs", "accelerator", "devices", "batch_size", "seed", "inplace", "retain", "plan_kwargs"}


def _trainer_keywords() -> set[str]:
    import lightning.pytorch as pl
    from scvi.train import Trainer

    names, _ = accepted_keywords(Trainer.__init__, pl.Trainer.__init__)
    return names - {"max_epochs", "accelerator", "devices"}


def check_model(model: Any, *, argument: str = "model") -> None:
    """Raise a clear error unless ``model`` is a trained, unminified scvi-tools VAE model.

    Parameters
    ----------
    model
        The object to check.
    argument
        Name of the user-facing argument, used in messages.
    """
    from scvi.model.base import BaseModelClass

    if not isinstance(model, BaseModelClass):
        raise TypeError(
            f"`{argument}` must be a trained scvi-tools model such as scvi.model.SCVI or scforget.model.SCVI; "
            f"got {type(model).__name__}."
        )
    module = getattr(model, "module", None)
    if not all(hasattr(module, a) for a in ("inference", "generative", "loss")):
        raise TypeError(
            f"`{argument}` ({type(model).__name__}) has no VAE module with inference/generative/loss; "
            "scforget supports scvi-tools VAE models (SCVI, CondSCVI, SCANVI, TOTALVI)."
        )
    if not _compat.check_if_trained(model):
        raise RuntimeError(f"`{argument}` is not trained yet; call `{argument}.train()` first.")
    if _compat.is_minified(model):
        raise ValueError(
            f"`{argument}` uses a minified AnnData, which holds no counts; unlearning needs the full counts. "
            "Load the model with the full AnnData."
        )
    registered = _compat.registered_var_names(model)
    if registered is not None and (
        len(registered) != model.adata.n_vars or not np.array_equal(np.asarray(registered), model.adata.var_names)
    ):
        raise ValueError(
            f"The AnnData of `{argument}` no longer has the genes it was set up with "
            f"({len(registered)} registered, {model.adata.n_vars} now). Use the AnnData the model was trained on."
        )


def _route_kwargs(spec: MethodSpec, plan_kwargs: dict | None, kwargs: dict) -> tuple[dict, dict]:
    params = dict(plan_kwargs or {})
    for key in params:
        if key not in spec.params:
            raise TypeError(
                f"Unknown keyword {key!r} in `plan_kwargs` for method {spec.name!r}."
                f"{close_matches(key, spec.params)} Accepted: {', '.join(sorted(spec.params))}."
            )
    trainer_names = _trainer_keywords()
    trainer_kwargs = {}
    for key, value in kwargs.items():
        if key in spec.params:
            if key in params:
                raise TypeError(f"{key!r} was given both as a keyword and in `plan_kwargs`; give it once.")
            params[key] = value
        elif key in trainer_names:
            trainer_kwargs[key] = value
        else:
            raise TypeError(
                f"Unknown keyword argument {key!r} for unlearn(method={spec.name!r})."
                f"{close_matches(key, set(spec.params) | trainer_names | _EXPLICIT)} It is neither a "
                f"parameter of {spec.name!r} ({', '.join(sorted(spec.params)) or 'none'}) nor a Trainer argument."
            )
    return params, trainer_kwargs


def _positions_or_none(indices) -> np.ndarray | None:
    if indices is None:
        return None
    return np.unique(np.asarray(indices, dtype=np.int64))


def unlearn(
    model: M,
    forget: CellSpec,
    method: str = "finetune",
    *,
    inplace: bool = False,
    retain: CellSpec | None = None,
    seed: int | None = None,
    max_epochs: int | None = None,
    batch_size: int = 128,
    plan_kwargs: dict | None = None,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    **kwargs: Any,
) -> M:
    """Remove cells from a trained scvi-tools model.

    Works on scforget's model classes and on stock :class:`scvi.model.SCVI` / :class:`scvi.model.CondSCVI`
    alike. Every input is validated before any work starts; the input model and its AnnData are
    left untouched unless ``inplace=True``.

    Parameters
    ----------
    model
        A trained scvi-tools model.
    forget
        The cells to forget: positions, a boolean mask, obs names or a boolean Series (see
        :func:`scforget.data.as_positions`). Cells that were never training cells are dropped with
        a warning.
    method
        A registered method (see :func:`scforget.methods.available`).
    inplace
        Modify ``model`` itself instead of returning a modified copy.
    retain
        The retain cells used by the method; defaults to all training cells not in ``forget``.
    seed
        Seed of the run; the caller's random state is restored afterwards. ``None`` uses the
        global state (:attr:`scvi.settings.seed`).
    max_epochs
        Epoch budget; defaults to the method's default (e.g. 10% of the training epochs for
        fine-tuning, all of them for ``retrain``).
    batch_size
        Minibatch size of retain cells.
    plan_kwargs
        Hyper-parameters of the method (for training methods: arguments of its TrainingPlan).
    accelerator
        Lightning accelerator (``"cpu"``, ``"gpu"``, ``"auto"``, ...).
    devices
        Lightning devices.
    **kwargs
        Hyper-parameters of the method (same as ``plan_kwargs``) or arguments of
        :class:`scvi.train.Trainer` (e.g. ``enable_progress_bar``, ``early_stopping``). Anything
        else raises a ``TypeError`` before training.

    Returns
    -------
    The unlearned model (a new object unless ``inplace=True``). Its ``unlearning_records_`` gains
    one entry (method, parameters, counts, a salted digest of the forgotten obs names, timings,
    versions), and the forgotten cells are no longer among its ``train_indices``.

    Examples
    --------
    >>> new = scforget.unlearn(model, split.forget, method="finetune", seed=0)
    >>> new.unlearning_records_[-1]["method"]
    'finetune'
    """
    check_model(model)
    spec = get_method(method)
    params, trainer_kwargs = _route_kwargs(spec, plan_kwargs, kwargs)
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
    if max_epochs is not None and (not isinstance(max_epochs, int | np.integer) or max_epochs < 0):
        raise ValueError(f"`max_epochs` must be a non-negative integer or None; got {max_epochs!r}.")
    if seed is not None and not isinstance(seed, int | np.integer):
        raise TypeError(f"`seed` must be an integer or None; got {seed!r}.")

    n_obs = model.adata.n_obs
    names = model.adata.obs_names
    forget_pos = as_positions(forget, names, argument="forget")
    train = _positions_or_none(model.train_indices)
    if train is None:
        train = np.arange(n_obs)
    never = np.setdiff1d(forget_pos, train)
    if never.size:
        warnings.warn(
            f"{never.size} of the {forget_pos.size} forget cells were never training cells of this model; "
            "they are excluded (there is nothing to forget for them).",
            UserWarning,
            stacklevel=2,
        )
        forget_pos = np.intersect1d(forget_pos, train)
        if forget_pos.size == 0:
            raise ValueError("None of the `forget` cells were training cells of the model; nothing to unlearn.")
    if retain is None:
        retain_pos = np.setdiff1d(train, forget_pos)
        if retain_pos.size == 0:
            raise ValueError("`forget` covers every training cell, so nothing would remain; train a new model instead.")
    else:
        retain_pos = as_positions(retain, names, argument="retain")
        both = np.intersect1d(retain_pos, forget_pos)
        if both.size:
            raise ValueError(f"{both.size} cell(s) are in both `retain` and `forget`; the two sets must be disjoint.")
    val = _positions_or_none(model.validation_indices)
    validation = np.setdiff1d(val, forget_pos) if val is not None else np.zeros(0, dtype=np.int64)

    recipe = training_recipe(model)
    if max_epochs is None:
        if recipe["max_epochs"] is None:
            raise ValueError("Cannot infer the model's training epochs (no history); pass `max_epochs` explicitly.")
        max_epochs = int(spec.default_epochs(int(recipe["max_epochs"])))
    if spec.name == "retrain" and batch_size == 128:
        batch_size = int(recipe.get("batch_size") or 128)

    original = {a: getattr(model, a, None) for a in ("train_indices", "validation_indices", "test_indices")}
    ctx = UnlearnContext(
        forget=forget_pos,
        retain=retain_pos,
        validation=validation,
        max_epochs=int(max_epochs),
        batch_size=int(batch_size),
        params=params,
        seed=None if seed is None else int(seed),
        accelerator=accelerator,
        devices=devices,
        trainer_kwargs=trainer_kwargs,
        recipe=recipe,
    )
    start = time.perf_counter()
    with seeded(ctx.seed):
        target = model if inplace else clone_model(model)
        spec.run(target, ctx)
    wall = time.perf_counter() - start

    target.train_indices = np.setdiff1d(train, forget_pos)
    target.validation_indices = original["validation_indices"]
    target.test_indices = original["test_indices"]
    target.module.eval()
    record = make_record(
        method=spec.name,
        kind=spec.kind,
        params={**default_params(spec), **params},
        forget_names=names[forget_pos],
        n_forget=int(forget_pos.size),
        n_retain=int(retain_pos.size),
        max_epochs=ctx.max_epochs,
        batch_size=ctx.batch_size,
        seed=ctx.seed,
        wall_time_s=wall,
        versions=package_versions(),
        info=ctx.info,
    )
    setattr(target, RECORDS_ATTR, [*list(getattr(target, RECORDS_ATTR, None) or []), record])
    return target
