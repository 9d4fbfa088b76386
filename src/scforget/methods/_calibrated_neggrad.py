"""NegGrad+ with a calibrated ceiling: ascend on the forget cells only as far as never-trained look-alikes sit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from scforget._core import eval_mode, minibatches, negative_elbo

from ._context import UnlearnContext
from ._critic_plan import plan_defaults, posterior_means, select_nonmembers
from ._distill import ForgetCeiling
from ._hyperparams import NonNegativeFloat, PositiveFloat, PositiveInt
from ._joint_ascent import NegGradPlusPlan
from ._registry import register
from ._runner import run_training_plan

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: Retain cells searched for the calibration cells' training twins (a random subset bounds the cost).
MAX_TWIN_POOL = 4000


class CalibratedNegGradPlan(NegGradPlusPlan):
    """NegGrad+ whose forget ceiling is the generalisation gap measured on never-trained look-alikes.

    NegGrad+ with a fixed ceiling (1.5x the starting forget loss) overshoots: the forget cells end up
    fitting worse than never-trained cells of their kind, which the loss attack sees (the Streisand
    effect). Here the ceiling is ``gap`` times the starting forget loss, where ``gap`` is measured on
    the input model before any update: calibration cells (never trained, by default the model's
    validation cells, the ``match_calibration`` nearest to each forget cell in latent space) against
    their nearest retain cells (their training twins), as the ratio of mean negative ELBOs. The
    ascent stops once the forget cells are as poorly fitted as a never-trained cell of their kind is
    relative to a trained one; retain fine-tuning continues for the rest of the budget.

    The calibration cells must not be the cells an audit uses as non-members; the model's
    validation cells, the default, never are (scforget's splits keep validation apart).

    Parameters
    ----------
    module
        The model's module.
    lr
        Learning rate of Adam.
    lam
        Weight λ of the forget (ascent) term.
    calibration
        Never-trained cells to calibrate on; ``None`` uses the model's validation cells.
    match_calibration
        Keep the union of this many nearest calibration cells per forget cell (``None``: all).
    clip_grad_norm
        Gradient-norm clip of every step.
    **kwargs
        See :class:`~scforget.train.UnlearningTrainingPlan`.

    Notes
    -----
    Records the measured ``calibrated_gap``, the number and source of calibration cells, and the
    per-epoch losses of NegGrad+.

    References
    ----------
    NegGrad+ :cite:p:`Kurmanji2023`; the calibration to never-trained cells of the same kind follows
    the retrain-distribution view of :cite:p:`Triantafillou2024` (forgetting quality).
    """

    def __init__(
        self,
        module,
        *,
        lr: PositiveFloat = 1e-3,
        lam: NonNegativeFloat = 0.1,
        calibration=None,
        match_calibration: PositiveInt | None = 10,
        clip_grad_norm: PositiveFloat | None = 1.0,
        **kwargs,
    ):
        # `calibration` and `match_calibration` are read by the method's runner, which measures the gap
        # before training and hands it to :meth:`calibrate`; the plan itself only needs the gap
        super().__init__(module, lr=lr, lam=lam, forget_bound=None, clip_grad_norm=clip_grad_norm, **kwargs)
        self.calibration_info: dict[str, Any] = {}

    def calibrate(self, gap: float, info: dict[str, Any]) -> None:
        """Set the ceiling to ``gap`` times the starting forget loss (``gap`` <= 1: no ascent at all)."""
        self.ceiling = ForgetCeiling(max(float(gap), 1.0))
        self.calibration_info = {"calibrated_gap": float(gap), **info}

    def run_info(self) -> dict[str, Any]:
        """What goes into the unlearning record."""
        return dict(self.calibration_info)


def _negative_elbo(model: BaseModelClass, positions: np.ndarray) -> np.ndarray:
    device = next(model.module.parameters()).device
    out = []
    with torch.no_grad(), eval_mode(model.module):
        for tensors in minibatches(model, positions, batch_size=512, device=device):
            out.append(negative_elbo(model.module, tensors).cpu().numpy())
    return np.concatenate(out)


def calibration_twins(model: BaseModelClass, ctx: UnlearnContext, pool: np.ndarray) -> np.ndarray:
    """The nearest retain cell (posterior means) of every calibration cell."""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(ctx.seed)
    retain = np.asarray(ctx.retain, dtype=np.int64)
    if retain.size > MAX_TWIN_POOL:
        retain = np.sort(rng.choice(retain, size=MAX_TWIN_POOL, replace=False))
    device = next(model.module.parameters()).device
    nn_ = NearestNeighbors(n_neighbors=1).fit(posterior_means(model, retain, device))
    return retain[nn_.kneighbors(posterior_means(model, pool, device), return_distance=False).ravel()]


def calibration_gap(model: BaseModelClass, ctx: UnlearnContext, pool: np.ndarray) -> float:
    """Mean negative ELBO of the calibration cells over that of their nearest retain cells (latent means)."""
    twins = calibration_twins(model, ctx, pool)
    return float(_negative_elbo(model, pool).mean() / _negative_elbo(model, twins).mean())


def _runner(plan_cls: type[CalibratedNegGradPlan]):
    """Measure the gap on the input model before training, then train the plan with that ceiling."""

    def run(model: BaseModelClass, ctx: UnlearnContext) -> None:
        params = {**plan_defaults(plan_cls), **ctx.params}
        pool, source = select_nonmembers(
            model, ctx, params["calibration"], match=params["match_calibration"], argument="calibration"
        )
        gap = calibration_gap(model, ctx, pool)
        info = {"calibration_source": source, "n_calibration_cells": int(pool.size)}
        run_training_plan(plan_cls, setup=lambda plan: plan.calibrate(gap, info))(model, ctx)

    return run


register(
    "calibrated_neggrad",
    plan=CalibratedNegGradPlan,
    runner=_runner,
    description="NegGrad+ whose ascent stops at the generalisation gap measured on never-trained look-alike "
    "cells (default: 10% of training epochs).",
    reference="Kurmanji2023; Triantafillou2024",
)
