"""Competent/incompetent teachers ("bad teacher", Chundawat et al. 2023) for a VAE."""

from __future__ import annotations

import math
from typing import Literal

import torch

from scforget._core import doc_params

from ._distill import (
    DOC_DISTILL_TAIL,
    DistillationPlan,
    FrozenModules,
    frozen_copy,
    incompetent_copy,
    teacher_outputs,
    vae_outputs,
)
from ._hyperparams import Fraction, PositiveFloat
from ._registry import register


@doc_params(distill_tail=DOC_DISTILL_TAIL)
class BadTeacherPlan(DistillationPlan):
    """A student distilled from a competent teacher on retain cells and an incompetent one on forget cells.

    The student is the model; the competent teacher is a frozen copy of it taken before
    unlearning, the incompetent teacher a frozen, randomly re-initialised module of the same
    architecture (every layer re-initialised as PyTorch does; its randomness follows ``unlearn(seed=...)``). Each step takes a subset of the retain minibatch and the forget
    minibatch, stacks them into one batch as in the paper, and minimises the mean over that batch
    of ``posterior_weight·KL(q_T(z|x) || q_S(z|x)) + output_weight·n·KL(profile_T(x) || profile_S(x))``,
    where ``T`` is the competent teacher for retain cells and the incompetent one for forget
    cells (posterior KL plus KL between the decoders' expression profiles). Both terms are KL
    divergences to fixed targets, so the objective is bounded below and cannot diverge. Forget
    forwards never touch BatchNorm statistics.

    Parameters
    ----------
    module
        The model's module (the student).
    lr
        Learning rate of Adam.
    retain_fraction
        Fraction of each retain minibatch used (the paper distils on a retain subset, about 30%).
    retain_sampling
        ``"random"``: a random subset of each retain minibatch. ``"similar"``: the retain cells of
        the minibatch closest to any forget cell of the paired forget minibatch in the competent
        teacher's latent space (posterior means, Euclidean), following the similarity-based
        sampling of the NeurIPS 2023 challenge entries.
    {distill_tail}

    Notes
    -----
    The retain subset is drawn per minibatch, so over an epoch the student sees a fresh
    ``retain_fraction`` of the retain cells rather than the paper's one fixed subset; the
    similarity-based option selects within minibatches rather than over the whole retain set
    (both are approximations, chosen so that the cost stays one pass over the retain loader per
    epoch). Records per-epoch ``forget_loss`` and ``retain_loss`` (negative ELBO, measured without
    updates), ``forget_divergence`` (to the incompetent teacher) and ``retain_divergence`` (to the
    competent one).

    References
    ----------
    :cite:p:`Chundawat2023`; similarity-based sampling as described in
    :cite:p:`Suprun2023`.
    """

    def __init__(
        self,
        module,
        *,
        lr: PositiveFloat = 1e-3,
        retain_fraction: Fraction = 0.3,
        retain_sampling: Literal["random", "similar"] = "random",
        clip_grad_norm: PositiveFloat | None = 1.0,
        **kwargs,
    ):
        super().__init__(module, lr=lr, clip_grad_norm=clip_grad_norm, **kwargs)
        self.retain_fraction = float(retain_fraction)
        self.retain_sampling = retain_sampling
        self.teachers = FrozenModules(competent=frozen_copy(module), incompetent=incompetent_copy(module))

    def _subset(self, retain: dict, forget: dict) -> dict:
        n = self.batch_size_of(retain)
        k = max(3, math.ceil(self.retain_fraction * n)) if n >= 3 else n
        if k >= n:
            return retain
        if self.retain_sampling == "random":
            idx = torch.randperm(n, device=retain["X"].device)[:k]
        else:
            t_r = teacher_outputs(self.teachers.competent, retain).qz.loc
            t_f = teacher_outputs(self.teachers.competent, forget).qz.loc
            idx = torch.cdist(t_r, t_f).min(dim=1).values.topk(k, largest=False).indices
        return {
            key: (v[idx] if isinstance(v, torch.Tensor) and v.shape[:1] == (n,) else v) for key, v in retain.items()
        }

    def training_step(self, batch, batch_idx):
        """One distillation step on a retain subset stacked with the forget minibatch."""
        retain, forget = self.begin_step(batch)
        n_r, n_f = self.batch_size_of(retain), self.batch_size_of(forget)
        sub = self._subset(retain, forget)
        d_r = self.divergence(teacher_outputs(self.teachers.competent, sub), vae_outputs(self.module, sub))
        with self.forget_context():
            d_f = self.divergence(teacher_outputs(self.teachers.incompetent, forget), vae_outputs(self.module, forget))
        loss = torch.cat([d_r, d_f]).mean()
        self.track("retain_divergence", d_r.mean(), d_r.shape[0])
        self.track("forget_divergence", d_f.mean(), n_f)
        self.track("retain_loss", self.monitor_loss(retain), n_r)
        self.track("forget_loss", self.monitor_loss(forget), n_f)
        return loss


register(
    "bad_teacher",
    plan=BadTeacherPlan,
    description="Distil from the original model on retain cells and from a random model on forget cells "
    "(default: 10% of training epochs).",
    reference="Chundawat2023",
)
