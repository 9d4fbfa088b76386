"""Selective Synaptic Dampening (Foster et al. 2024)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ._context import UnlearnContext
from ._edits import forget_retain_fisher, paired, record_edit, snapshot
from ._hyperparams import AT_LEAST_ONE, POSITIVE
from ._registry import register

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass


def ssd(
    model: BaseModelClass,
    ctx: UnlearnContext,
    *,
    alpha: float = 10.0,
    lam: float = 1.0,
    max_retain_cells: int | None = None,
    fisher_batch_size: int = 128,
) -> None:
    """Selective Synaptic Dampening: shrink the parameters specialised to the forget cells.

    With ``I_f`` and ``I_r`` the per-sample diagonal Fisher (see :func:`scforget.fisher.diagonal`)
    of the forget and retain cells, every parameter with ``I_f > alpha * I_r`` is multiplied by
    ``min(lam * I_r / I_f, 1)``; all others stay as they are. Factors lie in ``(0, 1]``, so no sign
    ever flips — unlike the reference study's variant, which rescaled the ratio per tensor and
    dampened every parameter, with factors below zero (sign flips) for ``alpha > 1``. Both Fishers use
    the same estimator, eval mode and posterior-mean latent. Parameters that receive no gradient
    are left alone and listed in the record. The method does not train (``max_epochs`` must be 0).

    Parameters
    ----------
    model
        Model edited in place.
    ctx
        The resolved unlearning context.
    alpha
        Selection threshold on ``I_f / I_r`` (the paper's default 10).
    lam
        Dampening constant λ (the paper's default 1).
    max_retain_cells
        Estimate ``I_r`` on a random subset of this many retain cells (seeded); ``None`` uses all.
    fisher_batch_size
        Minibatch size of the Fisher computations.
    """
    f_forget, f_retain, retain = forget_retain_fisher(model, ctx, max_retain_cells, fisher_batch_size)
    before = snapshot(model.module)
    n_selected = 0
    with torch.no_grad():
        for _, p, i_f, i_r in paired(model.module, f_forget, f_retain):
            selected = i_f > alpha * i_r
            factor = torch.where(selected, (lam * i_r / i_f.clamp_min(1e-300)).clamp(max=1.0), torch.ones_like(i_f))
            p.mul_(factor.to(p.dtype))
            n_selected += int(selected.sum())
    record_edit(ctx, model.module, before, f_forget, f_retain, retain, n_selected)


register(
    "ssd",
    function=ssd,
    bounds={"alpha": POSITIVE, "lam": POSITIVE, "max_retain_cells": AT_LEAST_ONE, "fisher_batch_size": AT_LEAST_ONE},
    description="Selective Synaptic Dampening: shrink parameters with forget Fisher > alpha x retain Fisher.",
    reference="Foster et al. 2024 (AAAI), Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening",
)
