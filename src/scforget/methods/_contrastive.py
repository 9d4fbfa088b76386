"""Contrastive latent unlearning: forget posteriors to the prior and away from retain neighbours."""

from __future__ import annotations

import torch
from torch.distributions import Normal

from scforget._core import frozen_batchnorm

from ._base import UnlearningTrainingPlan
from ._distill import FrozenModules, frozen_copy, posterior_kl, teacher_outputs
from ._hyperparams import NonNegativeFloat, PositiveFloat, PositiveInt
from ._registry import register


class ContrastivePlan(UnlearningTrainingPlan):
    """Move forget cells' posteriors to the prior and away from their retain neighbours; anchor retain cells.

    Each step pairs a retain minibatch with a forget minibatch and minimises

    ``prior_weight · mean_f KL(q(z|x_f) || N(0, I))``
      pulls every forget posterior onto the prior, i.e. the encoder stops placing forget cells
      anywhere specific (bounded below by 0, so it cannot diverge);
    ``+ repel_weight · mean_f,k relu(margin − ‖μ(x_f) − μ(x_r,k)‖)``
      a hinge that pushes each forget cell's posterior mean at least ``margin`` (latent units)
      away from its ``n_neighbors`` nearest retain cells of the minibatch (neighbours chosen in
      the original model's latent space; retain means are not moved by this term), bounded by
      ``margin``;
    ``+ anchor_weight · mean_r KL(q_0(z|x_r) || q(z|x_r))``
      keeps retain posteriors where the original model ``q_0`` (a frozen copy) put them;
    ``+ retain_weight · negative ELBO on retain cells``
      keeps the model fitting the retain cells.

    With ``encoder_only=True`` only the encoder of ``z`` is optimised (and only its BatchNorm
    statistics follow the retain cells); the decoder stays the original one. Forget forwards never
    touch BatchNorm statistics.

    Parameters
    ----------
    module
        The model's module.
    lr
        Learning rate of Adam.
    prior_weight
        Weight of the pull of forget posteriors to the prior.
    repel_weight
        Weight of the hinge repelling forget cells from their retain neighbours.
    margin
        Hinge margin in latent units.
    n_neighbors
        Retain neighbours per forget cell (within the minibatch).
    anchor_weight
        Weight of the retain posterior anchor to the original model.
    retain_weight
        Weight of the retain negative ELBO.
    encoder_only
        Optimise the encoder of ``z`` only.
    clip_grad_norm
        Gradient-norm clip of every step.
    **kwargs
        See :class:`~scforget.train.UnlearningTrainingPlan`.

    Notes
    -----
    Records per-epoch ``forget_loss``, ``retain_loss`` (negative ELBO), ``prior_kl``, ``repel``,
    ``anchor`` and ``objective``. The reference study's version had a sign mismatch between
    documentation and code, and an encoder-only phase followed by a full fine-tune that undid it;
    here the objective is exactly the one above, in one phase, with the sign stated.

    References
    ----------
    Latent-space contrastive unlearning in the spirit of :cite:p:`Lee2024` and the
    contrastive fine-tuning entry of the NeurIPS 2023 challenge :cite:p:`Suprun2023`.
    """

    def __init__(
        self,
        module,
        *,
        lr: PositiveFloat = 1e-3,
        prior_weight: NonNegativeFloat = 1.0,
        repel_weight: NonNegativeFloat = 1.0,
        margin: PositiveFloat = 1.0,
        n_neighbors: PositiveInt = 5,
        anchor_weight: NonNegativeFloat = 1.0,
        retain_weight: NonNegativeFloat = 1.0,
        encoder_only: bool = False,
        clip_grad_norm: PositiveFloat | None = 1.0,
        **kwargs,
    ):
        if encoder_only and not hasattr(module, "z_encoder"):
            raise ValueError(
                f"`encoder_only=True` needs a module with a `z_encoder`; {type(module).__name__} has none. "
                "Use encoder_only=False."
            )
        super().__init__(module, lr=lr, clip_grad_norm=clip_grad_norm, **kwargs)
        self.prior_weight, self.repel_weight = float(prior_weight), float(repel_weight)
        self.anchor_weight, self.retain_weight = float(anchor_weight), float(retain_weight)
        self.margin, self.n_neighbors = float(margin), int(n_neighbors)
        self.encoder_only = bool(encoder_only)
        self.teachers = FrozenModules(teacher=frozen_copy(module))

    def _retain_forward(self, retain):
        if self.encoder_only:
            with frozen_batchnorm(self.module, keep=self.module.z_encoder):
                return self.retain_loss(retain)
        return self.retain_loss(retain)

    def training_step(self, batch, batch_idx):
        """One step on the contrastive objective."""
        retain, forget = self.begin_step(batch)
        n_r, n_f = self.batch_size_of(retain), self.batch_size_of(forget)

        inf_r, _, r_out = self._retain_forward(retain)
        inf_f, _, f_out = self.forget_loss(forget)
        qz_f = inf_f["qz"]
        qz_r = inf_r["qz"]
        t_r = teacher_outputs(self.teachers.teacher, retain)
        t_f = teacher_outputs(self.teachers.teacher, forget)

        prior = Normal(torch.zeros_like(qz_f.loc), torch.ones_like(qz_f.scale))
        prior_kl = posterior_kl(qz_f, prior).mean()
        k = min(self.n_neighbors, n_r)
        nearest = torch.cdist(t_f.qz.loc, t_r.qz.loc).topk(k, dim=1, largest=False).indices  # (n_f, k)
        gap = (qz_f.loc.unsqueeze(1) - qz_r.loc.detach()[nearest]).norm(dim=-1)
        repel = torch.relu(self.margin - gap).mean()
        anchor = posterior_kl(t_r.qz, qz_r).mean()
        loss = (
            self.prior_weight * prior_kl
            + self.repel_weight * repel
            + self.anchor_weight * anchor
            + self.retain_weight * r_out.loss
        )
        self.track("retain_loss", r_out.loss, n_r)
        self.track("forget_loss", f_out.loss, n_f)
        self.track("prior_kl", prior_kl, n_f)
        self.track("repel", repel, n_f)
        self.track("anchor", anchor, n_r)
        self.track("objective", loss, n_r)
        return loss

    def setup(self, stage: str) -> None:
        """With ``encoder_only``, stop gradients outside the encoder of ``z`` before the optimiser is made."""
        super().setup(stage)
        self._frozen = []
        if self.encoder_only:
            keep = {id(p) for p in self.module.z_encoder.parameters()}
            self._frozen = [p for p in self.module.parameters() if p.requires_grad and id(p) not in keep]
            for p in self._frozen:
                p.requires_grad_(False)

    def teardown(self, stage: str) -> None:
        """Restore ``requires_grad`` on the parameters frozen by :meth:`setup` (also after a failed run)."""
        for p in getattr(self, "_frozen", []):
            p.requires_grad_(True)
        self._frozen = []
        super().teardown(stage)


register(
    "contrastive",
    plan=ContrastivePlan,
    description="Forget posteriors to the prior and away from retain neighbours, retain posteriors anchored to "
    "the original model (default: 10% of training epochs).",
    reference="Lee2024; Suprun2023",
)
