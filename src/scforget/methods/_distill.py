"""Shared mechanics of the teacher/student and manually optimised unlearning methods.

Teachers are frozen copies of a module (:func:`frozen_copy`) or randomly re-initialised copies
(:func:`incompetent_copy`). Student and teacher are compared cell by cell through
:func:`divergence`: the KL divergence between their diagonal Gaussian posteriors ``q(z|x)`` plus
the KL divergence between their decoder outputs, read as a distribution over genes (the
normalised negative-binomial means, i.e. the expected expression profile of the cell). Decoder
outputs are computed at the posterior mean of ``z`` so that two identical modules have divergence
exactly zero (with a sampled ``z`` the noise alone would make them differ).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import torch
from scvi import REGISTRY_KEYS
from torch import nn
from torch.distributions import Normal, kl_divergence

from scforget._core import posterior_mean_forward

from ._base import UnlearningTrainingPlan
from ._hyperparams import NonNegativeFloat

_EPS = 1e-8


class VAEOutputs(NamedTuple):
    """Posterior and decoder output of a module on one minibatch (``z`` at the posterior mean)."""

    qz: Normal
    px: torch.distributions.Distribution
    inference: dict
    n_counts: torch.Tensor


class FrozenModules:
    """Frozen modules (teachers, frozen critics) held by a plan without registering them as its submodules.

    Registered submodules would be counted in Lightning's summary, moved and flagged by its "modules
    in eval mode" warning. :meth:`on` moves a module to the device of the data it is applied to.
    """

    def __init__(self, **modules: nn.Module):
        self._modules = dict(modules)

    def __getattr__(self, name: str) -> nn.Module:
        try:
            return self.__dict__["_modules"][name]
        except KeyError:
            raise AttributeError(name) from None

    def values(self) -> list[nn.Module]:
        """The held modules, in the order given."""
        return list(self._modules.values())

    @staticmethod
    def on(module: nn.Module, device) -> nn.Module:
        """``module`` on ``device`` (moved once, in place), in eval mode."""
        first = next(iter(module.parameters()), None)
        if first is not None and first.device != torch.device(device):
            module.to(device)
        module.eval()
        return module


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` in eval mode with every parameter frozen (a teacher)."""
    teacher = copy.deepcopy(module)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def incompetent_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` with every weight re-initialised at random (an "incompetent teacher").

    Layers with a ``reset_parameters`` method (linear, BatchNorm, embedding layers) are reset with
    PyTorch's default initialisation, which is also how scvi-tools initialises them; BatchNorm
    running statistics return to mean 0 and variance 1. Parameters held directly by a module
    (scVI's gene dispersion ``px_r`` and similar) are drawn from a standard normal when their name
    ends in ``px_r`` (scvi-tools' own initialisation) and set to zero otherwise, so nothing learnt
    from the data survives. Randomness comes from torch's global generator, which
    :func:`scforget.unlearn` seeds with its ``seed``.
    """
    bad = copy.deepcopy(module)
    with torch.no_grad():
        for sub in bad.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
                continue
            for name, param in sub.named_parameters(recurse=False):
                if name.endswith("px_r"):
                    param.normal_()
                else:
                    param.zero_()
    bad.eval()
    bad.requires_grad_(False)
    return bad


def vae_outputs(module: nn.Module, tensors: dict, inference_outputs: dict | None = None) -> VAEOutputs:
    """Posterior and posterior-mean decoder output of ``module`` on ``tensors``.

    Pass ``inference_outputs`` from a forward pass already made to skip the encoder.
    """
    inf, gen = posterior_mean_forward(module, tensors, inference_outputs)
    n_counts = tensors[REGISTRY_KEYS.X_KEY].sum(-1)
    return VAEOutputs(qz=inf["qz"], px=gen["px"], inference=inf, n_counts=n_counts)


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, tensors: dict) -> VAEOutputs:
    """:func:`vae_outputs` of a frozen teacher, without gradients and in eval mode."""
    return vae_outputs(FrozenModules.on(teacher, tensors[REGISTRY_KEYS.X_KEY].device), tensors)


def posterior_kl(q: Normal, p: Normal) -> torch.Tensor:
    """Per-cell ``KL(q || p)`` between diagonal Gaussian posteriors (summed over latent dimensions)."""
    return kl_divergence(q, p).sum(-1)


def posterior_shift(q_teacher: Normal, q_student: Normal) -> torch.Tensor:
    """Per-cell squared Mahalanobis distance ``½·Σ (μ_S − μ_T)² / σ_T²`` between posterior means.

    This is ``KL(q_T || q_S)`` with the student's variance replaced by the teacher's: it grows only
    when the student's posterior *moves*, not when it merely sharpens (maximising the full KL can
    be done by shrinking the student's variance, which leaves reconstructions unchanged).
    """
    return 0.5 * ((q_student.loc - q_teacher.loc) ** 2 / q_teacher.scale.pow(2).clamp_min(_EPS)).sum(-1)


def _log_profile(px: torch.distributions.Distribution) -> torch.Tensor:
    log_mean = torch.log(px.mean.clamp_min(_EPS))
    return log_mean - torch.logsumexp(log_mean, dim=-1, keepdim=True)


def output_kl(px_p: torch.distributions.Distribution, px_q: torch.distributions.Distribution) -> torch.Tensor:
    """Per-cell ``KL(p || q)`` between the expression profiles of two decoder outputs.

    The profile is the decoder's mean divided by its sum over genes: for scVI's negative binomial
    with observed library size this is exactly the decoder's ``px_scale``, the softmax output that
    plays the role of a classifier's class probabilities in the distillation literature.
    """
    log_p, log_q = _log_profile(px_p), _log_profile(px_q)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def divergence(
    teacher: VAEOutputs,
    student: VAEOutputs,
    *,
    posterior_weight: float = 1.0,
    output_weight: float = 1.0,
    posterior: str = "kl",
) -> torch.Tensor:
    """Per-cell ``posterior_weight·D(q_T, q_S) + output_weight·n·KL(profile_T || profile_S)``.

    ``D`` is ``KL(q_T || q_S)`` with ``posterior="kl"`` and :func:`posterior_shift` with
    ``posterior="shift"``. The profile KL is multiplied by the cell's total count ``n``: ``n``
    times the categorical KL is the KL between the two multinomial count distributions with the
    observed library size, i.e. the expected difference in log-likelihood of the cell's counts
    (in nats per cell, the scale of the negative ELBO). Without it the output term of a cell with
    thousands of counts would be a small fraction of a nat and the posterior term would dominate.
    """
    div = torch.zeros((), device=student.qz.loc.device)
    if posterior_weight:
        post = posterior_kl(teacher.qz, student.qz) if posterior == "kl" else posterior_shift(teacher.qz, student.qz)
        div = div + posterior_weight * post
    if output_weight:
        div = div + output_weight * teacher.n_counts * output_kl(teacher.px, student.px)
    return div


@dataclass(frozen=True)
class Divergence:
    """:func:`divergence` with fixed weights, as a plan uses it (both weights zero is refused)."""

    posterior_weight: float = 1.0
    output_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.posterior_weight == 0 and self.output_weight == 0:
            raise ValueError("`posterior_weight` and `output_weight` are both 0; the divergence would be empty.")

    def __call__(self, teacher: VAEOutputs, student: VAEOutputs, posterior: str = "kl") -> torch.Tensor:
        """Per-cell divergence of ``student`` from ``teacher``."""
        return divergence(
            teacher,
            student,
            posterior_weight=float(self.posterior_weight),
            output_weight=float(self.output_weight),
            posterior=posterior,
        )


#: Docstring fragment of the distillation plans' last parameters.
DOC_DISTILL_TAIL = """\
    clip_grad_norm
        Gradient-norm clip of every step.
    **kwargs
        ``posterior_weight`` and ``output_weight`` of the divergence (both 1 by default), and the
        arguments of :class:`~scforget.train.UnlearningTrainingPlan`."""


class DistillationPlan(UnlearningTrainingPlan):
    """Shared base of the plans that compare the model (student) with frozen teachers cell by cell.

    Student and teacher are compared by ``posterior_weight·KL(q_T(z|x) || q_S(z|x)) +
    output_weight·n·KL(profile_T(x) || profile_S(x))`` (see :class:`Divergence`), held in
    ``self.divergence``.

    Parameters
    ----------
    module
        The model's module (the student).
    posterior_weight
        Weight of the posterior KL in the divergence.
    output_weight
        Weight of the decoder-profile KL in the divergence.
    **kwargs
        See :class:`~scforget.train.UnlearningTrainingPlan`.
    """

    def __init__(
        self, module, *, posterior_weight: NonNegativeFloat = 1.0, output_weight: NonNegativeFloat = 1.0, **kwargs
    ):
        divergence = Divergence(posterior_weight, output_weight)  # refuses two zero weights before any set-up
        super().__init__(module, **kwargs)
        self.divergence = divergence


class ForgetCeiling:
    """Bound on how far an ascent may push the forget loss.

    The ceiling is ``ratio`` times the forget loss of the first forget minibatch (measured before
    any update). :meth:`bounded` returns the loss clamped at the ceiling, whose gradient is zero
    once the ceiling is passed, so an ascent term cannot diverge; :meth:`reached` tells a plan to
    skip an ascent step (an Adam step on a zero gradient would still move the weights).

    Parameters
    ----------
    ratio
        Ceiling as a multiple of the starting forget loss; ``None`` disables the bound.
    """

    def __init__(self, ratio: float | None):
        self.ratio = ratio
        self.reference: float | None = None

    @property
    def value(self) -> float:
        """The ceiling (``inf`` without a bound or before the first batch)."""
        if self.ratio is None or self.reference is None:
            return float("inf")
        return self.ratio * self.reference

    def observe(self, loss: torch.Tensor) -> None:
        """Record the starting forget loss on the first call."""
        if self.reference is None:
            self.reference = float(loss.detach())

    def reached(self, loss: torch.Tensor) -> bool:
        """Whether ``loss`` is at or above the ceiling."""
        self.observe(loss)
        return float(loss.detach()) >= self.value

    def bounded(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` clamped at the ceiling."""
        self.observe(loss)
        return loss.clamp(max=self.value) if self.value < float("inf") else loss
