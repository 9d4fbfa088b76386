"""Module modes: evaluation and frozen BatchNorm, with every training flag restored afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

#: BatchNorm layer types whose running statistics a train-mode forward pass updates.
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run the block with ``module`` in eval mode (BatchNorm frozen, dropout off); gradients still flow.

    The training flag of every submodule is restored afterwards, whatever mix of modes it had.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.train(flag)


@contextlib.contextmanager
def frozen_batchnorm(module: nn.Module, *, keep: nn.Module | None = None) -> Iterator[None]:
    """Run the block with the BatchNorm layers of ``module`` (except those inside ``keep``) in eval mode.

    In train mode a forward pass updates BatchNorm running statistics, which would write the forget
    cells into an "unlearned" model. Inside this block BatchNorm normalises with the stored running
    statistics and leaves them untouched; gradients still flow and dropout stays as it is.
    """
    kept = set() if keep is None else {id(m) for m in keep.modules()}
    layers = [m for m in module.modules() if isinstance(m, BATCHNORM) and m.training and id(m) not in kept]
    for m in layers:
        m.eval()
    try:
        yield
    finally:
        for m in layers:
            m.train()


def has_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` contains a BatchNorm layer (which cannot train on a minibatch of one cell)."""
    return any(isinstance(m, BATCHNORM) for m in module.modules())


def drop_last_for_batchnorm(n: int, batch_size: int) -> bool:
    """Whether to drop a final minibatch of one or two cells: BatchNorm cannot train on it."""
    return 0 < n % batch_size < 3 and n > batch_size
