"""How a model was trained, so that retraining, budgets and cost estimates follow the same recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._warn import warn

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

RECIPE_ATTR = "training_recipe_"
#: ``train()`` arguments passed again as keywords when a model is retrained with its recipe.
TRAIN_KEYWORDS = (
    "lr",
    "early_stopping",
    "early_stopping_patience",
    "early_stopping_monitor",
    "early_stopping_min_delta",
    "gradient_clip_val",
    "check_val_every_n_epoch",
)
#: ``train()`` arguments that describe the recipe (everything else is data placement or logging).
RECIPE_KEYS = ("max_epochs", "batch_size", "plan_kwargs", "load_sparse_tensor", "rewind_fraction", *TRAIN_KEYWORDS)
#: scvi-tools' default minibatch size, used when a stock model records no recipe.
DEFAULT_BATCH_SIZE = 128


def _epochs_from_history(model: BaseModelClass) -> int | None:
    history = getattr(model, "history_", None) or {}
    for key in ("elbo_train", "train_loss_epoch", "reconstruction_loss_train"):
        if key in history and len(history[key]):
            return int(len(history[key]))
    return None


def training_recipe(model: BaseModelClass) -> dict[str, Any]:
    """The recipe ``model`` was trained with.

    scforget's model classes record the arguments of :meth:`train` in ``training_recipe_`` (saved with
    the model), with the wall time of the training run and the number of training cells. For stock
    scvi-tools models the recipe is inferred: the number of epochs from the training history and
    scvi-tools' defaults for the rest; ``"inferred": True`` marks that case.

    Parameters
    ----------
    model
        A trained scvi-tools model.

    Returns
    -------
    Dict with at least ``max_epochs``, ``epochs_run``, ``batch_size``, ``plan_kwargs``, ``inferred``,
    ``train_seconds`` and ``n_train_cells`` (``None`` where not recorded).
    """
    recorded = getattr(model, RECIPE_ATTR, None)
    epochs_run = _epochs_from_history(model)
    if recorded:
        recipe = dict(recorded)
        recipe.setdefault("plan_kwargs", {})
        recipe.setdefault("batch_size", DEFAULT_BATCH_SIZE)
        if recipe.get("max_epochs") is None:
            recipe["max_epochs"] = epochs_run
        recipe.setdefault("train_seconds", None)
        recipe.setdefault("n_train_cells", None)
        recipe["epochs_run"] = epochs_run
        recipe["inferred"] = False
        return recipe
    return {
        "max_epochs": epochs_run,
        "epochs_run": epochs_run,
        "batch_size": DEFAULT_BATCH_SIZE,
        "plan_kwargs": {},
        "train_seconds": None,
        "n_train_cells": None,
        "inferred": True,
    }


def record_training_call(
    model: BaseModelClass, arguments: dict[str, Any], *, seconds: float, n_train_cells: int
) -> None:
    """Store the recipe part of a ``train()`` call on ``model`` (plain values only), with its cost."""
    recipe = {k: arguments[k] for k in RECIPE_KEYS if k in arguments}
    plan_kwargs = dict(recipe.get("plan_kwargs") or {})
    for k, v in list(plan_kwargs.items()):
        if not (v is None or isinstance(v, bool | int | float | str)):
            warn(
                f"plan_kwargs[{k!r}] is not a plain value and is not recorded in the training recipe; "
                "retraining will use the default."
            )
            del plan_kwargs[k]
    recipe["plan_kwargs"] = plan_kwargs
    recipe["train_seconds"] = round(float(seconds), 4)
    recipe["n_train_cells"] = int(n_train_cells)
    setattr(model, RECIPE_ATTR, recipe)


def recipe_train_kwargs(recipe: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``train()`` (besides epochs, batch size and plan arguments) in ``recipe``."""
    return {k: recipe[k] for k in TRAIN_KEYWORDS if k in recipe}


def default_max_epochs(n_obs: int) -> int:
    """scvi-tools' heuristic number of epochs for ``n_obs`` cells (what ``train(max_epochs=None)`` uses)."""
    from scforget import _compat

    return _compat.default_max_epochs(n_obs)


def estimate_retrain_seconds(model: BaseModelClass, n_retain: int) -> float | None:
    """Wall time of retraining on ``n_retain`` cells with the model's recipe, from its recorded training.

    The recorded training time is scaled by ``n_retain / n_train_cells`` (epochs are passes over the
    data, so time is proportional to the number of cells); ``None`` when the model records no
    training time (stock scvi-tools models). Treat it as an order of magnitude: the retraining machine
    and load may differ.
    """
    recipe = training_recipe(model)
    seconds, n_train = recipe.get("train_seconds"), recipe.get("n_train_cells")
    if not seconds or not n_train:
        return None
    return float(seconds) * int(n_retain) / int(n_train)
