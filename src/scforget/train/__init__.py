"""Public TrainingPlans of scforget's training-based unlearning methods."""

from scforget.methods._bad_teacher import BadTeacherPlan
from scforget.methods._base import UnlearningTrainingPlan
from scforget.methods._calibrated_neggrad import CalibratedNegGradPlan
from scforget.methods._checkpoint import RewindCheckpoint
from scforget.methods._contrastive import ContrastivePlan
from scforget.methods._datamodule import RetainForgetDataModule
from scforget.methods._extragradient import ExtraGradientPlan
from scforget.methods._finetune import FinetunePlan
from scforget.methods._frozen_critic import FrozenCriticPlan
from scforget.methods._gisa import GISAPlan
from scforget.methods._gradient_ascent import GradientAscentPlan
from scforget.methods._matched_neggrad import MatchedNegGradPlan
from scforget.methods._neggrad_plus import NegGradPlusPlan
from scforget.methods._private import DPVAE, GeneDispersion, PrivateTrainingPlan
from scforget.methods._rewind import RewindPlan
from scforget.methods._scrub import SCRUBPlan
from scforget.methods._short_retrain import ShortRetrainPlan

__all__ = [
    "BadTeacherPlan",
    "CalibratedNegGradPlan",
    "DPVAE",
    "ContrastivePlan",
    "ExtraGradientPlan",
    "FinetunePlan",
    "FrozenCriticPlan",
    "GISAPlan",
    "GeneDispersion",
    "GradientAscentPlan",
    "MatchedNegGradPlan",
    "NegGradPlusPlan",
    "PrivateTrainingPlan",
    "RetainForgetDataModule",
    "RewindCheckpoint",
    "RewindPlan",
    "SCRUBPlan",
    "ShortRetrainPlan",
    "UnlearningTrainingPlan",
]
