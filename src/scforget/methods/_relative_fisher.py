"""Relative-Fisher scrubbing: edit parameters by how much more they matter to forget than retain cells."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

from ._context import UnlearnContext
from ._edits import forget_retain_fisher, noise_generator, paired, record_edit, snapshot
from ._hyperparams import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE
from ._registry import register

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass


def relative_fisher(
    model: BaseModelClass,
    ctx: UnlearnContext,
    *,
    mode: Literal["dampen", "noise"] = "dampen",
    threshold: float = 1.0,
    strength: float = 1.0,
    noise_scale: float = 0.1,
    damping: float = 1e-8,
    max_retain_cells: int | None = None,
    fisher_batch_size: int = 128,
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
    model
        Model edited in place.
    ctx
        The resolved unlearning context.
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
    max_retain_cells
        Estimate ``I_r`` on a random subset of this many retain cells (seeded); ``None`` uses all.
    fisher_batch_size
        Minibatch size of the Fisher computations.
    """
    f_forget, f_retain, retain = forget_retain_fisher(model, ctx, max_retain_cells, fisher_batch_size)
    generator = noise_generator(ctx.seed)
    before = snapshot(model.module)
    n_selected = 0
    with torch.no_grad():
        for _, p, i_f, i_r in paired(model.module, f_forget, f_retain):
            ratio = i_f / (i_r + damping)
            selected = ratio > threshold
            n_selected += int(selected.sum())
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
    record_edit(ctx, model.module, before, f_forget, f_retain, retain, n_selected)


register(
    "relative_fisher",
    function=relative_fisher,
    bounds={
        "threshold": POSITIVE,
        "strength": POSITIVE,
        "noise_scale": POSITIVE,
        "damping": NON_NEGATIVE,
        "max_retain_cells": AT_LEAST_ONE,
        "fisher_batch_size": AT_LEAST_ONE,
    },
    description="Dampen (or noise) parameters by their forget/retain Fisher ratio above a threshold.",
    reference="Proposed as future work by the reference study (Fishing for Privacy); cf. Foster et al. 2024",
)
