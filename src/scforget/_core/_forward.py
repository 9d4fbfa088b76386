"""The deterministic forward pass of scvi-tools VAEs that every room shares.

Audit signals, Fisher information, distillation targets and membership critics all read a VAE at
the **posterior mean** of its latent variable (a random draw would make two identical models look
different) with the **observed library size**, in whatever mode the caller chose. These helpers are
that one forward pass and the per-cell terms of the model's objective.
"""

from __future__ import annotations

import torch
from scvi import REGISTRY_KEYS
from torch import nn
from torch.distributions import Normal, kl_divergence

from scforget import _compat

from ._likelihood import log_prob

#: Module classes whose per-cell negative ELBO is reconstruction NLL plus analytic KL terms (fast path).
_ANALYTIC_ELBO = ("VAE", "VAEC")


def inference(module: nn.Module, tensors: dict) -> dict:
    """``module.inference`` on a minibatch, as a plain dict."""
    return dict(module.inference(**_compat.inference_input(module, tensors)))


def posterior(inference_outputs: dict, module: nn.Module) -> Normal:
    """The Gaussian posterior ``q(z | x)`` of an inference output; a clear error for other modules."""
    qz = inference_outputs.get("qz")
    if qz is None or not hasattr(qz, "loc"):
        raise TypeError(
            f"{type(module).__name__}.inference returns no Gaussian posterior 'qz'; scforget supports "
            "scvi-tools VAE modules (SCVI, CondSCVI, SCANVI, TOTALVI)."
        )
    return qz


def latent_point(module: nn.Module, untransformed: torch.Tensor) -> torch.Tensor:
    """The latent value the decoder sees for an untransformed draw (scVI's ``z_transformation``)."""
    transform = getattr(getattr(module, "z_encoder", None), "z_transformation", None)
    return transform(untransformed) if callable(transform) else untransformed


def decode(module: nn.Module, tensors: dict, inference_outputs: dict, *, z: torch.Tensor | None = None) -> dict:
    """``module.generative`` at a chosen latent point with the observed library size.

    Parameters
    ----------
    module
        A scvi-tools VAE module.
    tensors
        The minibatch.
    inference_outputs
        Outputs of :func:`inference` on the same minibatch (not modified).
    z
        The untransformed latent point; defaults to the posterior mean.
    """
    inf = dict(inference_outputs)
    qz = posterior(inf, module)
    inf["z"] = latent_point(module, qz.loc if z is None else z)
    if getattr(module, "use_observed_lib_size", True) is False and "library" in inf:
        # scVI with a learned library samples it during inference; the observed one keeps this deterministic
        inf["library"] = torch.log(tensors[REGISTRY_KEYS.X_KEY].sum(1, keepdim=True))
    return dict(module.generative(**_compat.generative_input(module, tensors, inf)))


def posterior_mean_forward(
    module: nn.Module, tensors: dict, inference_outputs: dict | None = None
) -> tuple[dict, dict]:
    """``(inference, generative)`` outputs with ``z`` at the posterior mean and the observed library size.

    Pass ``inference_outputs`` of a forward pass already made to skip the encoder.
    """
    inf = inference(module, tensors) if inference_outputs is None else dict(inference_outputs)
    return inf, decode(module, tensors, inf)


def reconstruction_log_prob(module: nn.Module, tensors: dict, generative_outputs: dict) -> torch.Tensor:
    """Per-cell log-likelihood of everything the decoder models.

    Single-modality VAEs return ``px`` (the negative binomial is evaluated with
    :func:`~scforget._core.nb_log_prob`). TOTALVI returns ``px_``/``py_`` parameter dicts for RNA and
    protein; its own reconstruction loss (RNA negative binomial plus protein mixture) is used.
    """
    x = tensors[REGISTRY_KEYS.X_KEY]
    if "px" in generative_outputs:
        return log_prob(generative_outputs["px"], x)
    if "px_" in generative_outputs and hasattr(module, "get_reconstruction_loss"):
        y = tensors[REGISTRY_KEYS.PROTEIN_EXP_KEY]
        rna, protein = module.get_reconstruction_loss(x, y, generative_outputs["px_"], generative_outputs["py_"])
        return -(rna + protein)
    raise TypeError(f"{type(module).__name__} returns no count distribution scforget understands.")


def kl_to_prior(inference_outputs: dict, generative_outputs: dict) -> torch.Tensor:
    """Per-cell analytic ``KL(q(z|x) || p(z))``; ``p(z)`` is the decoder's Gaussian prior or ``N(0, I)``."""
    qz = inference_outputs["qz"]
    pz = generative_outputs.get("pz")
    if not isinstance(pz, Normal):
        pz = Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))
    return kl_divergence(qz, pz).sum(-1)


def negative_elbo(module: nn.Module, tensors: dict) -> torch.Tensor:
    """Per-cell negative ELBO (reconstruction NLL plus local KL terms, KL weight 1) at the posterior mean.

    For scVI's ``VAE`` and CondSCVI's ``VAEC`` with a standard normal prior the terms are computed
    directly (the negative binomial on non-zero counts only, analytic KL divergences) and equal the
    module's own :class:`~scvi.module.base.LossOutput` terms; for other modules (SCANVI's hierarchy,
    CondSCVI's mixture prior) the module's ``loss`` provides them. Cells never mix: no batch mean is
    taken.
    """
    from scvi.module.base import LossOutput

    inf, gen = posterior_mean_forward(module, tensors)
    name = type(module).__name__
    fast = name in _ANALYTIC_ELBO and (name != "VAEC" or getattr(module, "prior", "normal") == "normal")
    if not fast:
        out = module.loss(tensors, inf, gen, kl_weight=1.0)
        return LossOutput.dict_sum(out.reconstruction_loss) + LossOutput.dict_sum(out.kl_local)
    nelbo = -reconstruction_log_prob(module, tensors, gen) + kl_to_prior(inf, gen)
    if inf.get("ql") is not None and gen.get("pl") is not None:
        nelbo = nelbo + kl_divergence(inf["ql"], gen["pl"]).sum(-1)
    return nelbo
