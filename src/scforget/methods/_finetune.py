"""Fine-tuning on retain cells only."""

from __future__ import annotations

from typing import ClassVar

from ._base import UnlearningTrainingPlan
from ._hyperparams import PositiveFloat
from ._registry import register


class FinetunePlan(UnlearningTrainingPlan):
    """Continue training on retain cells only ("catastrophic forgetting" baseline).

    The model keeps optimising its own training objective (negative ELBO) on the retain cells; the
    forget cells are never shown to it. This is the standard baseline of the unlearning literature
    (e.g. the NeurIPS 2023 unlearning challenge starting kit) that every approximate method should
    beat.

    Parameters
    ----------
    module
        The model's module.
    lr
        Learning rate of Adam.
    **kwargs
        See :class:`~scforget.train.UnlearningTrainingPlan`.
    """

    uses_forget: ClassVar[bool] = False

    def __init__(self, module, *, lr: PositiveFloat = 1e-3, **kwargs):
        super().__init__(module, lr=lr, **kwargs)


register(
    "finetune",
    plan=FinetunePlan,
    description="Continue training on retain cells only (default budget: 10% of the training epochs).",
    reference="Golatkar et al. 2020; NeurIPS 2023 unlearning challenge baseline",
)
