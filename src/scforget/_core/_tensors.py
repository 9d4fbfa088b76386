"""Minibatch tensor dicts: move, slice, count, and collect them from scvi-tools' data loaders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from scforget import _compat

from ._memory import release_free_memory

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass


def tensors_to(tensors: dict[str, Any], device) -> dict[str, Any]:
    """Every tensor of a minibatch dict on ``device`` (other values unchanged)."""
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in tensors.items()}


def slice_tensors(tensors: dict[str, Any], index) -> dict[str, Any]:
    """The cells (rows) ``index`` of every tensor in a minibatch dict."""
    return {k: (v[index] if isinstance(v, torch.Tensor) else v) for k, v in tensors.items()}


def n_cells(tensors: dict[str, Any]) -> int:
    """Number of cells in a minibatch dict."""
    return int(next(v for v in tensors.values() if isinstance(v, torch.Tensor)).shape[0])


class Minibatches:
    """Minibatches of a scvi-tools data loader moved to a device; has a length, so progress bars can count."""

    def __init__(self, loader, device=None):
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    #: Minibatches between two hand-backs of freed memory to the OS (see :func:`release_free_memory`).
    TRIM_EVERY = 4

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for i, tensors in enumerate(self.loader, start=1):
            yield tensors if self.device is None else tensors_to(tensors, self.device)
            if i % self.TRIM_EVERY == 0:
                release_free_memory()


def minibatches(
    model: BaseModelClass, positions: np.ndarray, *, batch_size: int = 1024, device=None, shuffle: bool = False
) -> Minibatches:
    """Minibatches of the cells at ``positions`` of ``model.adata`` from scvi-tools' own data loader."""
    loader = _compat.make_data_loader(
        model, indices=np.asarray(positions, dtype=np.int64), batch_size=int(batch_size), shuffle=shuffle
    )
    return Minibatches(loader, device)
