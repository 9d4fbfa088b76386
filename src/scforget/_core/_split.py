"""Training, validation and test cells chosen exactly as scvi-tools' ``train()`` chooses them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._seed import seeded

if TYPE_CHECKING:
    from scvi.data import AnnDataManager


def split_cells(
    adata_manager: AnnDataManager,
    *,
    seed: int,
    train_size: float | None = None,
    validation_size: float | None = None,
    shuffle_set_split: bool = True,
    datasplitter_kwargs: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of the training, validation and test cells, from scvi-tools' :class:`~scvi.dataloaders.DataSplitter`.

    For training paths that do not hand the split to scvi-tools' ``train()`` (private, sharded and
    adapter training), so that ``train_size``, ``validation_size`` and ``external_indexing`` mean
    what they mean there. The split is drawn under ``seed``.
    """
    from scvi.dataloaders import DataSplitter

    with seeded(seed):
        splitter = DataSplitter(
            adata_manager,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            **(datasplitter_kwargs or {}),
        )
        splitter.setup()
    return tuple(np.asarray(x, dtype=np.int64) for x in (splitter.train_idx, splitter.val_idx, splitter.test_idx))
