"""The NegGrad+ plan: descend on retain cells and ascend on forget cells in one joint loss.

Shared by ``neggrad_plus`` and ``calibrated_neggrad`` (which differ in their ceiling).
"""

from __future__ import annotations

from ._base import UnlearningTrainingPlan
from ._distill import ForgetCeiling
from ._hyperparams import AboveOne, NonNegativeFloat, PositiveFloat


class NegGradPlusPlan(UnlearningTrainingPlan):
    """Minimise ``retain_loss − λ·min(forget_loss, ceiling)`` on paired retain/forget minibatches.

    Every step pairs a retain minibatch with a forget minibatch and takes one Adam step on the
    joint loss. Both losses are the model's own training objective (negative ELBO with the
    observed library size, mean over cells). The forget term is clamped at ``forget_bound`` times
    its starting value: past that ceiling its gradient is zero and the step is plain retain
    fine-tuning, so the ascent cannot diverge (the negative-binomial likelihood of a cell can be
    driven to zero, which an unbounded ascent would chase). BatchNorm statistics never see forget
    cells.

    Parameters
    ----------
    module
        The model's module.
    lr
        Learning rate of Adam.
    lam
        Weight λ of the forget (ascent) term.
    forget_bound
        Ceiling of the forget term as a multiple of its starting value (``None``: unbounded, as in
        the published method).
    clip_grad_norm
        Gradient-norm clip of every step.
    **kwargs
        See :class:`~scforget.train.UnlearningTrainingPlan`.

    Notes
    -----
    Records per-epoch ``forget_loss``, ``retain_loss`` and ``objective`` (the joint loss). The
    default λ = 0.1 is the value of the NeurIPS 2023 challenge report.

    References
    ----------
    NegGrad+ :cite:p:`Kurmanji2023`; the "advanced NegGrad" of :cite:p:`Choi2023`
    with the λ weighting and λ = 0.1 of :cite:p:`Suprun2023` (NeurIPS 2023 unlearning
    challenge report).
    """

    def __init__(
        self,
        module,
        *,
        lr: PositiveFloat = 1e-3,
        lam: NonNegativeFloat = 0.1,
        forget_bound: AboveOne | None = 1.5,
        clip_grad_norm: PositiveFloat | None = 1.0,
        **kwargs,
    ):
        super().__init__(module, lr=lr, clip_grad_norm=clip_grad_norm, **kwargs)
        self.lam = float(lam)
        self.ceiling = ForgetCeiling(forget_bound)

    def training_step(self, batch, batch_idx):
        """One step on the joint loss."""
        retain, forget = self.begin_step(batch)
        _, _, r_out = self.retain_loss(retain)
        _, _, f_out = self.forget_loss(forget)
        loss = r_out.loss - self.lam * self.ceiling.bounded(f_out.loss)
        self.track("retain_loss", r_out.loss, self.batch_size_of(retain))
        self.track("forget_loss", f_out.loss, self.batch_size_of(forget))
        self.track("objective", loss, self.batch_size_of(retain))
        return loss
