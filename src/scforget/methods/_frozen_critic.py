"""Frozen membership critics: fine-tune the VAE until pre-trained critics call forget cells non-members."""

from __future__ import annotations

import torch

from scforget._core import eval_mode

from ._critic_plan import CriticTrainingPlan, register_critic_method
from ._critics import membership_features
from ._hyperparams import NonNegativeFloat, PositiveFloat


class FrozenCriticPlan(CriticTrainingPlan):
    r"""Fine-tune the VAE against one or several frozen membership critics.

    Before training, critics (small MLPs on standardised :func:`membership features
    <scforget.methods._critics.membership_features>`) are fitted on the input model to separate the
    forget cells (members) from never-trained cells (non-members), then frozen. Each step minimises

    .. math::

        \mathcal{L} = \mathrm{NELBO}(\theta; R) + \lambda\, s \max_k
            \mathrm{BCE}\big(c_k(\phi_\theta(x_F)), 0\big),

    the model's own training objective on a retain minibatch (same scale as training; the reference
    study's utility term was mis-scaled against its privacy term) plus the largest binary cross-entropy, over the
    critics, of labelling the forget minibatch "non-member" (the reference study's multi-critic
    objective, section 3.7). :math:`s` is the input model's mean per-cell NELBO on the forget cells, so
    that ``privacy_weight`` (:math:`\lambda`) is dimensionless; unlike the study, :math:`\lambda`
    weighs the privacy term. Features of forget cells are computed with the module in eval mode
    (BatchNorm statistics untouched, no dropout), i.e. exactly as an auditor sees them.

    This method is kept as a documented negative result: the reference study found that frozen critics
    are easy to fool without removing membership signal, because the VAE moves the forget cells into
    the critics' blind spots and a fresh attacker still finds them. Use
    :class:`~scforget.train.ExtraGradientPlan` (trainable critics) or audit the result with
    :func:`scforget.audit`.

    Parameters
    ----------
    module
        The model's module.
    lr
        Learning rate of the VAE.
    privacy_weight
        :math:`\lambda`, the weight of the privacy term relative to the utility term.
    clip_grad_norm
        Gradient-norm clip of every step.
    **kwargs
        The critic hyper-parameters of :class:`~scforget.methods._critic_plan.CriticTrainingPlan`
        (``critics``, ``critic_hidden``, ``spectral_norm``, ``critic_pretrain_steps``, ``nonmembers``,
        ``match_nonmembers``, ``nonmember_batch_size``) and those of
        :class:`~scforget.train.UnlearningTrainingPlan`.

    Notes
    -----
    Source: the reference study (``fishing-for-privacy``, section 3.7 of the spec), with the
    corrections listed there: NB likelihood with library size, the training objective as utility,
    standardised critic features, never-trained non-members matched to the forget cells.
    """

    def __init__(
        self,
        module,
        *,
        lr: PositiveFloat = 1e-3,
        privacy_weight: NonNegativeFloat = 1.0,
        clip_grad_norm: PositiveFloat | None = 100.0,
        **kwargs,
    ):
        super().__init__(module, lr=lr, privacy_weight=privacy_weight, clip_grad_norm=clip_grad_norm, **kwargs)

    def training_step(self, batch, batch_idx):
        """Retain NELBO plus the largest critic loss of calling forget cells non-members."""
        self.require_cells()
        retain, forget = self.begin_step(batch)
        _, _, out = self.retain_loss(retain)
        with eval_mode(self.module):
            feats = membership_features(self.module, forget)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        privacy = torch.stack([bce(logit, torch.zeros_like(logit)) for logit in self.critic_logits(feats)]).max()
        loss = out.loss + self.privacy_weight * self.loss_scale * privacy
        with torch.no_grad():
            _, _, out_f = self.forget_loss(forget)
        n = self.batch_size_of(retain)
        self.track("retain_loss", out.loss, n)
        self.track("forget_loss", out_f.loss, self.batch_size_of(forget))
        self.track("privacy_loss", privacy, self.batch_size_of(forget))
        return loss


register_critic_method(
    "frozen_critic",
    FrozenCriticPlan,
    description="Fine-tune against frozen pre-trained membership critics (negative result: critic blind spots).",
    reference="fishing-for-privacy (reference study, section 3.7)",
)
