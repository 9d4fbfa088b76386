"""Relative-Fisher scrubbing: edit parameters by how much more they matter to forget than retain cells."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

from scforget._core import doc_params

from ._context import UnlearnContext
from ._edits import DOC_FISHER_CELLS, DOC_MODEL_CTX, fisher_edit, noise_generator
from ._hyperparams import NonNegativeFloat, PositiveFloat, PositiveInt
from ._registry import register

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass


@doc_params(model_ctx=DOC_MODEL_CTX, fisher_cells=DOC_FISHER_CELLS)
def relative_fisher(
    model: BaseModelClass,
    ctx: UnlearnContext,
    *,
    mode: Literal["dampen", "noise"] = "dampen",
    threshold: PositiveFloat = 1.0,
    strength: PositiveFloat = 1.0,
    noise_scale: PositiveFloat = 0.1,
    damping: NonNegativeFloat = 1e-8,
    max_retain_cells: PositiveInt | None = None,
    fisher_batch_size: PositiveInt = 128,
) -> None:
    """Scrub parameters in proportion to their forget/retain Fisher ratio.

    The reference study's proposed follow-up: with ``I_f`` and ``I_r`` the per-sample diagonal
    Fisher of forget and retain cells (:func:`scforget.fisher.diagonal`) and the ratio
    ``r = I_f / (I_r + damping)``, parameters with ``r <= threshold`` (those that matter at least as
    much to retain cells, per cell) are left alone. The others are

    - ``mode="dampen"``: multiplied by ``(threshold / r) ** strength``, a factor in ``(0, 1)`` that
      falls continuously from 1 at the threshold (no sign flips); or
    - ``mode="noise"``: perturbed by Gaussian noise of standard deviation
      ``noise_scale * (1 - threshold / r) * rms(tensor)``, seeded by ``ctx.seed``.

    Compared with :func:`~scforget.methods.ssd`, there is no hard selection margin: the edit grows
    smoothly with specialisation. Parameters that receive no gradient are left alone and listed in
    the record. The method does not train (``max_epochs`` must be 0).

    Parameters
    ----------
    {model_ctx}
    mode
        ``"dampen"`` or ``"noise"``.
    threshold
        Ratio above which a parameter is edited.
    strength
        Exponent of the dampening factor.
    noise_scale
        Noise standard deviation relative to the tensor's root mean square (``mode="noise"``).
    damping
        Added to ``I_r`` in the ratio.
    {fisher_cells}
    """
    generator = noise_generator(ctx.seed)
    with fisher_edit(model, ctx, max_retain_cells, fisher_batch_size) as edit:
        for p, i_f, i_r in edit.pairs():
            ratio = i_f / (i_r + damping)
            selected = ratio > threshold
            edit.n_selected += int(selected.sum())
            if not bool(selected.any()):
                continue
            if mode == "dampen":
                factor = torch.where(selected, (threshold / ratio.clamp_min(1e-300)) ** strength, 1.0)
                p.mul_(factor.to(device=p.device, dtype=p.dtype))
            else:
                rms = float(p.detach().double().square().mean().sqrt())
                std = noise_scale * rms * torch.where(selected, 1.0 - threshold / ratio.clamp_min(1e-300), 0.0)
                noise = torch.randn(std.shape, generator=generator, dtype=torch.float64) * std.cpu()
                p.add_(noise.to(device=p.device, dtype=p.dtype))


register(
    "relative_fisher",
    function=relative_fisher,
    description="Dampen (or noise) parameters by their forget/retain Fisher ratio above a threshold.",
    reference="Proposed as future work by the reference study (Fishing for Privacy); cf. Foster et al. 2024",
)
