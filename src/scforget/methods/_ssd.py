"""Selective Synaptic Dampening (Foster et al. 2024)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from scforget._core import doc_params

from ._context import UnlearnContext
from ._edits import DOC_FISHER_CELLS, DOC_MODEL_CTX, fisher_edit
from ._hyperparams import PositiveFloat, PositiveInt
from ._registry import register

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass


@doc_params(model_ctx=DOC_MODEL_CTX, fisher_cells=DOC_FISHER_CELLS)
def ssd(
    model: BaseModelClass,
    ctx: UnlearnContext,
    *,
    alpha: PositiveFloat = 10.0,
    lam: PositiveFloat = 1.0,
    max_retain_cells: PositiveInt | None = None,
    fisher_batch_size: PositiveInt = 128,
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
    {model_ctx}
    alpha
        Selection threshold on ``I_f / I_r`` (the paper's default 10).
    lam
        Dampening constant λ (the paper's default 1).
    {fisher_cells}
    """
    with fisher_edit(model, ctx, max_retain_cells, fisher_batch_size) as edit:
        for p, i_f, i_r in edit.pairs():
            selected = i_f > alpha * i_r
            factor = torch.where(selected, (lam * i_r / i_f.clamp_min(1e-300)).clamp(max=1.0), torch.ones_like(i_f))
            p.mul_(factor.to(p.dtype))
            edit.n_selected += int(selected.sum())


register(
    "ssd",
    function=ssd,
    description="Selective Synaptic Dampening: shrink parameters with forget Fisher > alpha x retain Fisher.",
    reference="Foster et al. 2024 (AAAI), Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening",
)
