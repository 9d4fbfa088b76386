"""Public TrainingPlans of scforget's training-based unlearning methods."""

from scforget.methods import (
    ExtraGradientPlan,
    FinetunePlan,
    FrozenCriticPlan,
    GISAPlan,
    RetainForgetDataModule,
    UnlearningTrainingPlan,
)

__all__ = [
    "ExtraGradientPlan",
    "FinetunePlan",
    "FrozenCriticPlan",
    "GISAPlan",
    "RetainForgetDataModule",
    "UnlearningTrainingPlan",
]
