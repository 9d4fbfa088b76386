"""SCRUB (Kurmanji et al. 2023) for a VAE: alternating bounded max-steps and min-steps against a teacher."""

from __future__ import annotations

from typing import ClassVar, Literal

from scforget._core import doc_params, frozen_batchnorm

from ._distill import DOC_DISTILL_TAIL, DistillationPlan, FrozenModules, frozen_copy, teacher_outputs, vae_outputs
from ._hyperparams import NonNegativeFloat, NonNegativeInt, PositiveFloat
from ._registry import register


@doc_params(distill_tail=DOC_DISTILL_TAIL)
class SCRUBPlan(DistillationPlan):
    """SCRUB: a student that moves away from its teacher on forget cells and stays close on retain cells.

    The student is the model, the teacher a frozen copy of it taken before unlearning. Student and
    teacher are compared per cell by ``d = posterior_weight·KL(q_T(z|x) || q_S(z|x)) +
    output_weight·n·KL(profile_T(x) || profile_S(x))``, the KL between the encoders' Gaussian
    posteriors plus the KL between the decoders' count distributions (expression profiles, times the
    cell's total count ``n``) (see
    the divergence of the distillation methods). Following the published schedule, each
    training step makes

    - a **max-step** (only during the first ``max_steps_epochs`` epochs): maximise the mean over
      the forget minibatch of ``min(d, forget_bound)`` (with the posterior term chosen by
      ``max_posterior``), with BatchNorm statistics frozen; cells
      whose divergence already reached ``forget_bound`` stop contributing, so the max objective
      is bounded (the reference study's unbounded max-KL reached −5,182);
    - a **min-step**: minimise ``alpha·mean d + gamma·negative ELBO`` on the retain minibatch.

    Max- and min-steps use separate optimisers (``max_lr`` and ``lr``; Adam unless ``optimizer`` says
    otherwise) so that the momentum of one never drives the other. After the max-step epochs the remaining epochs are min-steps only,
    which repairs retain performance (the paper's remedy for the max-steps' collateral damage); no
    separate fine-tuning phase follows.

    Parameters
    ----------
    module
        The model's module (the student).
    lr
        Learning rate of the min-steps.
    max_lr
        Learning rate of the max-steps (``None``: ``lr``).
    alpha
        Weight of the teacher divergence on retain cells.
    gamma
        Weight of the negative ELBO on retain cells.
    max_steps_epochs
        Number of leading epochs that include max-steps.
    forget_bound
        Per-cell cap (in nats) of the divergence maximised on forget cells.
    max_posterior
        Posterior term of the max-step divergence: ``"shift"`` (default) measures how far the
        student's posterior mean moved, in units of the teacher's posterior standard deviation
        (:func:`~scforget.methods._distill.posterior_shift`); ``"kl"`` uses the full KL, which the
        student can also grow by merely sharpening its posterior without changing what it
        reconstructs (on pbmc3k/DC, 25-epoch model, 4 epochs: forget NLL +0.9% with ``"shift"``,
        +0.6% with ``"kl"``). Min-steps always use the full KL.
    {distill_tail}

    Notes
    -----
    Records per-epoch ``forget_loss`` and ``retain_loss`` (negative ELBO), ``forget_divergence``
    (mean uncapped divergence on forget cells) and ``retain_divergence``. SCRUB+R (rewinding to a
    checkpoint chosen on a validation forget set) is not implemented. Departure from the paper's
    loop: instead of one full pass over the forget set before each max-step epoch's retain pass,
    every step of a max-step epoch makes one max-step on the paired forget minibatch (the forget
    set is cycled), so the number of max-steps per epoch is the number of retain minibatches; the
    per-cell bound keeps this from overshooting.

    References
    ----------
    :cite:p:`Kurmanji2023`
    """

    manual_optimization: ClassVar[bool] = True

    def __init__(
        self,
        module,
        *,
        lr: PositiveFloat = 1e-3,
        max_lr: PositiveFloat | None = None,
        alpha: NonNegativeFloat = 1.0,
        gamma: NonNegativeFloat = 1.0,
        max_steps_epochs: NonNegativeInt = 3,
        forget_bound: PositiveFloat = 25.0,
        max_posterior: Literal["shift", "kl"] = "shift",
        clip_grad_norm: PositiveFloat | None = 1.0,
        **kwargs,
    ):
        super().__init__(module, lr=lr, clip_grad_norm=clip_grad_norm, **kwargs)
        self.max_lr = lr if max_lr is None else max_lr
        self.second_lr = self.max_lr  # the max-steps' own optimiser
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.max_steps_epochs = int(max_steps_epochs)
        self.forget_bound = float(forget_bound)
        self.max_posterior = max_posterior
        self.teachers = FrozenModules(teacher=frozen_copy(module))

    def training_step(self, batch, batch_idx):
        """A max-step (early epochs only) followed by a min-step."""
        retain, forget = self.begin_step(batch)
        opt_min, opt_max = self.optimizers()
        n_r, n_f = self.batch_size_of(retain), self.batch_size_of(forget)

        if self.current_epoch < self.max_steps_epochs:
            with self.forget_context():
                d_f = self.divergence(
                    teacher_outputs(self.teachers.teacher, forget),
                    vae_outputs(self.module, forget),
                    posterior=self.max_posterior,
                )
            capped = d_f.clamp(max=self.forget_bound)
            if bool((d_f < self.forget_bound).any()):
                self.manual_step(opt_max, -capped.mean())
            self.track("forget_divergence", d_f.mean(), n_f)

        inf, _, out = self.retain_loss(retain)
        with frozen_batchnorm(self.module):  # the ELBO forward above already updated the statistics
            student = vae_outputs(self.module, retain, inference_outputs=inf)
        d_r = self.divergence(teacher_outputs(self.teachers.teacher, retain), student)
        self.manual_step(opt_min, self.alpha * d_r.mean() + self.gamma * out.loss)
        self.track("retain_divergence", d_r.mean(), n_r)
        self.track("retain_loss", out.loss, n_r)
        self.track("forget_loss", self.monitor_loss(forget), n_f)
        return None


register(
    "scrub",
    plan=SCRUBPlan,
    description="SCRUB: bounded max-steps away from a frozen teacher on forget cells, min-steps towards it on "
    "retain cells (default: 10% of training epochs).",
    reference="Kurmanji2023",
    default_epochs=lambda e: max(4, round(0.1 * e)),
)
