"""Base TrainingPlan for unlearning: paired retain/forget batches and the shared mechanics."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from scvi.module.base import LossOutput
from scvi.train import TrainingPlan
from torch import nn

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@contextlib.contextmanager
def frozen_batchnorm(module: nn.Module) -> Iterator[None]:
    """Run the block with every BatchNorm layer of ``module`` in eval mode.

    In train mode a forward pass updates the BatchNorm running statistics, which would write the
    forget cells into the "unlearned" model. Inside this block BatchNorm normalises with the stored
    running statistics and leaves them untouched; gradients still flow.
    """
    bns = [m for m in module.modules() if isinstance(m, _BATCHNORM) and m.training]
    for m in bns:
        m.eval()
    try:
        yield
    finally:
        for m in bns:
            m.train()


class UnlearningTrainingPlan(TrainingPlan):
    """Base class of scforget's training-based unlearning methods.

    A subclass of :class:`scvi.train.TrainingPlan` that receives paired minibatches
    ``{"retain": tensors, "forget": tensors}`` from
    :class:`~scforget.methods.RetainForgetDataModule` (or plain retain tensors when the class
    attribute ``uses_forget`` is false) and provides:

    - :meth:`retain_loss` and :meth:`forget_loss`: the model's own training objective (negative
      ELBO with the observed library size, mean over cells), the latter with BatchNorm frozen so
      forget cells never enter the running statistics;
    - KL weight handling that defaults to a constant 1 (no warm-up: a short unlearning run that
      inherited the 400-epoch warm-up would train with a KL weight near 0);
    - optional gradient-norm clipping;
    - :meth:`track`, which logs a per-step value and keeps per-epoch means in
      :attr:`epoch_history` (copied into the model's ``unlearning_records_``).

    Validation (and early stopping with ``early_stopping=True``) runs scvi-tools' usual validation
    step on the retain validation cells.

    Parameters
    ----------
    module
        The model's module (updated in place).
    n_epochs_kl_warmup
        Epochs of KL warm-up; ``None`` keeps the KL weight at ``max_kl_weight``.
    clip_grad_norm
        Clip the gradient norm of each optimisation step to this value (``None``: no clipping).
    freeze_batchnorm_on_forget
        Evaluate forget batches with BatchNorm in eval mode (recommended; see :func:`frozen_batchnorm`).
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``weight_decay``, ``optimizer``, ...).
    """

    uses_forget: ClassVar[bool] = True

    def __init__(
        self,
        module,
        *,
        n_epochs_kl_warmup: int | None = None,
        clip_grad_norm: float | None = None,
        freeze_batchnorm_on_forget: bool = True,
        **kwargs: Any,
    ):
        super().__init__(module, n_epochs_kl_warmup=n_epochs_kl_warmup, **kwargs)
        self.clip_grad_norm = clip_grad_norm
        self.freeze_batchnorm_on_forget = freeze_batchnorm_on_forget
        self.epoch_history: dict[str, list[float]] = defaultdict(list)
        self._running: dict[str, list[tuple[float, int]]] = defaultdict(list)

    # -- batches and losses -------------------------------------------------------------------
    @staticmethod
    def split_batch(batch) -> tuple[dict, dict | None]:
        """``(retain_tensors, forget_tensors)`` from a paired or a plain batch."""
        if isinstance(batch, dict) and "retain" in batch and "forget" in batch:
            return batch["retain"], batch["forget"]
        return batch, None

    @staticmethod
    def batch_size_of(tensors: dict) -> int:
        """Number of cells in a tensor dict."""
        return int(next(iter(tensors.values())).shape[0])

    def refresh_kl_weight(self) -> None:
        """Update ``loss_kwargs["kl_weight"]`` for the current epoch/step, as scvi-tools' step does."""
        if "kl_weight" in self.loss_kwargs:
            self.loss_kwargs.update({"kl_weight": self.kl_weight})

    def retain_loss(self, tensors: dict) -> tuple[dict, dict, LossOutput]:
        """Forward pass and training objective on retain cells."""
        return self.forward(tensors, loss_kwargs=self.loss_kwargs)

    def forget_loss(self, tensors: dict) -> tuple[dict, dict, LossOutput]:
        """Forward pass and training objective on forget cells, BatchNorm statistics untouched."""
        ctx = frozen_batchnorm(self.module) if self.freeze_batchnorm_on_forget else contextlib.nullcontext()
        with ctx:
            return self.forward(tensors, loss_kwargs=self.loss_kwargs)

    # -- logging ---------------------------------------------------------------------------------
    def track(self, name: str, value: torch.Tensor | float, n: int) -> None:
        """Log ``value`` under ``name`` (epoch mean) and keep it for :attr:`epoch_history`."""
        v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        self._running[name].append((v, n))
        self.log(name, v, on_step=False, on_epoch=True, batch_size=n, prog_bar=name == "retain_loss")

    def on_train_epoch_end(self) -> None:
        """Store the epoch means of tracked values."""
        for name, vals in self._running.items():
            total = sum(n for _, n in vals)
            self.epoch_history[name].append(sum(v * n for v, n in vals) / max(total, 1))
        self._running.clear()

    # -- optimisation ------------------------------------------------------------------------------
    def on_before_optimizer_step(self, optimizer) -> None:
        """Clip gradients when ``clip_grad_norm`` is set (automatic optimisation)."""
        if self.clip_grad_norm is not None:
            self.clip_gradients_(self.module.parameters())

    def clip_gradients_(self, params) -> None:
        """Clip the gradient norm of ``params`` to ``clip_grad_norm`` (for manual optimisation too)."""
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], self.clip_grad_norm)

    def training_step(self, batch, batch_idx):
        """Default step: the training objective on retain cells (subclasses override)."""
        retain, _ = self.split_batch(batch)
        self.refresh_kl_weight()
        _, _, out = self.retain_loss(retain)
        self.track("retain_loss", out.loss, self.batch_size_of(retain))
        return out.loss
