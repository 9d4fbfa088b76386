"""DP-SGD retraining: a fresh model trained on the retain cells with (epsilon, delta) differential privacy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from scforget._core import fresh_model, has_batchnorm

from ._context import UnlearnContext
from ._hyperparams import PositiveFloat
from ._private import PRIVACY_ATTR, train_private
from ._registry import register

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: Architecture arguments that make a scVI trainable by DP-SGD (LayerNorm instead of BatchNorm).
LAYER_NORM = {"use_batch_norm": "none", "use_layer_norm": "both"}


def dpsgd(
    model: BaseModelClass,
    ctx: UnlearnContext,
    *,
    target_epsilon: PositiveFloat = 3.0,
    target_delta: PositiveFloat | None = None,
    max_grad_norm: PositiveFloat = 1.0,
    accountant: Literal["prv", "rdp"] = "prv",
) -> None:
    """Replace ``model`` by a fresh model trained on the retain cells with DP-SGD (Opacus).

    The forget cells are never shown to the new model, as with ``retrain``; in addition the retain
    cells are protected by an (epsilon, delta) guarantee, so any later deletion among them is bounded
    by epsilon without retraining. The fresh model keeps the input's architecture and recipe (epochs,
    batch size, plan arguments), except that BatchNorm is replaced by LayerNorm (BatchNorm mixes the
    cells of a minibatch, so per-cell clipping is impossible); the record says so. Sampling is
    Poisson over the retain cells; clipping, noise and accounting are Opacus'.

    Parameters
    ----------
    model
        Model whose module is replaced.
    ctx
        The resolved unlearning context (epochs, batch size and seed of the DP training).
    target_epsilon
        Privacy budget epsilon of the whole retraining.
    target_delta
        Delta; default ``1 / n_retain``.
    max_grad_norm
        Per-cell gradient clipping norm.
    accountant
        ``"prv"`` or ``"rdp"``.
    """
    changed = has_batchnorm(model.module)
    fresh = fresh_model(model, **(LAYER_NORM if changed else {}))
    record = train_private(
        fresh,
        ctx.retain,
        ctx.validation,
        target_epsilon=target_epsilon,
        target_delta=target_delta,
        max_grad_norm=max_grad_norm,
        max_epochs=ctx.max_epochs,
        batch_size=ctx.batch_size,
        accountant=accountant,
        plan_kwargs=dict(ctx.recipe.get("plan_kwargs") or {}),
        seed=ctx.seed,
        accelerator=ctx.accelerator,
        devices=ctx.devices,
        trainer_kwargs=ctx.trainer_kwargs,
    )
    model.module = fresh.module
    model.init_params_ = fresh.init_params_
    model.history_ = fresh.history_
    setattr(model, PRIVACY_ATTR, record)
    ctx.info.update(record)
    ctx.info["epochs_run"] = ctx.max_epochs
    ctx.info["architecture"] = "BatchNorm replaced by LayerNorm for DP-SGD" if changed else "unchanged"


def _check_dpsgd(model: BaseModelClass, params: dict, forget: np.ndarray) -> None:
    """``dpsgd`` trains scVI's VAE with one dispersion per gene (BatchNorm is replaced, not refused)."""
    from scvi.module import VAE

    if type(model.module) is not VAE:
        raise TypeError(
            f"`dpsgd` supports scvi.model.SCVI models; this one has a {type(model.module).__name__} module."
        )
    if model.module.dispersion != "gene":
        raise ValueError(f"`dpsgd` supports `dispersion='gene'`; the model uses {model.module.dispersion!r}.")


register(
    "dpsgd",
    function=dpsgd,
    kind="exact",
    guarantee="(epsilon, delta)-DP",
    description="Retrain on retain cells with DP-SGD (Opacus): exact for the forget cells, (epsilon, delta)-DP "
    "for the rest.",
    reference="Abadi et al. 2016; Opacus (Yousefpour et al. 2021)",
    default_epochs=lambda e: e,
    accepts_epochs=True,
    check=_check_dpsgd,
)
