"""Unlearning methods: the registry, the shared machinery, and one module per method.

Use :func:`scforget.unlearn` (or ``model.unlearn``) to run a method by name; :func:`available`
lists them and :func:`register` adds your own.
"""

from scforget._clone import clone_model
from scforget._recipe import training_recipe

from ._base import UnlearningTrainingPlan, frozen_batchnorm
from ._datamodule import RetainForgetDataModule
from ._record import verify_forgotten
from ._registry import MethodSpec, UnlearnContext, available, get_method, register
from ._unlearn import check_model, unlearn

# one module per method; importing registers it
from ._retrain import retrain  # isort: skip
from ._finetune import FinetunePlan  # isort: skip
from ._gradient_ascent import GradientAscentPlan  # isort: skip
from ._neggrad_plus import NegGradPlusPlan  # isort: skip
from ._scrub import SCRUBPlan  # isort: skip
from ._contrastive import ContrastivePlan  # isort: skip
from ._bad_teacher import BadTeacherPlan  # isort: skip
from ._gisa import GISAPlan  # isort: skip
from ._frozen_critic import FrozenCriticPlan  # isort: skip
from ._extragradient import ExtraGradientPlan, extragradient_step, simultaneous_gda_step  # isort: skip
from ._ssd import ssd  # isort: skip
from ._fisher_forgetting import fisher_forgetting  # isort: skip
from ._relative_fisher import relative_fisher  # isort: skip

__all__ = [
    "BadTeacherPlan",
    "ContrastivePlan",
    "ExtraGradientPlan",
    "FinetunePlan",
    "FrozenCriticPlan",
    "GISAPlan",
    "GradientAscentPlan",
    "MethodSpec",
    "NegGradPlusPlan",
    "RetainForgetDataModule",
    "SCRUBPlan",
    "UnlearnContext",
    "UnlearningTrainingPlan",
    "available",
    "check_model",
    "clone_model",
    "extragradient_step",
    "fisher_forgetting",
    "frozen_batchnorm",
    "get_method",
    "register",
    "relative_fisher",
    "retrain",
    "simultaneous_gda_step",
    "ssd",
    "training_recipe",
    "unlearn",
    "verify_forgotten",
]
