"""Retain/forget data module: paired minibatches from scvi-tools' own loaders."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import CombinedLoader
from scvi.dataloaders import AnnDataLoader

from scforget._core import drop_last_for_batchnorm

if TYPE_CHECKING:
    from scvi.data import AnnDataManager


class RetainForgetDataModule(LightningDataModule):
    """Minibatches of retain cells, optionally paired with forget cells.

    With ``paired=True`` each training batch is a dict ``{"retain": tensors, "forget": tensors}``
    built by Lightning's :class:`~lightning.pytorch.utilities.CombinedLoader` in
    ``"max_size_cycle"`` mode: an epoch is one pass over the retain cells and the (usually much
    smaller) forget set is cycled. With ``paired=False`` batches are plain retain tensors.

    Parameters
    ----------
    adata_manager
        The model's :class:`~scvi.data.AnnDataManager`.
    retain
        Positions of retain cells.
    forget
        Positions of forget cells.
    validation
        Positions of validation cells (never trained on); may be empty.
    batch_size
        Retain minibatch size.
    forget_batch_size
        Forget minibatch size; defaults to ``min(batch_size, len(forget))``.
    paired
        Whether to pair every retain batch with a forget batch.
    distributed_sampler
        Whether each process of a distributed run (Lightning DDP) draws its own disjoint share of
        every loader through scvi-tools' ``BatchDistributedSampler``. ``batch_size`` and
        ``forget_batch_size`` are then per process, as in scvi-tools: the global batch is
        ``batch_size`` times the number of processes. Pass
        ``distributed_sampler=uses_distributed_sampler(strategy)`` (what :func:`scforget.unlearn`
        does).
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        retain: np.ndarray,
        forget: np.ndarray,
        validation: np.ndarray | None = None,
        *,
        batch_size: int = 128,
        forget_batch_size: int | None = None,
        paired: bool = True,
        distributed_sampler: bool = False,
    ):
        super().__init__()
        self.adata_manager = adata_manager
        self.train_idx = np.asarray(retain, dtype=np.int64)
        self.forget_idx = np.asarray(forget, dtype=np.int64)
        self.val_idx = np.zeros(0, dtype=np.int64) if validation is None else np.asarray(validation, dtype=np.int64)
        self.test_idx = self.forget_idx
        self.batch_size = batch_size
        self.forget_batch_size = forget_batch_size or max(1, min(batch_size, len(self.forget_idx)))
        self.paired = paired
        self.distributed_sampler = bool(distributed_sampler)

    @property
    def n_train(self) -> int:
        """Number of retain cells."""
        return len(self.train_idx)

    @property
    def n_val(self) -> int:
        """Number of validation cells."""
        return len(self.val_idx)

    def _loader(self, idx: np.ndarray, batch_size: int, shuffle: bool) -> AnnDataLoader:
        # With a distributed sampler each process sees about len(idx) / world_size cells; the
        # BatchNorm guard is judged on that share (the sampler pads the shares to equal length).
        world = self.trainer.world_size if self.distributed_sampler and self.trainer is not None else 1
        share = -(-len(idx) // world)
        return AnnDataLoader(
            self.adata_manager,
            indices=idx,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last_for_batchnorm(share, batch_size) if shuffle else False,
            distributed_sampler=self.distributed_sampler,
        )

    def retain_dataloader(self) -> AnnDataLoader:
        """Shuffled retain batches."""
        return self._loader(self.train_idx, self.batch_size, shuffle=True)

    def forget_dataloader(self) -> AnnDataLoader:
        """Shuffled forget batches."""
        return self._loader(self.forget_idx, self.forget_batch_size, shuffle=True)

    def train_dataloader(self):
        """Retain batches, paired with cycled forget batches when ``paired``."""
        if not self.paired:
            return self.retain_dataloader()
        return CombinedLoader(
            {"retain": self.retain_dataloader(), "forget": self.forget_dataloader()}, mode="max_size_cycle"
        )

    def val_dataloader(self):
        """Validation batches (an empty list when there are no validation cells)."""
        if self.n_val == 0:
            return []
        return self._loader(self.val_idx, self.batch_size, shuffle=False)
