"""Run a training-based unlearning method through scvi-tools' TrainRunner."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scvi.train import TrainRunner

from scforget import _compat

from ._context import UnlearnContext
from ._datamodule import RetainForgetDataModule

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: Trainer defaults for unlearning runs (the user's trainer kwargs win).
TRAINER_DEFAULTS = {"enable_checkpointing": False, "log_every_n_steps": 1, "enable_model_summary": False}


def run_training_plan(plan_cls: type, setup: Callable[[Any], None] | None = None):
    """A registry ``run`` function that trains ``plan_cls`` on retain/forget batches.

    ``setup(plan)``, if given, runs on the new plan before training (for what a method's runner
    measured on the input model first).
    """

    def run(model: BaseModelClass, ctx: UnlearnContext) -> None:
        dm = RetainForgetDataModule(
            model.adata_manager,
            ctx.retain,
            ctx.forget,
            ctx.validation,
            batch_size=ctx.batch_size,
            paired=getattr(plan_cls, "uses_forget", True),
            distributed_sampler=_compat.uses_distributed_sampler(ctx.trainer_kwargs.get("strategy")),
        )
        plan = plan_cls(model.module, **ctx.params)
        if setup is not None:
            setup(plan)
        history = copy.deepcopy(model.history_)
        # Lightning >= 2.2 leaves modules in whatever mode they are in; the model sits in eval mode
        # after training or loading, so switch to train mode on purpose (dropout and BatchNorm on).
        model.module.train()
        trainer_kwargs = {**TRAINER_DEFAULTS, **ctx.trainer_kwargs}
        if getattr(plan, "reduce_lr_on_plateau", False) and "validation" in str(plan.lr_scheduler_metric):
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        runner = TrainRunner(
            model,
            training_plan=plan,
            data_splitter=dm,
            max_epochs=ctx.max_epochs,
            accelerator=ctx.accelerator,
            devices=ctx.devices,
            **trainer_kwargs,
        )
        runner()
        # keep the model's own training history; unlearning losses go into the record
        model.history_ = history
        ctx.info["epochs_run"] = int(model.trainer.current_epoch)
        ctx.info["history"] = {k: [float(x) for x in v] for k, v in plan.epoch_history.items()}
        ctx.info["batchnorm"] = (
            "forget forwards use stored running statistics (eval mode)"
            if getattr(plan, "freeze_batchnorm_on_forget", False)
            else "BatchNorm statistics updated on every forward"
        )
        info = getattr(plan, "run_info", None)
        if callable(info):
            ctx.info.update(info())
        model.trainer = None

    return run
