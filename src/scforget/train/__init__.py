"""Public TrainingPlans of scforget's training-based unlearning methods."""

from scforget.methods import FinetunePlan, RetainForgetDataModule, UnlearningTrainingPlan

__all__ = ["FinetunePlan", "RetainForgetDataModule", "UnlearningTrainingPlan"]
