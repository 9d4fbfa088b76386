"""How a model was trained, so that retraining and budgets follow the same recipe."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

RECIPE_ATTR = "training_recipe_"
#: ``train()`` arguments that describe the recipe (everything else is data placement or logging).
RECIPE_KEYS = (
    "max_epochs",
    "batch_size",
    "lr",
    "plan_kwargs",
    "early_stopping",
    "early_stopping_patience",
    "early_stopping_monitor",
    "early_stopping_min_delta",
    "gradient_clip_val",
    "check_val_every_n_epoch",
    "load_sparse_tensor",
)


def _epochs_from_history(model: BaseModelClass) -> int | None:
    history = getattr(model, "history_", None) or {}
    for key in ("elbo_train", "train_loss_epoch", "reconstruction_loss_train"):
        if key in history and len(history[key]):
            return int(len(history[key]))
    return None


def training_recipe(model: BaseModelClass) -> dict[str, Any]:
    """The recipe ``model`` was trained with.

    scforget's model classes record the arguments of :meth:`train` in ``training_recipe_``
    (saved with the model). For stock scvi-tools models the recipe is inferred: the number of
    epochs from the training history and scvi-tools' defaults for the rest; ``"inferred": True``
    marks that case.

    Parameters
    ----------
    model
        A trained scvi-tools model.

    Returns
    -------
    Dict with at least ``max_epochs``, ``batch_size``, ``plan_kwargs`` and ``inferred``.
    """
    recorded = getattr(model, RECIPE_ATTR, None)
    epochs_run = _epochs_from_history(model)
    if recorded:
        recipe = dict(recorded)
        recipe.setdefault("plan_kwargs", {})
        recipe.setdefault("batch_size", 128)
        if recipe.get("max_epochs") is None:
            recipe["max_epochs"] = epochs_run
        recipe["epochs_run"] = epochs_run
        recipe["inferred"] = False
        return recipe
    return {
        "max_epochs": epochs_run,
        "epochs_run": epochs_run,
        "batch_size": 128,
        "plan_kwargs": {},
        "inferred": True,
    }


def record_training_call(model: BaseModelClass, arguments: dict[str, Any]) -> None:
    """Store the recipe part of a ``train()`` call on ``model`` (plain values only)."""
    recipe = {k: arguments[k] for k in RECIPE_KEYS if k in arguments}
    plan_kwargs = dict(recipe.get("plan_kwargs") or {})
    for k, v in list(plan_kwargs.items()):
        if not (v is None or isinstance(v, bool | int | float | str)):
            warnings.warn(
                f"plan_kwargs[{k!r}] is not a plain value and is not recorded in the training recipe; "
                "retraining will use the default.",
                UserWarning,
                stacklevel=3,
            )
            del plan_kwargs[k]
    recipe["plan_kwargs"] = plan_kwargs
    setattr(model, RECIPE_ATTR, recipe)


#: Recipe entries passed to ``model.train()`` as keywords when a model is retrained.
TRAIN_KEYWORDS = (
    "lr",
    "early_stopping",
    "early_stopping_patience",
    "early_stopping_monitor",
    "early_stopping_min_delta",
    "gradient_clip_val",
    "check_val_every_n_epoch",
)


def recipe_train_kwargs(recipe: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``train()`` (besides epochs, batch size and plan arguments) in ``recipe``."""
    return {k: recipe[k] for k in TRAIN_KEYWORDS if k in recipe}
