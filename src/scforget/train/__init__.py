"""Public TrainingPlans of scforget's training-based unlearning methods."""

from scforget.methods import (
    BadTeacherPlan,
    ContrastivePlan,
    ExtraGradientPlan,
    FinetunePlan,
    FrozenCriticPlan,
    GISAPlan,
    GradientAscentPlan,
    NegGradPlusPlan,
    RetainForgetDataModule,
    SCRUBPlan,
    UnlearningTrainingPlan,
)

__all__ = [
    "BadTeacherPlan",
    "ContrastivePlan",
    "ExtraGradientPlan",
    "FinetunePlan",
    "FrozenCriticPlan",
    "GISAPlan",
    "GradientAscentPlan",
    "NegGradPlusPlan",
    "RetainForgetDataModule",
    "SCRUBPlan",
    "UnlearningTrainingPlan",
]
