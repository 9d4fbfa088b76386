"""Copy a trained scvi-tools model without touching its AnnData."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from scforget import _compat

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: Bookkeeping attributes copied from a model to its clone (besides the weights).
_COPIED = ("is_trained_", "train_indices", "validation_indices", "test_indices", "history_")


def init_kwargs(model: BaseModelClass) -> dict:
    """Constructor arguments of ``model`` as one flat dict (from ``init_params_``)."""
    init = model.init_params_
    kwargs = dict(init.get("non_kwargs", {}))
    for group in init.get("kwargs", {}).values():
        kwargs.update(group)
    return kwargs


def fresh_model(model: BaseModelClass, **overrides) -> BaseModelClass:
    """A newly initialised model of the same class and architecture on the same AnnData and registration.

    ``overrides`` replace constructor arguments (e.g. LayerNorm instead of BatchNorm). The model's own
    data manager is used even when the AnnData was copied and set up again since (scvi-tools would
    otherwise refuse the original AnnData), and the class's record of managers is left as it was.
    """
    if callable(getattr(model, "fresh", None)) and not overrides:  # ensembles build their own members
        return model.fresh()
    with _compat.manager_in_use(model):
        return type(model)(model.adata, **{**init_kwargs(model), **overrides})


def copy_bookkeeping(src: BaseModelClass, dst: BaseModelClass) -> None:
    """Copy training indices, history and every public attribute ending in ``_`` from ``src`` to ``dst``."""
    for attr in _COPIED:
        setattr(dst, attr, copy.deepcopy(getattr(src, attr, None)))
    for attr, value in vars(src).items():
        if attr.endswith("_") and not attr.startswith("_") and attr not in _COPIED and attr != "init_params_":
            setattr(dst, attr, copy.deepcopy(value))


def clone_model(model: BaseModelClass) -> BaseModelClass:
    """An independent copy of a trained model sharing the same (unmodified) AnnData.

    Weights, buffers, training indices, history and every public attribute ending in ``_`` are
    copied; the clone is put in eval mode on the source model's device. Ensembles built for deletion
    copy themselves (``model.copy()``).
    """
    if callable(getattr(model, "copy", None)) and getattr(model, "deletion_design", None) == "sharded":
        return model.copy()
    new = fresh_model(model)
    new.module.load_state_dict(copy.deepcopy(model.module.state_dict()))
    copy_bookkeeping(model, new)
    new.to_device(model.device)
    new.module.eval()
    return new
