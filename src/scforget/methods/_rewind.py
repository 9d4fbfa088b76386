"""Rewinding: restore a checkpoint recorded early in training, then fine-tune on the retain cells."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from scforget._core import warn

from ._checkpoint import DEFAULT_REWIND_FRACTION, rewind_checkpoint
from ._context import UnlearnContext
from ._finetune import FinetunePlan
from ._hyperparams import NonNegativeFloat, PositiveFloat
from ._private import PRIVACY_ATTR
from ._registry import register
from ._runner import run_training_plan

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: Default fine-tuning budget of ``method="rewind"``, as a share of the training epochs.
REWIND_EPOCH_SHARE = 0.20


SCHEDULE_CONFLICT = (
    "`anneal_lr=True` and `reduce_lr_on_plateau=True` both schedule the learning rate; pass "
    "anneal_lr=False to use the plateau scheduler, or drop reduce_lr_on_plateau."
)


class RewindPlan(FinetunePlan):
    """Fine-tuning on retain cells from a checkpoint recorded early in training.

    The method's runner first loads the model's rewind checkpoint (its weights after a few percent
    of training, see :class:`~scforget.train.RewindCheckpoint`), then this plan trains on the retain
    cells only. Little of what the model memorised about single cells is in so early a state
    (memorisation grows with training epochs), and fine-tuning on the retain cells restores the
    utility; the forget cells are never shown again. The KL weight is held at the value the
    original training ended with, so the fine-tune optimises the objective the model was trained
    for (scvi-tools' KL warm-up would otherwise leave it where it was at the checkpoint).

    Parameters
    ----------
    module
        The model's module.
    lr
        Learning rate of Adam (higher than scvi-tools' training default: a short budget has to
        recover the rest of training).
    max_kl_weight
        KL weight of the fine-tune; ``None`` uses the one recorded with the checkpoint (1.0 if none).
    anneal_lr
        Decay the learning rate from ``lr`` to 0 over the fine-tune's steps on a cosine
        (:class:`torch.optim.lr_scheduler.CosineAnnealingLR`), so the fine-tune ends at a settled
        point rather than wherever a step at the full rate left it. Cannot be combined with
        ``reduce_lr_on_plateau``.
    **kwargs
        See :class:`~scforget.train.UnlearningTrainingPlan`.

    References
    ----------
    Rewinding to an earlier checkpoint and fine-tuning on the retained data is the procedure of
    :cite:p:`Mu2024` (Rewind-to-Delete, which adds noise for a certificate; scforget does not, so
    the guarantee is approximate); SISA :cite:p:`Bourtoule2021` rewinds to a checkpoint recorded
    before the forgotten data were seen.
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
        if anneal_lr and kwargs.get("reduce_lr_on_plateau"):
            raise ValueError(SCHEDULE_CONFLICT)
        super().__init__(module, lr=lr, max_kl_weight=1.0 if max_kl_weight is None else max_kl_weight, **kwargs)
        self.anneal_lr = bool(anneal_lr)

    def configure_optimizers(self):
        """scvi-tools' optimiser; with ``anneal_lr`` a cosine decay to 0 over the steps, stepped per batch."""
        config = super().configure_optimizers()
        if not self.anneal_lr:
            return config
        optimizer = config["optimizer"] if isinstance(config, dict) else config
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def run_info(self) -> dict[str, Any]:
        """The learning-rate schedule, for the unlearning record."""
        return {"lr_schedule": "cosine to 0 over the steps" if self.anneal_lr else "constant"}


def check_schedule(plan_cls: type[RewindPlan], params: Mapping[str, Any]) -> None:
    """Refuse ``anneal_lr`` (given or the plan's default) together with ``reduce_lr_on_plateau``."""
    anneal = params.get("anneal_lr", inspect.signature(plan_cls).parameters["anneal_lr"].default)
    if anneal and params.get("reduce_lr_on_plateau"):
        raise ValueError(SCHEDULE_CONFLICT)


#: A checkpoint later than this share of the epochs actually run is not an early state (early stopping).
LATE_CHECKPOINT = 0.25


def _recorded_kl(ckpt: Mapping[str, Any]) -> float:
    return 1.0 if ckpt.get("kl_weight") is None else float(ckpt["kl_weight"])


def _check(model: BaseModelClass, params: Mapping[str, Any], forget: np.ndarray) -> None:
    ckpt = rewind_checkpoint(model)
    if ckpt is None:
        raise ValueError(
            "method='rewind' needs the checkpoint recorded early in training, and this model has none. "
            "scforget.model.SCVI and CondSCVI record it during their first train() call (unless "
            "rewind_fraction=None); for a stock scvi-tools model pass "
            "callbacks=[scforget.train.RewindCheckpoint(model)] to train(). Models returned by an unlearning "
            "carry none (the checkpoint saw the forgotten cells): use another method or 'retrain'."
        )
    if getattr(model, PRIVACY_ATTR, None):
        raise ValueError(
            "This model was trained with DP-SGD; rewinding it would start from weights without that guarantee. "
            "Use method='retrain' (it retrains with DP-SGD and the same budget)."
        )
    bad = "The model's rewind checkpoint is malformed ({}); set model.rewind_checkpoint_ = None and use another method."
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise ValueError(bad.format("it must be a dict with a 'state_dict'"))
    epoch, run = ckpt.get("epoch"), ckpt.get("epochs_run")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, run)) or not 0 < epoch < run:
        raise ValueError(bad.format(f"its epoch {epoch!r} must be a whole number before the {run!r} epochs run"))
    kl = ckpt.get("kl_weight")
    if kl is not None and (not isinstance(kl, float | int) or isinstance(kl, bool) or not 0 <= kl < float("inf")):
        raise ValueError(bad.format(f"its kl_weight {kl!r} must be a finite number >= 0 or None"))
    own, saved = model.module.state_dict(), ckpt["state_dict"]
    if set(saved) != set(own) or any(
        not isinstance(saved[k], torch.Tensor) or tuple(saved[k].shape) != tuple(own[k].shape) for k in own
    ):
        raise ValueError(
            "The model's rewind checkpoint does not match its module (other parameter names or shapes); "
            "it was not recorded for this model. Set model.rewind_checkpoint_ = None and use another method."
        )
    check_schedule(RewindPlan, params)
    kl_used = params.get("max_kl_weight")
    kl_used = _recorded_kl(ckpt) if kl_used is None else float(kl_used)
    if params.get("min_kl_weight") is not None and float(params["min_kl_weight"]) > kl_used:
        raise ValueError(
            f"`min_kl_weight` ({params['min_kl_weight']}) exceeds the fine-tune's KL weight ({kl_used:g}); "
            "lower it or pass `max_kl_weight`."
        )
    if epoch > LATE_CHECKPOINT * run:
        warn(
            f"The rewind checkpoint was recorded after epoch {epoch} of {run} run (training stopped early?); "
            "so late a state holds more of what the model memorised."
        )


def _runner(plan_cls: type[RewindPlan]):
    """Load the checkpoint, then fine-tune with the recorded KL weight unless the user set one."""

    def run(model: BaseModelClass, ctx: UnlearnContext) -> None:
        ckpt = rewind_checkpoint(model)
        kl = ctx.params.get("max_kl_weight")
        kl = _recorded_kl(ckpt) if kl is None else float(kl)
        ctx.info.update({"rewound_to_epoch": ckpt["epoch"], "training_epochs": ckpt["epochs_run"], "kl_weight": kl})
        model.module.load_state_dict(ckpt["state_dict"])
        run_training_plan(plan_cls, setup=lambda plan: setattr(plan, "max_kl_weight", kl))(model, ctx)

    return run


register(
    "rewind",
    plan=RewindPlan,
    runner=_runner,
    check=_check,
    default_epochs=lambda e: max(1, round(REWIND_EPOCH_SHARE * e)),
    description=f"Restore the checkpoint recorded after {DEFAULT_REWIND_FRACTION:.0%} of training, then fine-tune "
    f"on retain cells (default: {REWIND_EPOCH_SHARE:.0%} of training epochs; needs a model trained by scforget "
    "or with RewindCheckpoint).",
    reference="Mu2024; Bourtoule2021",
)
