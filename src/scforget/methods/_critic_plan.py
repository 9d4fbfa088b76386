"""Plans that train a VAE against membership critics: the cells they need, the base plan, the runner."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from scvi.dataloaders import AnnDataLoader
from torch import nn

from scforget._core import minibatches, tensors_to, training_positions
from scforget.data import as_positions

from ._base import UnlearningTrainingPlan
from ._context import UnlearnContext
from ._critics import CRITIC_VARIANTS, critic_auc, features_no_grad, pretrain_critics
from ._distill import FrozenModules
from ._hyperparams import NonNegativeFloat, NonNegativeInt, PositiveInt
from ._registry import register
from ._runner import run_training_plan

if TYPE_CHECKING:
    from scvi.data import AnnDataManager
    from scvi.model.base import BaseModelClass

    from ._registry import MethodSpec

#: Cells per minibatch when critic features are computed without gradients.
FEATURE_BATCH = 1024


@dataclass
class CriticCells:
    """Cells a critic-based plan needs besides the retain/forget minibatches (positions, read on demand).

    Only positions are held; tensors are loaded a minibatch at a time, so the memory does not grow
    with the size of the non-member pool.

    Attributes
    ----------
    adata_manager
        The model's data manager, to load the cells.
    forget
        Positions of the forget cells.
    nonmembers
        Positions of the never-trained cells the critics learn from.
    shadow
        Positions of further never-trained cells for the shadow audit (``None`` when not requested).
    seed
        Seed of the run (shadow-audit folds).
    info
        Counts and provenance, copied into the unlearning record.
    """

    adata_manager: AnnDataManager
    forget: np.ndarray
    nonmembers: np.ndarray
    shadow: np.ndarray | None = None
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def batches(self, positions: np.ndarray, batch_size: int = FEATURE_BATCH) -> Iterator[dict[str, torch.Tensor]]:
        """Minibatches of the cells at ``positions``, in order."""
        yield from AnnDataLoader(self.adata_manager, indices=positions, batch_size=batch_size, shuffle=False)

    def cycle(self, positions: np.ndarray, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled minibatches of the cells at ``positions``, forever (reshuffled every pass)."""
        while True:
            yield from AnnDataLoader(self.adata_manager, indices=positions, batch_size=batch_size, shuffle=True)


def select_nonmembers(
    model: BaseModelClass, ctx: UnlearnContext, nonmembers, *, match: int | None, argument: str = "nonmembers"
) -> tuple[np.ndarray, str]:
    """Never-trained cells for a method: ``nonmembers`` (passed as ``argument``) or the model's validation cells.

    With ``match=k`` only the union of the ``k`` nearest candidates (Euclidean distance between
    posterior means of the input model) of each forget cell is kept, so that non-members resemble the
    forget cells (the study's critics learned cell type, not membership, from unmatched non-members).
    """
    if nonmembers is None:
        pool, source = np.asarray(ctx.validation, dtype=np.int64), "model validation cells"
        if pool.size < 2:
            raise ValueError(
                "This method needs never-trained cells, but the model has no validation cells. Pass "
                f"`{argument}=` (cells the model never trained on, not the ones you audit with)."
            )
    else:
        pool, source = as_positions(nonmembers, model.adata.obs_names, argument=argument), f"{argument}="
        trained = np.union1d(np.union1d(ctx.retain, ctx.forget), training_positions(model))
        overlap = np.intersect1d(pool, trained)
        if overlap.size:
            raise ValueError(
                f"{overlap.size} of the `{argument}` cells were training cells of the model; pass cells the model "
                "never trained on."
            )
        if pool.size < 2:
            raise ValueError(f"`{argument}` must contain at least two cells.")
    if match is not None and match * len(ctx.forget) < pool.size:
        from sklearn.neighbors import NearestNeighbors

        device = next(model.module.parameters()).device
        f_mean = posterior_means(model, ctx.forget, device)
        p_mean = posterior_means(model, pool, device)
        nn_ = NearestNeighbors(n_neighbors=min(int(match), pool.size)).fit(p_mean)
        pool = np.unique(pool[nn_.kneighbors(f_mean, return_distance=False).ravel()])
        source += f", {match} nearest per forget cell"
    return pool, source


def posterior_means(model: BaseModelClass, positions: np.ndarray, device) -> np.ndarray:
    feats = features_no_grad(model.module, minibatches(model, positions, batch_size=FEATURE_BATCH), device)
    n_latent = (feats.shape[1] - 2) // 2
    return feats[:, 2 : 2 + n_latent].cpu().numpy()


class CriticTrainingPlan(UnlearningTrainingPlan):
    r"""Shared mechanics of critic-based plans; not a method itself.

    Subclasses receive :class:`CriticCells` through :meth:`attach_cells` before training starts (done
    by :func:`run_with_critics`), pre-train their critics there, and read non-member minibatches with
    :meth:`nonmember_batch`. The critic hyper-parameters below are shared by every critic method. Trainable critics (``trainable_critics = True``) are registered
    submodules, optimised and moved with the plan; frozen ones are held outside the plan's modules,
    like teachers, so Lightning neither counts them nor warns about modules in eval mode.

    Parameters
    ----------
    module
        The model's module.
    privacy_weight
        :math:`\lambda`, the weight of the privacy term relative to the utility term.
    critics
        Feature subsets of the critics, one critic each: ``"all"`` (every feature), ``"scores"``
        (reconstruction log-likelihood and KL) and ``"latent"`` (posterior mean and log-variance)
        mirror the study's attacker variants.
    critic_hidden
        Hidden-layer widths of the critics.
    spectral_norm
        Spectrally normalised critic layers (bounded critic gradients).
    critic_pretrain_steps
        Full-batch Adam steps of critic pre-training on the input model.
    nonmembers
        Never-trained cells the critics learn from (any cell spec of :func:`scforget.data.as_positions`).
        Defaults to the model's validation cells. Do not pass the non-members you audit with.
    match_nonmembers
        Keep only the ``k`` nearest non-members (posterior means of the input model) of each forget
        cell; ``None`` keeps all.
    nonmember_batch_size
        Non-member cells per step.
    **kwargs
        See :class:`~scforget.train.UnlearningTrainingPlan`.
    """

    #: Whether the critics are optimised during unlearning.
    trainable_critics: ClassVar[bool] = False

    def __init__(
        self,
        module,
        *,
        privacy_weight: NonNegativeFloat = 1.0,
        critics: Sequence[str] = CRITIC_VARIANTS,
        critic_hidden: Sequence[PositiveInt] = (64, 64),
        spectral_norm: bool = False,
        critic_pretrain_steps: NonNegativeInt = 300,
        nonmembers=None,
        match_nonmembers: PositiveInt | None = 10,
        nonmember_batch_size: PositiveInt = 128,
        **kwargs: Any,
    ):
        critics = tuple(critics)
        if not critics or any(c not in CRITIC_VARIANTS for c in critics):
            raise ValueError(f"`critics` must name variants among {CRITIC_VARIANTS}; got {critics!r}.")
        super().__init__(module, **kwargs)
        self.privacy_weight = float(privacy_weight)
        self.critic_variants = critics
        self.critic_hidden = tuple(int(h) for h in critic_hidden)
        self.spectral_norm = bool(spectral_norm)
        self.critic_pretrain_steps = int(critic_pretrain_steps)
        self.nonmembers = nonmembers
        self.match_nonmembers = match_nonmembers
        self.nonmember_batch_size = int(nonmember_batch_size)
        if self.trainable_critics:
            self.critics = nn.ModuleList()
        self._frozen_critics = FrozenModules()
        self.cells: CriticCells | None = None
        self._nonmember_stream: Iterator[dict[str, torch.Tensor]] | None = None
        self.loss_scale: float | None = None
        self.critic_info: dict[str, Any] = {}

    # -- set-up -------------------------------------------------------------------------------
    def features(self, positions: np.ndarray) -> torch.Tensor:
        """Membership features of the cells at ``positions`` under the current module (no gradients)."""
        device = next(self.module.parameters()).device
        return features_no_grad(self.module, self.require_cells().batches(positions), device)

    def attach_cells(self, cells: CriticCells) -> None:
        """Receive the forget/non-member cells and pre-train the critics on the input model."""
        self.cells = cells
        f = self.features(cells.forget)
        n = self.features(cells.nonmembers)
        # fixed scale of the privacy term: the input model's mean per-cell NELBO (-recon_ll + kl) on the
        # forget cells, so that privacy_weight=1 weighs the privacy term like the utility term
        self.loss_scale = float((-f[:, 0] + f[:, 1]).mean().abs().clamp_min(1.0))
        fitted = pretrain_critics(
            f,
            n,
            variants=self.critic_variants,
            hidden=self.critic_hidden,
            spectral_norm=self.spectral_norm,
            n_steps=self.critic_pretrain_steps,
        )
        if self.trainable_critics:
            self.critics = nn.ModuleList(fitted)
        else:
            for c in fitted:
                c.requires_grad_(False)
            self._frozen_critics = FrozenModules(**{f"critic_{i}": c for i, c in enumerate(fitted)})
        self.critic_info = {
            **cells.info,
            "critic_variants": list(self.critic_variants),
            "critic_train_auc_start": [critic_auc(c, f, n) for c in fitted],
            "privacy_loss_scale": self.loss_scale,
        }

    def require_cells(self) -> CriticCells:
        """The attached cells, or a clear error if the plan was not set up by :func:`run_with_critics`."""
        if self.cells is None:
            raise RuntimeError(
                f"{type(self).__name__} needs forget and non-member cells; run it through scforget.unlearn(...) "
                "(or call `attach_cells` before training)."
            )
        return self.cells

    def nonmember_batch(self) -> dict[str, torch.Tensor]:
        """The next shuffled minibatch of critic non-members, on the module's device."""
        if self._nonmember_stream is None:
            cells = self.require_cells()
            self._nonmember_stream = cells.cycle(cells.nonmembers, self.nonmember_batch_size)
        return tensors_to(next(self._nonmember_stream), self.device)

    def critic_modules(self) -> list[nn.Module]:
        """The critics: registered (trainable) or held frozen, on the plan's device."""
        if self.trainable_critics:
            return list(self.critics)
        return [FrozenModules.on(c, self.device) for c in self._frozen_critics.values()]

    def critic_logits(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every critic."""
        return [c(features) for c in self.critic_modules()]

    def run_info(self) -> dict[str, Any]:
        """What the critics did, for the unlearning record."""
        return dict(self.critic_info)


def plan_defaults(plan_cls: type) -> dict[str, Any]:
    """Default hyper-parameters of a plan, its subclasses' defaults winning over its bases'."""
    import inspect

    out: dict[str, Any] = {}
    for cls in reversed(plan_cls.__mro__):
        if "__init__" in vars(cls):
            params = inspect.signature(vars(cls)["__init__"]).parameters.values()
            out.update({p.name: p.default for p in params if p.default is not inspect.Parameter.empty})
    return out


def run_with_critics(plan_cls: type[CriticTrainingPlan], *, shadow: bool = False):
    """A registry ``run`` for critic-based plans.

    Before scvi-tools' TrainRunner starts (through :func:`~scforget.methods._runner.run_training_plan`),
    it resolves the non-member cells (``nonmembers=`` or the model's never-trained validation cells,
    optionally matched to the forget cells), splits off a shadow-audit part when ``shadow`` is true and
    hands the cells to the plan, which pre-trains its critics on the input model.
    """

    def run(model: BaseModelClass, ctx: UnlearnContext) -> None:
        params = {**plan_defaults(plan_cls), **ctx.params}
        pool, source = select_nonmembers(model, ctx, params.get("nonmembers"), match=params.get("match_nonmembers"))
        shadow_pos = None
        if shadow:
            perm = np.random.default_rng(ctx.seed).permutation(pool)
            n_shadow = int(round(float(params.get("shadow_fraction", 0.5)) * perm.size))
            if n_shadow < 2 or perm.size - n_shadow < 2:
                raise ValueError(
                    f"{perm.size} non-member cells cannot be split into critic and shadow-audit parts of at least "
                    "two cells each; pass more `nonmembers=` or set `match_nonmembers=None`."
                )
            shadow_pos, pool = np.sort(perm[:n_shadow]), np.sort(perm[n_shadow:])
        cells = CriticCells(
            adata_manager=model.adata_manager,
            forget=np.asarray(ctx.forget, dtype=np.int64),
            nonmembers=pool,
            shadow=shadow_pos,
            seed=ctx.seed,
            info={
                "nonmember_source": source,
                "n_critic_nonmembers": int(pool.size),
                "n_shadow_nonmembers": 0 if shadow_pos is None else int(shadow_pos.size),
            },
        )

        def factory(module, **kwargs):
            plan = plan_cls(module, **kwargs)
            plan.attach_cells(cells)
            return plan

        factory.uses_forget = getattr(plan_cls, "uses_forget", True)
        run_training_plan(factory)(model, ctx)

    return run


def register_critic_method(
    name: str,
    plan: type[CriticTrainingPlan],
    *,
    description: str,
    reference: str,
    shadow: bool = False,
    default_epochs: Callable[[int], int] | None = None,
) -> MethodSpec:
    """Register a critic-based plan with :func:`run_with_critics` as its runner."""
    return register(
        name,
        plan=plan,
        description=description,
        reference=reference,
        default_epochs=default_epochs,
        runner=lambda p: run_with_critics(p, shadow=shadow),
        overwrite=True,
    )
