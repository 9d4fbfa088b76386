"""Gradient ascent on the forget cells, then fine-tuning on the retain cells."""

from __future__ import annotations

from typing import ClassVar

from ._base import UnlearningTrainingPlan
from ._distill import ForgetCeiling
from ._hyperparams import AboveOne, PositiveFloat, PositiveInt
from ._registry import register


class GradientAscentPlan(UnlearningTrainingPlan):
    """Ascend the negative ELBO on forget cells for a bounded budget, then fine-tune on retain cells.

    The first ``ascent_steps`` optimisation steps each take one forget minibatch and move the
    weights *up* the model's own training objective (negative ELBO, observed library size) with
    Adam at ``ascent_lr``; the retain minibatch of those steps is not trained on. The ascent is
    bounded three ways: the number of steps, the gradient norm (``clip_grad_norm``) and a ceiling
    on the forget loss (``forget_bound`` times its starting value) past which ascent steps are
    skipped. All remaining steps of the epoch budget fine-tune on retain cells with a separate Adam
    at ``lr`` (so ascent momentum does not leak into fine-tuning). BatchNorm statistics never see
    forget cells.

    Parameters
    ----------
    module
        The model's module.
    lr
        Learning rate of the retain fine-tuning.
    ascent_steps
        Number of ascent steps (one forget minibatch each).
    ascent_lr
        Learning rate of the ascent (``None``: ``lr``).
    forget_bound
        Stop ascending once the forget loss reaches this multiple of its starting value (``None``:
        only the step budget bounds the ascent).
    finetune
        Fine-tune on retain cells after the ascent; with ``False`` training stops once the ascent
        budget is spent.
    clip_grad_norm
        Gradient-norm clip of every step.
    **kwargs
        See :class:`~scforget.train.UnlearningTrainingPlan`.

    Notes
    -----
    Per-epoch ``forget_loss`` and ``retain_loss`` (negative ELBO, retain values measured without
    updates during the ascent) are recorded, plus ``ascent_steps`` taken per epoch. The reference
    study's variant (10 plain-SGD steps at lr 1e-5) was too small to change the model at all. The
    defaults (20 Adam steps at lr 1e-3, ceiling 1.5×) were checked on pbmc3k with the DC forget set
    to raise the forget loss clearly (by tens of percent, more than retraining would: ascent can
    overshoot, which a membership audit may detect); they are not tuned against an audit.

    References
    ----------
    Gradient ascent ("negative gradient", NegGrad) as an unlearning baseline:
    :cite:p:`Golatkar2020`, :cite:p:`Kurmanji2023`; followed by retain fine-tuning
    as in the reference study (spec section 3.2) and the NeurIPS 2023 unlearning challenge
    :cite:p:`Triantafillou2024`.
    """

    manual_optimization: ClassVar[bool] = True

    def __init__(
        self,
        module,
        *,
        lr: PositiveFloat = 1e-3,
        ascent_steps: PositiveInt = 20,
        ascent_lr: PositiveFloat | None = None,
        forget_bound: AboveOne | None = 1.5,
        finetune: bool = True,
        clip_grad_norm: PositiveFloat | None = 1.0,
        **kwargs,
    ):
        super().__init__(module, lr=lr, clip_grad_norm=clip_grad_norm, **kwargs)
        self.ascent_steps = int(ascent_steps)
        self.ascent_lr = lr if ascent_lr is None else ascent_lr
        self.second_lr = self.ascent_lr  # the ascent's own optimiser
        self.finetune = bool(finetune)
        self.ceiling = ForgetCeiling(forget_bound)
        self._ascent_seen = 0

    def training_step(self, batch, batch_idx):
        """An ascent step while the ascent budget lasts, a retain step afterwards."""
        retain, forget = self.begin_step(batch)
        opt_retain, opt_ascent = self.optimizers()
        n_r, n_f = self.batch_size_of(retain), self.batch_size_of(forget)
        if self._ascent_seen < self.ascent_steps:
            self._ascent_seen += 1
            _, _, out = self.forget_loss(forget)
            taken = not self.ceiling.reached(out.loss)
            if taken:
                self.manual_step(opt_ascent, -out.loss)
            self.track("forget_loss", out.loss, n_f)
            self.track("retain_loss", self.monitor_loss(retain), n_r)
            self.track("ascent_steps", float(taken), 1, reduce="sum")
            return None
        if not self.finetune:
            self.trainer.should_stop = True
            return None
        _, _, out = self.retain_loss(retain)
        self.manual_step(opt_retain, out.loss)
        self.track("ascent_steps", 0.0, 1, reduce="sum")
        self.track("retain_loss", out.loss, n_r)
        self.track("forget_loss", self.monitor_loss(forget), n_f)
        return None


register(
    "gradient_ascent",
    plan=GradientAscentPlan,
    description="Bounded gradient ascent on forget cells, then retain fine-tuning (default: 10% of training epochs).",
    reference="Golatkar2020; Kurmanji2023",
    default_epochs=lambda e: max(2, round(0.1 * e)),
)
