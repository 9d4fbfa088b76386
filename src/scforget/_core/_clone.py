"""Copy a trained scvi-tools model without touching its AnnData."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

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


def _bookkeeping(model: BaseModelClass) -> dict:
    """Deep copies of training indices, history and every public attribute ending in ``_`` of ``model``."""
    attrs = {attr: copy.deepcopy(getattr(model, attr, None)) for attr in _COPIED}
    for attr, value in vars(model).items():
        if attr.endswith("_") and not attr.startswith("_") and attr not in _COPIED and attr != "init_params_":
            attrs[attr] = copy.deepcopy(value)
    return attrs


def copy_bookkeeping(src: BaseModelClass, dst: BaseModelClass) -> None:
    """Copy training indices, history and every public attribute ending in ``_`` from ``src`` to ``dst``."""
    for attr, value in _bookkeeping(src).items():
        setattr(dst, attr, value)


def model_payload(model: BaseModelClass) -> dict:
    """A trained model's weights (CPU tensors) and bookkeeping, without its AnnData: what a fleet job returns."""
    state = {k: v.detach().cpu().clone() for k, v in model.module.state_dict().items()}
    return {"state": state, "attrs": _bookkeeping(model)}


def from_payload(template: BaseModelClass, payload: dict) -> BaseModelClass:
    """A model of ``template``'s class, architecture and AnnData holding ``payload``'s weights and bookkeeping.

    The caller's random state is left as it was (building the module draws initial weights).
    """
    with torch.random.fork_rng(devices=[]):
        new = fresh_model(template)
    new.module.load_state_dict(payload["state"])
    for attr, value in payload["attrs"].items():
        setattr(new, attr, copy.deepcopy(value))
    new.to_device(template.device)
    new.module.eval()
    return new


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
