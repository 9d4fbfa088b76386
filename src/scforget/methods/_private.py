"""Differentially private training of scVI with Opacus (DP-SGD): the module, the data, the plan, the run.

Opacus computes exact per-cell gradients with hooks on layers it knows. scVI's VAE is almost such a
network: with LayerNorm instead of BatchNorm (BatchNorm mixes cells) every trainable parameter sits
in a ``Linear`` layer, except the gene dispersion ``px_r``, which the root module owns and uses by
broadcasting. :class:`DPVAE` is the smallest change that fixes this: the dispersion moves into a
:class:`GeneDispersion` layer with a registered grad sampler, and nothing else changes (the trained
weights are copied back into a stock ``VAE``, so saved models load in plain scvi-tools).

Sampling is Poisson, as the privacy accounting assumes: :func:`poisson_loader` draws each training
cell independently with probability ``q`` per step (Opacus' ``UniformWithReplacementSampler``) over
scvi-tools' own ``AnnTorchDataset``. :class:`PrivateTrainingPlan` calls
``PrivacyEngine.make_private_with_epsilon`` when Lightning configures its optimiser; clipping, noise
and the accountant are Opacus'.
"""

from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from opacus import PrivacyEngine
from opacus.grad_sample import register_grad_sampler
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from scvi.dataloaders import AnnDataLoader
from scvi.module import VAE
from scvi.train import TrainingPlan, TrainRunner
from torch import nn
from torch.utils.data import DataLoader

from scforget._core import has_batchnorm, is_multiprocess, package_versions, quiet_training

if TYPE_CHECKING:
    from scvi.data import AnnDataManager
    from scvi.model.base import BaseModelClass

Accountant = Literal["prv", "rdp"]
#: Model attribute (saved with the model) holding the privacy guarantee of its training.
PRIVACY_ATTR = "privacy_"


class GeneDispersion(nn.Module):
    """scVI's gene dispersion (log inverse dispersion per gene) as a layer, one copy per cell.

    ``forward(ones)`` with ``ones`` of shape ``(cells, 1)`` returns ``(cells, genes)``, so Opacus'
    hooks see a batch dimension and compute one gradient per cell.
    """

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight

    def forward(self, ones: torch.Tensor) -> torch.Tensor:
        """The dispersion of every cell of the minibatch."""
        return ones * self.weight


@register_grad_sampler(GeneDispersion)
def _gene_dispersion_grad_sample(
    layer: GeneDispersion, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    # output_n = a_n * w, so cell n's gradient is a_n * (d loss / d output_n)
    return {layer.weight: activations[0].to(backprops.dtype) * backprops}


class DPVAE(VAE):
    """scVI's ``VAE`` with its gene dispersion in a :class:`GeneDispersion` layer (Opacus-ready).

    Build one from a trained or fresh ``VAE`` with :meth:`adopt`; :meth:`vae_state_dict` gives back
    the state dict of a stock ``VAE``. Only ``dispersion="gene"`` is supported.
    """

    @property
    def px_r(self) -> torch.Tensor:
        """The dispersion of each cell of the minibatch being decoded (what ``generative`` reads)."""
        return self.gene_dispersion(self._ones)

    def generative(self, z: torch.Tensor, library: torch.Tensor, batch_index: torch.Tensor, *args, **kwargs):
        """``VAE.generative`` with the dispersion computed per cell."""
        n = z.shape[-2] if z.dim() == 3 else z.shape[0]
        self._ones = z.new_ones(n, 1)
        try:
            return super().generative(z, library, batch_index, *args, **kwargs)
        finally:
            self._ones = None

    @classmethod
    def adopt(cls, vae: VAE) -> DPVAE:
        """A copy of ``vae`` whose dispersion parameter lives in a :class:`GeneDispersion` layer."""
        if type(vae) is not VAE:
            raise TypeError(f"DP-SGD supports scVI's VAE module; got {type(vae).__name__}.")
        if vae.dispersion != "gene":
            raise ValueError(
                f"DP-SGD supports `dispersion='gene'` (one dispersion per gene); the model uses {vae.dispersion!r}."
            )
        dp = copy.deepcopy(vae)
        weight = dp._parameters.pop("px_r")
        # the same object with one more layer: a subclass that only adds the property above
        dp.__class__ = cls
        dp.gene_dispersion = GeneDispersion(weight)
        dp._ones = None
        return dp

    def vae_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict of the equivalent stock ``VAE`` (``px_r`` back at the root)."""
        state = dict(self.state_dict())
        state["px_r"] = state.pop("gene_dispersion.weight")
        return state


def check_private_architecture(module: nn.Module, argument: str = "model") -> None:
    """Raise before any work if DP-SGD cannot train ``module`` (BatchNorm, another dispersion or module)."""
    if type(module) is not VAE:
        raise TypeError(
            f"DP-SGD training supports scvi.model.SCVI (and scforget.model.SCVI); `{argument}` has a "
            f"{type(module).__name__} module."
        )
    if has_batchnorm(module):
        raise ValueError(
            f"DP-SGD needs per-cell gradients, and BatchNorm mixes the cells of a minibatch. Create `{argument}` "
            "with LayerNorm instead: `SCVI(adata, use_batch_norm='none', use_layer_norm='both')`."
        )
    if module.dispersion != "gene":
        raise ValueError(f"DP-SGD supports `dispersion='gene'`; `{argument}` uses {module.dispersion!r}.")


def freeze_unused(module: nn.Module, tensors: dict[str, torch.Tensor]) -> list[str]:
    """Freeze the parameters the training loss does not depend on (Opacus needs a gradient for each one).

    With the observed library size the library encoder gets no gradient, nor do the decoder's
    dispersion and dropout heads with a negative binomial; one loss evaluation finds them.
    """
    was = module.training
    module.train()
    module.zero_grad(set_to_none=True)
    _, _, out = module(tensors, loss_kwargs={"kl_weight": 1.0})
    out.loss.backward()
    unused = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    for name, p in module.named_parameters():
        p.grad = None
        if name in unused:
            p.requires_grad_(False)
    module.train(was)
    return unused


def poisson_loader(adata_manager: AnnDataManager, positions: np.ndarray, *, batch_size: int, seed: int) -> DataLoader:
    """Poisson-sampled minibatches of the cells at ``positions`` (one epoch = ``ceil(n / batch_size)`` steps).

    Each step includes every cell independently with probability ``q = 1 / steps`` (expected
    minibatch ``n / steps`` cells), as the DP-SGD accountant assumes; minibatches may be empty.
    scvi-tools' ``AnnTorchDataset`` fetches each minibatch at once, as its ``AnnDataLoader`` does.
    """
    dataset = adata_manager.create_torch_dataset(indices=np.asarray(positions, dtype=np.int64))
    steps = max(1, math.ceil(len(positions) / batch_size))
    sampler = UniformWithReplacementSampler(
        num_samples=len(positions),
        sample_rate=1.0 / steps,
        steps=steps,
        generator=torch.Generator().manual_seed(int(seed)),
    )
    # batch_size=None: the sampler yields whole minibatches of indices (no per-cell collation)
    return DataLoader(dataset, sampler=sampler, batch_size=None)


class _PrivateDataModule(LightningDataModule):
    """The Poisson loader for training and plain validation batches (for monitoring only)."""

    def __init__(self, adata_manager: AnnDataManager, loader: DataLoader, train: np.ndarray, validation: np.ndarray):
        super().__init__()
        self.adata_manager, self.loader = adata_manager, loader
        self.train_idx, self.val_idx = np.asarray(train), np.asarray(validation)
        self.test_idx = np.zeros(0, dtype=np.int64)
        self.n_train, self.n_val = int(self.train_idx.size), int(self.val_idx.size)

    def train_dataloader(self):
        return self.loader

    def val_dataloader(self):
        if self.val_idx.size == 0:
            return []
        return AnnDataLoader(self.adata_manager, indices=self.val_idx, batch_size=512, shuffle=False)


class PrivateTrainingPlan(TrainingPlan):
    r"""scvi-tools' TrainingPlan trained with DP-SGD through Opacus' ``PrivacyEngine``.

    When Lightning configures the optimiser, the plan builds scvi-tools' optimiser (``optimizer``,
    ``lr``, ``weight_decay``...) and hands it with the module and the Poisson data loader to
    :meth:`opacus.PrivacyEngine.make_private_with_epsilon`. That computes the noise multiplier for
    ``target_epsilon`` over ``max_epochs`` and returns a ``DPOptimizer``, which clips every per-cell
    gradient to ``max_grad_norm``, adds Gaussian noise of standard deviation ``noise_multiplier *
    max_grad_norm`` to their sum, and reports each step to the accountant. The loss is the model's own
    training objective.

    Parameters
    ----------
    module
        A :class:`DPVAE` (train mode; unused parameters frozen).
    data_loader
        The Poisson loader the Trainer iterates (see :func:`poisson_loader`).
    target_epsilon
        Privacy budget :math:`\varepsilon` of the whole training.
    target_delta
        :math:`\\delta`.
    max_grad_norm
        Per-cell gradient clipping norm :math:`C`.
    max_epochs
        Epochs the budget is spread over (must equal the Trainer's).
    accountant
        ``"prv"`` (PRV accountant, tighter) or ``"rdp"`` (Rényi DP).
    noise_seed
        Seed of the noise generator.
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``weight_decay``, ``n_epochs_kl_warmup``...).
    """

    def __init__(
        self,
        module: DPVAE,
        *,
        data_loader: DataLoader,
        target_epsilon: float,
        target_delta: float,
        max_grad_norm: float,
        max_epochs: int,
        accountant: Accountant = "prv",
        noise_seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(module, **kwargs)
        self.data_loader = data_loader
        self.target_epsilon, self.target_delta = float(target_epsilon), float(target_delta)
        self.max_grad_norm, self.dp_epochs = float(max_grad_norm), int(max_epochs)
        self.accountant_name, self.noise_seed = accountant, int(noise_seed)
        self.privacy_engine: PrivacyEngine | None = None
        self.dp_optimizer = None
        self._hooks = None

    def configure_optimizers(self):
        """scvi-tools' optimiser made private by Opacus (per-cell clipping, noise, accounting)."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = self.get_optimizer_creator()(params)
        self.module.train()  # Opacus computes per-cell gradients in train mode only
        self.privacy_engine = PrivacyEngine(accountant=self.accountant_name)
        noise = torch.Generator(device=params[0].device).manual_seed(self.noise_seed)
        self._hooks, optimizer, _ = self.privacy_engine.make_private_with_epsilon(
            module=self.module,
            optimizer=optimizer,
            data_loader=self.data_loader,
            target_epsilon=self.target_epsilon,
            target_delta=self.target_delta,
            epochs=self.dp_epochs,
            max_grad_norm=self.max_grad_norm,
            poisson_sampling=False,  # the loader samples Poisson already (see poisson_loader)
            noise_generator=noise,
            wrap_model=False,  # hooks on the module itself; the plan keeps calling it as before
        )
        self.dp_optimizer = optimizer
        return optimizer

    def on_train_end(self) -> None:
        """Remove Opacus' hooks from the module."""
        if self._hooks is not None:
            self._hooks.cleanup()
            self._hooks = None

    def guarantee(self) -> dict[str, Any]:
        """The (epsilon, delta) guarantee of the steps taken, and how it was obtained."""
        engine, opt = self.privacy_engine, self.dp_optimizer
        history = list(engine.accountant.history)
        steps = int(sum(h[2] for h in history))
        return {
            "guarantee": "(epsilon, delta)-DP",
            "epsilon": float(engine.get_epsilon(self.target_delta)) if steps else 0.0,
            "delta": self.target_delta,
            "target_epsilon": self.target_epsilon,
            "noise_multiplier": float(opt.noise_multiplier),
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": float(history[-1][1]) if history else float("nan"),
            "expected_batch_size": int(opt.expected_batch_size),
            "steps": steps,
            "epochs": self.dp_epochs,
            "accountant": self.accountant_name,
            "opacus": package_versions().get("opacus", "unknown"),
        }


def check_one_process(devices: Any, trainer_kwargs: dict[str, Any] | None) -> None:
    """Refuse a multi-process strategy for DP-SGD (before any work)."""
    strategy = (trainer_kwargs or {}).get("strategy")
    if is_multiprocess(devices, strategy):
        raise ValueError(
            f"DP-SGD trains in one process, but `devices`={devices!r} / `strategy`={strategy!r} asks Lightning for "
            "several. The privacy record is Opacus' accounting of one Poisson sampler with one noise draw per step; "
            "under DDP each process would add its own noise and Lightning would swap in its distributed sampler, "
            "so the recorded (epsilon, delta) would not be the one spent. Pass `devices=1` and no parallel strategy."
        )


def train_private(
    model: BaseModelClass,
    train: np.ndarray,
    validation: np.ndarray,
    *,
    target_epsilon: float,
    target_delta: float | None,
    max_grad_norm: float,
    max_epochs: int,
    batch_size: int,
    accountant: Accountant,
    plan_kwargs: dict[str, Any] | None,
    seed: int,
    accelerator: str = "auto",
    devices: Any = "auto",
    trainer_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model``'s module with DP-SGD on the cells ``train``; the weights are replaced in place.

    Returns the privacy record (also stored on the model as ``privacy_``). Inputs are validated by the
    callers (:meth:`scforget.model.SCVI.train_private`, ``unlearn(method="dpsgd")``).
    """
    check_one_process(devices, trainer_kwargs)
    devices = 1 if devices == "auto" else devices  # "auto" would take every GPU of the machine, in DDP
    train = np.asarray(train, dtype=np.int64)
    delta = 1.0 / train.size if target_delta is None else float(target_delta)
    dp_module = DPVAE.adopt(model.module)
    loader = poisson_loader(model.adata_manager, train, batch_size=batch_size, seed=seed)
    probe = next(iter(AnnDataLoader(model.adata_manager, indices=train[: min(64, train.size)], batch_size=64)))
    frozen = freeze_unused(dp_module, probe)
    dp_module.train()
    plan = PrivateTrainingPlan(
        dp_module,
        data_loader=loader,
        target_epsilon=target_epsilon,
        target_delta=delta,
        max_grad_norm=max_grad_norm,
        max_epochs=max_epochs,
        accountant=accountant,
        noise_seed=seed + 1,
        **(plan_kwargs or {}),
    )
    dm = _PrivateDataModule(model.adata_manager, loader, train, validation)
    start = time.perf_counter()
    runner = TrainRunner(
        model,
        training_plan=plan,
        data_splitter=dm,
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        **{"enable_checkpointing": False, "enable_model_summary": False, **(trainer_kwargs or {})},
    )
    with quiet_training():
        runner()
    model.module.load_state_dict(dp_module.vae_state_dict())
    model.module.eval()
    record = {**plan.guarantee(), "n_train_cells": int(train.size), "frozen_no_gradient": frozen}
    record["train_seconds"] = round(time.perf_counter() - start, 4)
    setattr(model, PRIVACY_ATTR, record)
    return record
