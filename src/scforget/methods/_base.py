"""Base TrainingPlan for unlearning: paired retain/forget batches and the shared mechanics."""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

import torch
from scvi.module.base import LossOutput
from scvi.train import TrainingPlan
from torch import nn

from scforget._core import frozen_batchnorm, n_cells

from ._hyperparams import TRAINING_PLAN_BOUNDS, PositiveFloat, PositiveInt, annotations_of, check_hyperparameters


class UnlearningTrainingPlan(TrainingPlan):
    """Base class of scforget's training-based unlearning methods.

    A subclass of :class:`scvi.train.TrainingPlan` that receives paired minibatches
    ``{"retain": tensors, "forget": tensors}`` from
    :class:`~scforget.train.RetainForgetDataModule` (or plain retain tensors when the class
    attribute ``uses_forget`` is false) and provides:

    - :meth:`retain_loss` and :meth:`forget_loss`: the model's own training objective (negative
      ELBO with the observed library size, mean over cells), the latter with BatchNorm frozen so
      forget cells never enter the running statistics;
    - KL weight handling that defaults to a constant 1 (no warm-up: a short unlearning run that
      inherited the 400-epoch warm-up would train with a KL weight near 0);
    - optimisers built by scvi-tools' :meth:`~scvi.train.TrainingPlan.get_optimizer_creator`, so
      ``optimizer``, ``optimizer_creator``, ``eps`` and ``weight_decay`` apply to every optimiser of a
      plan, and ``reduce_lr_on_plateau`` schedules the main one, also under manual optimisation;
    - gradient-norm clipping (``clip_grad_norm``) through Lightning's clipping;
    - :meth:`track`, which logs a tensor per step (epoch means, synchronised across devices) and keeps
      per-epoch values in :attr:`epoch_history` (copied into the model's ``unlearning_records_``).

    Every hyper-parameter is checked for its type and range (both from the signature's annotations,
    e.g. ``lr: PositiveFloat``) when the plan is made, and by :func:`scforget.unlearn` before any work.
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
        Evaluate forget batches with BatchNorm in eval mode (recommended; see
        :func:`~scforget._core.frozen_batchnorm`).
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``weight_decay``, ``optimizer``, ...).
    """

    uses_forget: ClassVar[bool] = True
    #: Whether the plan steps its optimisers itself (Lightning's automatic clipping then cannot apply).
    manual_optimization: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check every constructor argument of a subclass (types and ranges) before its ``__init__`` runs."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def checked(self, module, *args, **kw):
            if type(self).__init__ is checked:  # the most derived constructor sees every argument
                type(self).check_params(kw)
            init(self, module, *args, **kw)

        cls.__init__ = checked

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """Raise a ``TypeError``/``ValueError`` if a hyper-parameter has the wrong type or range."""
        inits = [vars(k)["__init__"] for k in cls.__mro__ if "__init__" in vars(k) and k is not object]
        check_hyperparameters(params, annotations_of(*inits), TRAINING_PLAN_BOUNDS, cls.__name__)

    def __init__(
        self,
        module,
        *,
        n_epochs_kl_warmup: PositiveInt | None = None,
        clip_grad_norm: PositiveFloat | None = None,
        freeze_batchnorm_on_forget: bool = True,
        **kwargs: Any,
    ):
        super().__init__(module, n_epochs_kl_warmup=n_epochs_kl_warmup, **kwargs)
        self.automatic_optimization = not self.manual_optimization
        self.second_lr: float | None = None
        self.clip_grad_norm = clip_grad_norm
        self.freeze_batchnorm_on_forget = bool(freeze_batchnorm_on_forget)
        self.epoch_history: dict[str, list[float]] = defaultdict(list)
        self._running: dict[str, list] = {}

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
        return n_cells(tensors)

    def begin_step(self, batch) -> tuple[dict, dict | None]:
        """Start a training step: refresh the KL weight and return ``(retain_tensors, forget_tensors)``."""
        self.refresh_kl_weight()
        return self.split_batch(batch)

    def refresh_kl_weight(self) -> None:
        """Update ``loss_kwargs["kl_weight"]`` for the current epoch/step, as scvi-tools' step does."""
        if "kl_weight" in self.loss_kwargs:
            self.loss_kwargs.update({"kl_weight": self.kl_weight})

    def forget_context(self) -> contextlib.AbstractContextManager:
        """BatchNorm frozen for a forget forward, unless ``freeze_batchnorm_on_forget=False``."""
        return frozen_batchnorm(self.module) if self.freeze_batchnorm_on_forget else contextlib.nullcontext()

    def retain_loss(self, tensors: dict) -> tuple[dict, dict, LossOutput]:
        """Forward pass and training objective on retain cells."""
        return self.forward(tensors, loss_kwargs=self.loss_kwargs)

    def forget_loss(self, tensors: dict) -> tuple[dict, dict, LossOutput]:
        """Forward pass and training objective on forget cells, BatchNorm statistics untouched."""
        with self.forget_context():
            return self.forward(tensors, loss_kwargs=self.loss_kwargs)

    @torch.no_grad()
    def monitor_loss(self, tensors: dict) -> torch.Tensor:
        """The training objective on ``tensors`` for logging only: no gradient, BatchNorm untouched."""
        with frozen_batchnorm(self.module):
            _, _, out = self.forward(tensors, loss_kwargs=self.loss_kwargs)
        return out.loss

    # -- logging ---------------------------------------------------------------------------------
    def track(self, name: str, value: torch.Tensor | float, n: int, *, reduce: Literal["mean", "sum"] = "mean") -> None:
        """Log ``value`` under ``name`` and keep its epoch mean (or sum) for :attr:`epoch_history`.

        Values stay tensors on the device (no synchronisation per step); Lightning aggregates them per
        epoch with ``sync_dist`` following the plan's ``use_sync_dist``.
        """
        v = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value), device=self.device)
        acc = self._running.setdefault(name, [torch.zeros((), device=v.device), 0, reduce])
        acc[0] = acc[0] + v.float() * (n if reduce == "mean" else 1)
        acc[1] += n
        self.log(
            name,
            v.float(),
            on_step=False,
            on_epoch=True,
            batch_size=n,
            reduce_fx=reduce,
            prog_bar=name == "retain_loss",
            sync_dist=self.use_sync_dist,
        )

    def on_train_epoch_end(self) -> None:
        """Store the epoch means (or sums) of tracked values."""
        for name, (total, n, reduce) in self._running.items():
            self.epoch_history[name].append(float(total) / (max(n, 1) if reduce == "mean" else 1))
        self._running.clear()

    # -- optimisation ------------------------------------------------------------------------------
    def make_optimizer(self, params: Iterable[nn.Parameter], lr: float | None = None) -> torch.optim.Optimizer:
        """An optimiser from scvi-tools' ``get_optimizer_creator()`` over ``params``, at learning rate ``lr``.

        ``optimizer`` (``"Adam"``, ``"AdamW"`` or ``"Custom"`` with ``optimizer_creator``), ``eps`` and
        ``weight_decay`` are the plan's; ``lr`` (default: the plan's ``lr``) is set on every parameter
        group, so a plan with several optimisers keeps its own learning rate for each.
        """
        trainable = [p for p in params if p.requires_grad]
        optimizer = self.get_optimizer_creator()(trainable)
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = float(lr)
        return optimizer

    def manual_optimizers(self, *optimizers: torch.optim.Optimizer):
        """What ``configure_optimizers`` returns for manual plans: the optimisers, and the plateau scheduler.

        With ``reduce_lr_on_plateau`` the first optimiser (the model's main one) is scheduled on
        ``lr_scheduler_metric``; :meth:`on_validation_epoch_end` steps it.
        """
        if not self.reduce_lr_on_plateau:
            return list(optimizers)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizers[0],
            patience=self.lr_patience,
            factor=self.lr_factor,
            threshold=self.lr_threshold,
            min_lr=self.lr_min,
            threshold_mode="abs",
        )
        return list(optimizers), [{"scheduler": scheduler, "monitor": self.lr_scheduler_metric}]

    def configure_optimizers(self):
        """scvi-tools' optimiser (and plateau scheduler); manual plans get one more at ``second_lr`` if set.

        A manual plan that alternates two kinds of steps on the same weights sets ``self.second_lr``, so
        that the momentum of one kind never drives the other: ``self.optimizers()`` is then
        ``(main at lr, second at second_lr)``.
        """
        if self.automatic_optimization:
            return super().configure_optimizers()
        params = list(self.module.parameters())
        optimizers = [self.make_optimizer(params, self.lr)]
        if self.second_lr is not None:
            optimizers.append(self.make_optimizer(params, self.second_lr))
        return self.manual_optimizers(*optimizers)

    def on_validation_epoch_end(self) -> None:
        """Step the plateau scheduler of a manual plan on the validation metric."""
        if not self.automatic_optimization and self.reduce_lr_on_plateau:
            metric = self.trainer.callback_metrics.get(self.lr_scheduler_metric)
            if metric is not None:
                self.lr_schedulers().step(metric)

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip the gradient norm to ``clip_grad_norm`` with Lightning's clipping (automatic optimisation)."""
        if self.clip_grad_norm is not None:
            gradient_clip_val, gradient_clip_algorithm = self.clip_grad_norm, "norm"
        self.clip_gradients(
            optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm
        )

    def manual_step(self, optimizer, loss: torch.Tensor) -> None:
        """One manual-optimisation step: zero, backward, clip to ``clip_grad_norm`` (Lightning's clipping), step."""
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.clip_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.clip_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()

    def training_step(self, batch, batch_idx):
        """Default step: the training objective on retain cells (subclasses override)."""
        retain, _ = self.begin_step(batch)
        _, _, out = self.retain_loss(retain)
        self.track("retain_loss", out.loss, self.batch_size_of(retain))
        return out.loss
