"""Short retrain: fresh weights trained on the retain cells with a compressed, annealed schedule."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from scforget._core import fresh_model, warn

from ._checkpoint import rewind_checkpoint
from ._context import UnlearnContext
from ._hyperparams import NonNegativeFloat, PositiveFloat
from ._private import PRIVACY_ATTR
from ._registry import register
from ._rewind import RewindPlan, check_schedule
from ._runner import run_training_plan

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: Default budget of ``method="short_retrain"``, as a share of the training epochs.
SHORT_RETRAIN_EPOCH_SHARE = 0.20


class ShortRetrainPlan(RewindPlan):
    """Training on retain cells only, from freshly initialised weights, at a high annealed rate.

    The method's runner replaces the model's weights by those of a newly built model of the same
    class and architecture (the model's own constructor, under the unlearning seed); this plan then
    trains them on the retain cells with Adam at ``lr``, decayed to 0 on a cosine over the budget, at
    the KL weight the original training ended with. No weight ever saw a forget cell, so the deletion
    is exact, as for ``method="retrain"``; what differs is the schedule: a fifth of the epochs at a
    rate ten times scvi-tools' default, annealed, instead of the original recipe.

    Parameters
    ----------
    module
        The model's module.
    lr
        Peak learning rate of Adam.
    max_kl_weight
        KL weight of the training; ``None`` uses the one the original training ended with.
    anneal_lr
        Decay the learning rate to 0 on a cosine over the steps (see :class:`RewindPlan`).
    **kwargs
        See :class:`~scforget.train.UnlearningTrainingPlan`.

    References
    ----------
    Retraining without the forgotten data is the exact baseline of :cite:p:`Bourtoule2021`; the
    cosine schedule is that of :cite:p:`Loshchilov2017`.
    """

    def __init__(
        self,
        module,
        *,
        lr: PositiveFloat = 1e-2,
        max_kl_weight: NonNegativeFloat | None = None,
        anneal_lr: bool = True,
        **kwargs,
    ):
        super().__init__(module, lr=lr, max_kl_weight=max_kl_weight, anneal_lr=anneal_lr, **kwargs)


def final_kl_weight(model: BaseModelClass, recipe: Mapping[str, Any]) -> float:
    """The KL weight of the last epoch of ``model``'s training.

    The rewind checkpoint records it; otherwise it follows from the recipe with scvi-tools' linear
    epoch warm-up (weight ``min_kl + (max_kl - min_kl) * epoch / n_epochs_kl_warmup`` in epoch
    ``epoch``, counted from 0, and ``max_kl`` from the end of the warm-up on).
    """
    ckpt = rewind_checkpoint(model)
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("kl_weight"), float | int):
        return float(ckpt["kl_weight"])
    from scvi.train import TrainingPlan

    defaults = {
        k: p.default
        for k, p in inspect.signature(TrainingPlan.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    params = {**defaults, **dict(recipe.get("plan_kwargs") or {})}
    max_kl, min_kl = float(params["max_kl_weight"]), float(params["min_kl_weight"])
    if params.get("n_steps_kl_warmup") is not None:
        warn("The model warmed its KL weight up by steps; training at its final value, max_kl_weight.")
        return max_kl
    warmup = params.get("n_epochs_kl_warmup")
    last = max(0, int(recipe.get("epochs_run") or recipe.get("max_epochs") or 1) - 1)
    if warmup is None or last >= warmup:
        return max_kl
    return min_kl + (max_kl - min_kl) * last / warmup


def _check(model: BaseModelClass, params: Mapping[str, Any], forget: np.ndarray) -> None:
    if getattr(model, PRIVACY_ATTR, None):
        raise ValueError(
            "This model was trained with DP-SGD; a short retrain would return weights without that guarantee. "
            "Use method='retrain' (it retrains with DP-SGD and the same budget)."
        )
    check_schedule(ShortRetrainPlan, params)


def _runner(plan_cls: type[ShortRetrainPlan]):
    """Load fresh weights, then train them with the final KL weight unless the user set one."""

    def run(model: BaseModelClass, ctx: UnlearnContext) -> None:
        kl = ctx.params.get("max_kl_weight")
        kl = final_kl_weight(model, ctx.recipe) if kl is None else float(kl)
        ctx.info.update({"initialisation": "fresh weights from the model's constructor", "kl_weight": kl})
        model.module.load_state_dict(fresh_model(model).module.state_dict())
        run_training_plan(plan_cls, setup=lambda plan: setattr(plan, "max_kl_weight", kl))(model, ctx)

    return run


register(
    "short_retrain",
    plan=ShortRetrainPlan,
    runner=_runner,
    check=_check,
    guarantee="exact",
    default_epochs=lambda e: max(1, round(SHORT_RETRAIN_EPOCH_SHARE * e)),
    description=f"Exact: fresh weights trained on retain cells for {SHORT_RETRAIN_EPOCH_SHARE:.0%} of the "
    "training epochs, Adam at 1e-2 annealed to 0 on a cosine, at the final KL weight.",
    reference="Bourtoule2021; Loshchilov2017",
)
