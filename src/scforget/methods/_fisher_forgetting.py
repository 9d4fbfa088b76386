"""Fisher forgetting (Golatkar et al. 2020): noise shaped by the inverse retain Fisher."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from scforget._core import doc_params

from ._context import UnlearnContext
from ._edits import DOC_FISHER_CELLS, DOC_MODEL_CTX, edit_summary, fisher_of, noise_generator, snapshot, subsample
from ._hyperparams import NonNegativeFloat, PositiveFloat, PositiveInt
from ._registry import get_method, register

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass


@doc_params(model_ctx=DOC_MODEL_CTX, fisher_cells=DOC_FISHER_CELLS)
def fisher_forgetting(
    model: BaseModelClass,
    ctx: UnlearnContext,
    *,
    alpha: PositiveFloat | None = None,
    damping: NonNegativeFloat = 1e-8,
    max_inverse_fisher: PositiveFloat = 100.0,
    newton_step: NonNegativeFloat = 0.0,
    finetune_lr: PositiveFloat | None = None,
    max_retain_cells: PositiveInt | None = None,
    fisher_batch_size: PositiveInt = 128,
) -> None:
    """Fisher forgetting: perturb the parameters with noise of covariance ∝ inverse retain Fisher.

    Following Golatkar et al. (2020), with ``F_r`` the per-sample (per-cell mean) diagonal Fisher
    of the retain cells (:func:`scforget.fisher.diagonal`), each parameter receives independent
    Gaussian noise of variance ``alpha * min(1 / (F_r + damping), max_inverse_fisher)``. The default
    ``alpha = 1 / n_retain`` makes this the diagonal Laplace approximation of the posterior given the
    retain cells (covariance ``(n_retain F_r)^-1``): parameters the retain cells
    rely on barely move, parameters they do not constrain — where forget-specific information can
    hide — are scrambled. Optionally a Newton-style correction towards the retain optimum comes
    first, ``θ ← θ - newton_step * min(1 / (F_r + damping), max_inverse_fisher) * ∇L_r(θ)`` (the
    Fisher standing in for the Hessian), and a retain fine-tune follows when ``max_epochs > 0``,
    with the model's *own* training objective (scforget's ``finetune`` method), never a re-weighted
    loss (the reference study's fine-tune used a mis-scaled loss that collapsed the posterior).
    Parameters that receive no gradient are left alone and listed in the record.

    Parameters
    ----------
    model
        Model edited in place.
    ctx
        The resolved unlearning context (``ctx.seed`` seeds the noise; ``ctx.max_epochs`` is the
        fine-tune budget, 0 by default).
    alpha
        Noise scale α; default ``1 / n`` with ``n`` the number of retain cells the Fisher was
        estimated on.
    damping
        Added to the Fisher before inversion.
    max_inverse_fisher
        Upper clip of ``1 / (F_r + damping)``: bounds the noise on parameters the retain cells do
        not constrain. Golatkar et al. clip at 1e3 with a much smaller ``alpha``; with the
        Laplace-scale default ``alpha`` that destroys a small scVI (forget and retain likelihood
        both collapse), so the default is 100. The noise scale trades forgetting for utility and
        should be tuned against a utility metric.
    newton_step
        Size of the Newton-style correction (0: none; 1: full step).
    finetune_lr
        Learning rate of the fine-tune (default: the training recipe's ``lr``, else 1e-3).
    {fisher_cells}
    """
    if damping == 0 and max_inverse_fisher == float("inf"):
        raise ValueError("With `damping=0` the inverse Fisher needs a finite `max_inverse_fisher`.")
    retain = subsample(ctx.retain, max_retain_cells, ctx.seed)
    f_retain = fisher_of(model, ctx, retain, fisher_batch_size, return_gradient=newton_step > 0)
    alpha = 1.0 / f_retain.n_cells if alpha is None else float(alpha)
    generator = noise_generator(ctx.seed)
    before = snapshot(model.module)
    with torch.no_grad():
        for name, p in model.module.named_parameters():
            if name not in f_retain:
                continue
            inverse = (1.0 / (f_retain[name] + damping)).clamp(max=max_inverse_fisher)
            update = torch.zeros_like(inverse)
            if newton_step:
                update -= newton_step * inverse * f_retain.mean_gradient[name]
            noise = torch.randn(inverse.shape, generator=generator, dtype=torch.float64)
            update += torch.sqrt(alpha * inverse) * noise
            p.add_(update.to(device=p.device, dtype=p.dtype))
    ctx.info.update(edit_summary(model.module, before))
    ctx.info["no_gradient"] = list(f_retain.no_gradient)
    ctx.info["n_retain_fisher_cells"] = int(retain.size)
    ctx.info["fisher_seconds"] = f_retain.seconds
    ctx.info["alpha"] = alpha
    if ctx.max_epochs > 0:
        lr = finetune_lr or ctx.recipe.get("plan_kwargs", {}).get("lr") or ctx.recipe.get("lr") or 1e-3
        sub = dataclasses.replace(ctx, params={"lr": float(lr)}, info={})
        get_method("finetune").run(model, sub)
        ctx.info["finetune"] = {"lr": float(lr), **sub.info}


register(
    "fisher_forgetting",
    function=fisher_forgetting,
    accepts_epochs=True,
    description="Gaussian noise with covariance alpha x inverse retain Fisher (+ optional Newton step, fine-tune).",
    reference="Golatkar, Achille & Soatto 2020 (CVPR), Eternal Sunshine of the Spotless Net",
)
