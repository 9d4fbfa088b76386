"""Exact unlearning: retrain from scratch on retain cells with the original recipe."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import numpy as np

from scforget._core import drop_last_for_batchnorm, fresh_model, recipe_train_kwargs, warn

from ._checkpoint import CHECKPOINT_ATTR, rewind_checkpoint
from ._context import UnlearnContext
from ._hyperparams import TRAINING_PLAN_BOUNDS
from ._private import PRIVACY_ATTR, train_private
from ._registry import register

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass


def retrain(model: BaseModelClass, ctx: UnlearnContext, **plan_kwargs) -> None:
    """Replace ``model``'s weights by those of a fresh model trained on the retain cells only.

    The fresh model has the same class, architecture and AnnData registration, and is trained with
    the input model's recipe (for a model trained with DP-SGD, DP-SGD with the same budget; epochs,
    batch size, plan arguments; see
    :func:`~scforget.methods.training_recipe`) on ``context.retain``, validating on
    ``context.validation``. The forget cells are never shown to it, so the result is exact
    unlearning by construction; use several seeds to get the retrain reference distribution.

    Parameters
    ----------
    model
        The model whose weights are replaced.
    ctx
        The resolved unlearning context.
    **plan_kwargs
        Overrides of the recipe's ``plan_kwargs`` (for example ``lr``).
    """
    recipe = ctx.recipe
    if recipe.get("inferred"):
        warn(
            "The model does not record how it was trained (a stock scvi-tools model); retraining with "
            f"{ctx.max_epochs} epochs (from its history), batch_size={ctx.batch_size} and default plan "
            "arguments. Train with scforget.model classes to record the recipe."
        )
    fresh = fresh_model(model)
    private = getattr(model, PRIVACY_ATTR, None)
    if private:
        # the model was trained with DP-SGD: retrain it the same way, with the same budget
        ctx.info["privacy"] = train_private(
            fresh,
            ctx.retain,
            ctx.validation,
            target_epsilon=private["target_epsilon"],
            target_delta=private["delta"],
            max_grad_norm=private["max_grad_norm"],
            max_epochs=ctx.max_epochs,
            batch_size=ctx.batch_size,
            accountant=private["accountant"],
            plan_kwargs={**recipe.get("plan_kwargs", {}), **plan_kwargs},
            seed=ctx.seed,
            accelerator=ctx.accelerator,
            devices=ctx.devices,
            trainer_kwargs=ctx.trainer_kwargs,
        )
        setattr(model, PRIVACY_ATTR, ctx.info["privacy"])
    else:
        _train_with_recipe(fresh, ctx, recipe, plan_kwargs)
    model.module.load_state_dict(fresh.module.state_dict())
    model.module.eval()
    model.history_ = fresh.history_
    # the fresh run never saw the forgotten cells, so its rewind checkpoint (if it recorded one) is clean
    setattr(model, CHECKPOINT_ATTR, rewind_checkpoint(fresh))
    ctx.info["epochs_run"] = len(next(iter(fresh.history_.values()))) if fresh.history_ else ctx.max_epochs
    ctx.info["recipe_inferred"] = bool(recipe.get("inferred"))


def _train_with_recipe(fresh: BaseModelClass, ctx: UnlearnContext, recipe: dict, plan_kwargs: dict) -> None:
    n_obs = fresh.adata.n_obs
    rest = np.setdiff1d(np.arange(n_obs), np.union1d(ctx.retain, ctx.validation))
    train_kwargs = recipe_train_kwargs(recipe)
    train_kwargs.update(ctx.trainer_kwargs)
    train_kwargs.setdefault("enable_checkpointing", False)
    splitter = {"external_indexing": [ctx.retain.copy(), ctx.validation.copy(), rest]}
    if drop_last_for_batchnorm(ctx.retain.size, ctx.batch_size):
        splitter["drop_last"] = True
    if "rewind_fraction" in recipe and "rewind_fraction" in inspect.signature(fresh.train).parameters:
        train_kwargs["rewind_fraction"] = recipe["rewind_fraction"]  # as the model was trained (None: none)
    fresh.train(
        max_epochs=ctx.max_epochs,
        batch_size=ctx.batch_size,
        accelerator=ctx.accelerator,
        devices=ctx.devices,
        plan_kwargs={**recipe.get("plan_kwargs", {}), **plan_kwargs},
        datasplitter_kwargs=splitter,
        **train_kwargs,
    )


def _training_plan_params() -> list[str]:
    from scvi.train import TrainingPlan

    from scforget._core import accepted_keywords

    names, _ = accepted_keywords(TrainingPlan.__init__)
    return sorted(names - {"module"})


def _training_plan_inits():
    from scvi.train import TrainingPlan

    from ._base import UnlearningTrainingPlan

    # scforget's annotations first: they say where scvi-tools' also accept None (KL warm-up)
    return (UnlearningTrainingPlan.__init__, TrainingPlan.__init__)


register(
    "retrain",
    function=retrain,
    kind="exact",
    description="Train a fresh model on retain cells with the original recipe (exact; the reference).",
    reference="Cao & Yang 2015; Bourtoule et al. 2021",
    default_epochs=lambda e: e,
    extra_params=_training_plan_params(),
    extra_annotations=_training_plan_inits(),
    bounds=TRAINING_PLAN_BOUNDS,
    accepts_epochs=True,
)
