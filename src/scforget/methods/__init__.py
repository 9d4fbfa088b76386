"""Unlearning methods: the registry, the shared machinery, and one module per method.

Use :func:`scforget.unlearn` (or ``model.unlearn``) to run a method by name; :func:`available`
lists them and :func:`register` adds your own. The TrainingPlans of the training-based methods are
public in :mod:`scforget.train`.
"""

from scforget._core import estimate_retrain_seconds, training_recipe

from ._context import UnlearnContext
from ._hyperparams import Bound
from ._record import verify_forgotten
from ._registry import MethodSpec, available, get_method, register
from ._unlearn import unlearn

# one module per method; importing registers it
from . import _retrain  # isort: skip
from . import _finetune  # isort: skip
from . import _gradient_ascent  # isort: skip
from . import _neggrad_plus  # isort: skip
from . import _calibrated_neggrad  # isort: skip
from . import _matched_neggrad  # isort: skip
from . import _rewind  # isort: skip
from . import _short_retrain  # isort: skip
from . import _scrub  # isort: skip
from . import _contrastive  # isort: skip
from . import _bad_teacher  # isort: skip
from . import _gisa  # isort: skip
from . import _frozen_critic  # isort: skip
from ._extragradient import extragradient_step  # isort: skip
from . import _ssd  # isort: skip
from . import _fisher_forgetting  # isort: skip
from . import _relative_fisher  # isort: skip
from . import _dpsgd  # isort: skip
from . import _sisa  # isort: skip
from . import _adapter_drop  # isort: skip

__all__ = [
    "Bound",
    "MethodSpec",
    "UnlearnContext",
    "available",
    "estimate_retrain_seconds",
    "extragradient_step",
    "get_method",
    "register",
    "training_recipe",
    "unlearn",
    "verify_forgotten",
]
