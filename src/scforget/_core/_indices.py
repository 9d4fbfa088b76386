"""Which cells a model trained, validated and never saw (its positional bookkeeping)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from scvi.model.base import BaseModelClass

#: Model attribute (saved with the model) holding a digest of its AnnData's obs names in order.
CELL_ORDER_ATTR = "obs_order_digest_"


def _positions(model: BaseModelClass, attr: str) -> np.ndarray | None:
    idx = getattr(model, attr, None)
    return None if idx is None else np.unique(np.asarray(idx, dtype=np.int64))


def training_positions(model: BaseModelClass) -> np.ndarray:
    """Sorted positions of the model's training cells (every cell when it records none)."""
    idx = _positions(model, "train_indices")
    return np.arange(model.adata.n_obs) if idx is None else idx


def validation_positions(model: BaseModelClass) -> np.ndarray:
    """Sorted positions of the model's validation cells (possibly empty)."""
    idx = _positions(model, "validation_indices")
    return np.zeros(0, dtype=np.int64) if idx is None else idx


def never_trained(model: BaseModelClass) -> np.ndarray:
    """Positions of the cells the model neither trained nor validated on."""
    used = np.zeros(model.adata.n_obs, dtype=bool)
    used[training_positions(model)] = True
    used[validation_positions(model)] = True
    return np.flatnonzero(~used)


def cell_order_digest(obs_names: pd.Index) -> str:
    """SHA-256 of the obs names in order: it changes when cells are reordered, added or removed."""
    h = hashlib.sha256()
    for name in map(str, obs_names):
        h.update(name.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def record_cell_order(model: BaseModelClass) -> None:
    """Store the digest of the model's current cell order (positional indices refer to this order)."""
    setattr(model, CELL_ORDER_ATTR, cell_order_digest(model.adata.obs_names))
