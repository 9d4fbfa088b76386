"""Differentially private training of scVI with Opacus (DP-SGD): the module, the data, the plan, the run.

Opacus computes exact per-cell gradients with hooks on layers it knows. scVI's VAE is almost such a
network: with LayerNorm instead of BatchNorm (BatchNorm mixes cells) every trainable parameter sits
in a ``Linear`` layer, except the gene dispersion ``px_r``, which the root module owns and uses by
broadcasting. :class:`DPVAE` is the smallest change that fixes this: the dispersion moves into a
:class:`GeneDispersion` layer with a registered grad sampler, and nothing else changes (the trained
weights are copied back into a stock ``VAE``, so saved models load in plain scvi-tools).

Sampling is Poisson, as the privacy accounting assumes: :func:`poisson_loader` draws each training
cell independently with probability ``q`` per step (:class:`PoissonSampler`) over scvi-tools' own
``AnnTorchDataset``. :class:`PrivateTrainingPlan` calls ``PrivacyEngine.make_private_with_epsilon``
when Lightning configures its optimiser; clipping, noise and the accountant are Opacus'.

Under Lightning DDP (``strategy="ddp"``, ``devices=N``) each process draws its own share of the
cells, Opacus' ``DistributedDPOptimizer`` adds the noise once (on rank 0) and sums the clipped,
noised gradients over the processes, so a step is the same mechanism as in one process with the
union of the processes' minibatches, and the accountant's record is the one spent.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from opacus import PrivacyEngine
from opacus.distributed import DifferentiallyPrivateDistributedDataParallel
from opacus.grad_sample import register_grad_sampler
from scvi.dataloaders import AnnDataLoader
from scvi.module import VAE
from scvi.train import TrainingPlan, TrainRunner
from torch import nn
from torch.utils.data import DataLoader, Sampler

from scforget._core import (
    has_batchnorm,
    is_multiprocess,
    package_versions,
    process_rank,
    quiet_training,
    spawns_children,
    with_ddp_strategy,
)

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


class PoissonSampler(Sampler[list[int]]):
    """Poisson minibatches of this process's share of ``num_samples`` cells, ``steps`` per epoch.

    At every step each of the process's cells (positions ``rank, rank + world_size, ...``) is in the
    minibatch independently with probability ``sample_rate``; the union over the processes is then
    a Poisson sample of all cells with that rate, as the accountant assumes. Every step yields a
    minibatch, empty ones included.

    In one process this draws exactly what Opacus' ``UniformWithReplacementSampler`` draws from the
    same generator. Opacus' distributed sampler is not used because it skips a process's empty
    minibatch: that process would then take fewer steps than the others, and DDP's collective
    operations would wait for it forever.

    Parameters
    ----------
    num_samples
        Cells of the dataset (all processes together).
    sample_rate
        Probability ``q`` that a cell is in a step's minibatch.
    steps
        Steps per epoch.
    seed
        Seed of the draws. Each process draws from its own stream (the stream of ``seed`` in one
        process), so the processes' choices are independent.
    rank, world_size
        This process and the number of processes.
    """

    def __init__(self, num_samples: int, sample_rate: float, steps: int, seed: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"`rank` must be in [0, {world_size}); got {rank}.")
        self.positions = torch.arange(rank, int(num_samples), world_size)
        self.sample_rate, self.steps = float(sample_rate), int(steps)
        stream = int(seed) if world_size == 1 else int(np.random.SeedSequence([int(seed), rank]).generate_state(1)[0])
        self.generator = torch.Generator().manual_seed(stream)

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            mask = torch.rand(self.positions.numel(), generator=self.generator) < self.sample_rate
            yield self.positions[mask].tolist()

    def __len__(self) -> int:
        return self.steps


def poisson_loader(
    adata_manager: AnnDataManager,
    positions: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Poisson-sampled minibatches of the cells at ``positions`` for process ``rank`` of ``world_size``.

    An epoch has ``ceil(n / (batch_size * world_size))`` steps. At each step every cell is included
    independently with probability ``q = 1 / steps`` (an expected minibatch of ``batch_size`` cells
    per process, as ``batch_size`` is per process everywhere in scvi-tools), as the DP-SGD
    accountant assumes; minibatches may be empty. The dataset holds all ``n`` cells in every
    process, as Opacus' distributed accounting expects. scvi-tools' ``AnnTorchDataset`` fetches each
    minibatch at once, as its ``AnnDataLoader`` does.
    """
    dataset = adata_manager.create_torch_dataset(indices=np.asarray(positions, dtype=np.int64))
    steps = max(1, math.ceil(len(positions) / (batch_size * world_size)))
    sampler = PoissonSampler(len(positions), 1.0 / steps, steps, seed, rank=rank, world_size=world_size)
    # batch_size=None: the sampler yields whole minibatches of indices (no per-cell collation)
    return DataLoader(dataset, sampler=sampler, batch_size=None)


class PoissonData:
    """The Poisson loader of the process that asks: built when first asked, once Lightning started the processes.

    Calling it returns :func:`poisson_loader` for this process's rank in the running
    ``torch.distributed`` group (or the single-process loader outside one). The training plan and
    the data module share one instance, so the accountant and the Trainer see the same loader.
    """

    def __init__(self, adata_manager: AnnDataManager, positions: np.ndarray, *, batch_size: int, seed: int):
        self.adata_manager, self.positions = adata_manager, np.asarray(positions, dtype=np.int64)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self._loaders: dict[tuple[int, int], DataLoader] = {}

    def __call__(self) -> DataLoader:
        key = process_rank()
        if key not in self._loaders:
            rank, world = key
            self._loaders[key] = poisson_loader(
                self.adata_manager,
                self.positions,
                batch_size=self.batch_size,
                seed=self.seed,
                rank=rank,
                world_size=world,
            )
        return self._loaders[key]


class _PrivateDataModule(LightningDataModule):
    """The Poisson loader for training and plain validation batches (for monitoring only)."""

    def __init__(self, adata_manager: AnnDataManager, loader: PoissonData, train: np.ndarray, validation: np.ndarray):
        super().__init__()
        self.adata_manager, self.loader = adata_manager, loader
        self.train_idx, self.val_idx = np.asarray(train), np.asarray(validation)
        self.test_idx = np.zeros(0, dtype=np.int64)
        self.n_train, self.n_val = int(self.train_idx.size), int(self.val_idx.size)

    def train_dataloader(self):
        return self.loader()

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

    Under Lightning DDP the optimiser is Opacus' ``DistributedDPOptimizer``: every process clips its
    own cells' gradients, rank 0 alone adds the noise, and the sums are added up over the processes
    before the step, so each step releases one noised sum over the union of the minibatches.

    Parameters
    ----------
    module
        A :class:`DPVAE` (train mode; unused parameters frozen).
    data_loader
        The Poisson loader the Trainer iterates (see :func:`poisson_loader`), or a callable that returns
        this process's loader when the optimiser is configured (a :class:`PoissonData`, for DDP).
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
        data_loader: DataLoader | Callable[[], DataLoader],
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
        self.dp_processes = 1
        self._hooks = None

    def configure_optimizers(self):
        """scvi-tools' optimiser made private by Opacus (per-cell clipping, noise, accounting)."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = self.get_optimizer_creator()(params)
        self.module.train()  # Opacus computes per-cell gradients in train mode only
        self.privacy_engine = PrivacyEngine(accountant=self.accountant_name)
        noise = torch.Generator(device=params[0].device).manual_seed(self.noise_seed)
        loader = self.data_loader if isinstance(self.data_loader, DataLoader) else self.data_loader()
        _, self.dp_processes = process_rank()
        # Opacus builds its distributed optimiser (noise on rank 0, sums added up over the processes)
        # for a module inside its DPDDP wrapper. Here the wrapper is only that sign: the plan keeps
        # calling the module itself, and Lightning's DDP runs the processes (its own all-reduce of the
        # plain gradients is overwritten by the optimiser's private ones).
        engine_module = (
            DifferentiallyPrivateDistributedDataParallel(self.module) if self.dp_processes > 1 else self.module
        )
        self._hooks, optimizer, _ = self.privacy_engine.make_private_with_epsilon(
            module=engine_module,
            optimizer=optimizer,
            data_loader=loader,
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
            # all processes together (Opacus keeps the expected minibatch of one process)
            "expected_batch_size": int(round(opt.expected_batch_size * self.dp_processes)),
            "processes": self.dp_processes,
            "steps": steps,
            "epochs": self.dp_epochs,
            "accountant": self.accountant_name,
            "opacus": package_versions().get("opacus", "unknown"),
        }


def check_private_strategy(trainer_kwargs: dict[str, Any] | None) -> None:
    """Refuse, before any work, a Lightning strategy under which DP-SGD's record would not be the one spent.

    One process and Lightning DDP by name (``strategy="ddp"``) are supported. Strategies that train
    in child processes (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``) return only the weights to
    the caller, not the accountant; sharded ones (FSDP, DeepSpeed) and strategy objects are not
    what Opacus' distributed optimiser was written for.
    """
    strategy = (trainer_kwargs or {}).get("strategy")
    if strategy is None:
        return
    if isinstance(strategy, str):
        children = spawns_children(strategy)
        if not children and not any(name in strategy for name in ("fsdp", "deepspeed")):
            return
        why = (
            "it trains in child processes, which give back the weights but not Opacus' privacy accounting"
            if children
            else "Opacus' distributed DP-SGD supports data-parallel DDP, not sharded parameters"
        )
    else:
        from lightning.pytorch.strategies import SingleDeviceStrategy

        if isinstance(strategy, SingleDeviceStrategy):
            return
        why = "a strategy object can launch its processes any way; the privacy record needs DDP in this process"
    raise ValueError(
        f"DP-SGD cannot train with `strategy`={strategy!r}: {why}. Pass `strategy='ddp'` with `devices=N` (one "
        "process per device, launched from this script), or one device and no strategy."
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
    check_private_strategy(trainer_kwargs)
    devices = 1 if devices == "auto" else devices  # "auto" would take every GPU of the machine
    trainer_kwargs = dict(trainer_kwargs or {})
    if is_multiprocess(devices, trainer_kwargs.get("strategy")):
        if trainer_kwargs.get("strategy") in (None, "auto"):
            trainer_kwargs["strategy"] = "ddp"  # not Lightning's default choice, which may spawn children
        trainer_kwargs = with_ddp_strategy(trainer_kwargs)
        # each process draws its own Poisson share (PoissonSampler); Lightning's distributed sampler
        # would instead deal out whole minibatches, changing the sampling the accountant assumes
        trainer_kwargs["use_distributed_sampler"] = False
    train = np.asarray(train, dtype=np.int64)
    delta = 1.0 / train.size if target_delta is None else float(target_delta)
    dp_module = DPVAE.adopt(model.module)
    data = PoissonData(model.adata_manager, train, batch_size=batch_size, seed=seed)
    probe = next(iter(AnnDataLoader(model.adata_manager, indices=train[: min(64, train.size)], batch_size=64)))
    frozen = freeze_unused(dp_module, probe)
    dp_module.train()
    plan = PrivateTrainingPlan(
        dp_module,
        data_loader=data,
        target_epsilon=target_epsilon,
        target_delta=delta,
        max_grad_norm=max_grad_norm,
        max_epochs=max_epochs,
        accountant=accountant,
        noise_seed=seed + 1,
        **(plan_kwargs or {}),
    )
    dm = _PrivateDataModule(model.adata_manager, data, train, validation)
    start = time.perf_counter()
    runner = TrainRunner(
        model,
        training_plan=plan,
        data_splitter=dm,
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        **{"enable_checkpointing": False, "enable_model_summary": False, **trainer_kwargs},
    )
    with quiet_training():
        runner()
    model.module.load_state_dict(dp_module.vae_state_dict())
    model.module.eval()
    record = {**plan.guarantee(), "n_train_cells": int(train.size), "frozen_no_gradient": frozen}
    record["train_seconds"] = round(time.perf_counter() - start, 4)
    setattr(model, PRIVACY_ATTR, record)
    return record
