"""Membership critics for adversarial unlearning: differentiable features, critic MLPs, a runner.

Shared by :class:`~scforget.train.FrozenCriticPlan` and :class:`~scforget.train.ExtraGradientPlan`:

- :func:`membership_features`: per-cell signals of a VAE that a membership-inference attacker
  reads (posterior mean and log-variance, negative-binomial reconstruction log-likelihood with the
  observed library size at the posterior mean, analytic KL to the prior), computed **with**
  gradients through the module so that the VAE can be trained against a critic;
- :class:`MembershipCritic`: a small MLP on standardised features (optionally spectrally normalised);
- :func:`pretrain_critics`: fit critics on forget (members) vs never-trained cells (non-members);
- :func:`shadow_audit`: a fresh cross-validated logistic-regression attack for early stopping;
- :func:`run_with_critics` / :func:`register_critic_method`: a registry ``run`` that collects the
  forget and non-member cells, pre-trains the critics on the input model and hands them to the plan
  before scvi-tools' TrainRunner starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from torch import nn

from scforget import _compat
from scforget.data import as_positions

from ._base import UnlearningTrainingPlan
from ._registry import register
from ._runner import run_training_plan

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

    from ._registry import MethodSpec, UnlearnContext

#: Feature subsets a critic can read (the study's attacker variants, see reference-study-spec 4.1).
CRITIC_VARIANTS = ("all", "scores", "latent")


# -- features ---------------------------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run the block with ``module`` in eval mode (BatchNorm frozen, dropout off); gradients still flow.

    The training flag of every submodule is restored afterwards.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.train(flag)


def feature_names(n_latent: int) -> list[str]:
    """Names of the columns returned by :func:`membership_features`."""
    return ["recon_ll", "kl"] + [f"mean_{i}" for i in range(n_latent)] + [f"logvar_{i}" for i in range(n_latent)]


def variant_columns(variant: str, n_latent: int) -> np.ndarray:
    """Columns of :func:`membership_features` read by a critic of the given ``variant``.

    ``"all"``: every feature; ``"scores"``: reconstruction log-likelihood and KL; ``"latent"``:
    posterior mean and log-variance.
    """
    if variant == "all":
        return np.arange(2 + 2 * n_latent)
    if variant == "scores":
        return np.arange(2)
    if variant == "latent":
        return np.arange(2, 2 + 2 * n_latent)
    raise ValueError(f"Unknown critic variant {variant!r}; choose from {', '.join(CRITIC_VARIANTS)}.")


def membership_features(module: nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-cell membership signals of a scvi-tools VAE, differentiable with respect to the module.

    Parameters
    ----------
    module
        A VAE module (:class:`scvi.module.VAE` or :class:`scvi.module.VAEC`). The caller chooses its
        mode; use :func:`eval_mode` so that BatchNorm statistics stay untouched.
    tensors
        A minibatch from a scvi-tools data loader (on the module's device).

    Returns
    -------
    A ``(cells, 2 + 2 * n_latent)`` tensor with columns :func:`feature_names`: the negative-binomial
    log-likelihood of the counts at the posterior mean (observed library size), the analytic KL
    divergence of the posterior to the standard normal prior, the posterior mean and the posterior
    log-variance. The posterior mean is used instead of a random draw so the features are
    deterministic (reference-study error E4).
    """
    x = tensors[REGISTRY_KEYS.X_KEY]
    inf = dict(module.inference(**_compat.inference_input(module, tensors)))
    qz = inf["qz"]
    if getattr(module, "use_observed_lib_size", True) is False:
        inf["library"] = torch.log(x.sum(1, keepdim=True))
    z_transform = getattr(getattr(module, "z_encoder", None), "z_transformation", None)
    inf["z"] = z_transform(qz.loc) if z_transform is not None else qz.loc
    px = module.generative(**_compat.generative_input(module, tensors, inf))["px"]
    recon = px.log_prob(x).sum(-1)
    logvar = 2.0 * torch.log(qz.scale)
    kl = 0.5 * (qz.loc.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
    return torch.cat([recon[:, None], kl[:, None], qz.loc, logvar], dim=1)


def features_no_grad(module: nn.Module, tensors: dict[str, torch.Tensor], batch_size: int = 1024) -> torch.Tensor:
    """:func:`membership_features` in eval mode without gradients, in chunks of ``batch_size`` cells."""
    n = next(iter(tensors.values())).shape[0]
    out = []
    with eval_mode(module), torch.no_grad():
        for start in range(0, n, batch_size):
            out.append(membership_features(module, slice_tensors(tensors, slice(start, start + batch_size))))
    return torch.cat(out)


def slice_tensors(tensors: dict[str, torch.Tensor], index) -> dict[str, torch.Tensor]:
    """Select cells (rows) of every tensor in a minibatch dict."""
    return {k: (v[index] if isinstance(v, torch.Tensor) else v) for k, v in tensors.items()}


def tensors_to(tensors: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """Move every tensor of a minibatch dict to ``device``."""
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in tensors.items()}


def collect_tensors(model: BaseModelClass, positions: np.ndarray, batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """All registered tensors of the cells at ``positions`` of ``model.adata``, concatenated (CPU)."""
    parts: dict[str, list[torch.Tensor]] = {}
    loader = _compat.make_data_loader(model, indices=np.asarray(positions, dtype=np.int64), batch_size=batch_size)
    for tensors in loader:
        for k, v in tensors.items():
            if isinstance(v, torch.Tensor):
                parts.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


# -- critics ----------------------------------------------------------------------------------
class MembershipCritic(nn.Module):
    """A membership critic: an MLP on standardised membership features, returning a logit.

    A positive logit means "member" (a training cell). The standardisation (mean and standard
    deviation of each read feature on the critic's pre-training data) is a fixed buffer, so the
    critic sees features on comparable scales (reference-study error E5).

    Parameters
    ----------
    columns
        Indices of the :func:`membership_features` columns the critic reads.
    mean, std
        Standardisation of those columns.
    hidden
        Widths of the hidden layers.
    spectral_norm
        Spectrally normalise every linear layer (a 1-Lipschitz critic up to the standardisation),
        which keeps the critic's gradients bounded when the VAE is trained against it.
    """

    def __init__(
        self,
        columns: Sequence[int],
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        hidden: Sequence[int] = (64, 64),
        spectral_norm: bool = False,
    ):
        super().__init__()
        self.register_buffer("columns", torch.as_tensor(np.asarray(columns), dtype=torch.long))
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float().clamp_min(1e-6))
        layers: list[nn.Module] = []
        width = len(columns)
        for h in (*hidden, 1):
            lin = nn.Linear(width, int(h))
            if spectral_norm:
                lin = nn.utils.parametrizations.spectral_norm(lin)
            layers += [lin, nn.LeakyReLU(0.2)]
            width = int(h)
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Membership logits of ``features`` (cells x all feature columns)."""
        x = (features[:, self.columns] - self.mean) / self.std
        return self.net(x).squeeze(-1)


def balanced_bce(logits_members: torch.Tensor, logits_nonmembers: torch.Tensor) -> torch.Tensor:
    """Class-balanced binary cross-entropy: mean of the member (label 1) and non-member (label 0) terms."""
    bce = nn.functional.binary_cross_entropy_with_logits
    return 0.5 * (
        bce(logits_members, torch.ones_like(logits_members))
        + bce(logits_nonmembers, torch.zeros_like(logits_nonmembers))
    )


def pretrain_critics(
    members: torch.Tensor,
    nonmembers: torch.Tensor,
    *,
    variants: Sequence[str] = CRITIC_VARIANTS,
    hidden: Sequence[int] = (64, 64),
    spectral_norm: bool = False,
    n_steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
) -> list[MembershipCritic]:
    """Fit one critic per variant on member vs non-member features (full batch, balanced BCE).

    Parameters
    ----------
    members, nonmembers
        Outputs of :func:`membership_features` (no gradients) of forget cells and of never-trained cells.
    variants
        Which feature subsets the critics read (see :func:`variant_columns`).
    hidden
        Hidden-layer widths.
    spectral_norm
        Spectrally normalised layers.
    n_steps
        Adam steps on the full (small) data set.
    lr
        Adam learning rate.
    weight_decay
        Adam weight decay.

    Returns
    -------
    The critics, in eval mode with gradients still enabled on their parameters.
    """
    n_latent = (members.shape[1] - 2) // 2
    both = torch.cat([members, nonmembers]).detach()
    critics = []
    for variant in variants:
        cols = variant_columns(variant, n_latent)
        critic = MembershipCritic(
            cols, both[:, cols].mean(0), both[:, cols].std(0), hidden=hidden, spectral_norm=spectral_norm
        ).to(members.device)
        opt = torch.optim.Adam(critic.parameters(), lr=lr, weight_decay=weight_decay)
        critic.train()
        for _ in range(int(n_steps)):
            opt.zero_grad(set_to_none=True)
            loss = balanced_bce(critic(members.detach()), critic(nonmembers.detach()))
            loss.backward()
            opt.step()
        critic.eval()
        critics.append(critic)
    return critics


def critic_auc(critic: MembershipCritic, members: torch.Tensor, nonmembers: torch.Tensor) -> float:
    """ROC AUC of ``critic`` on member vs non-member features (no gradients)."""
    from sklearn.metrics import roc_auc_score

    with torch.no_grad():
        scores = torch.cat([critic(members), critic(nonmembers)]).cpu().numpy()
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return float(roc_auc_score(labels, scores))


def shadow_audit(members: torch.Tensor, nonmembers: torch.Tensor, *, n_folds: int = 5, seed: int = 0) -> float:
    """Cross-validated AUC of a fresh logistic-regression membership attack.

    Features are standardised on each training fold (scikit-learn pipeline) and the AUC is computed
    from out-of-fold scores only (reference-study errors E1, E5), with class-balanced weights.

    Parameters
    ----------
    members, nonmembers
        Features (cells x features) of member and non-member cells.
    n_folds
        Folds of the stratified cross-validation (reduced to the size of the smaller class).
    seed
        Seed of the fold assignment.

    Returns
    -------
    The out-of-fold ROC AUC (0.5: the attack cannot tell members from non-members).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = torch.cat([members, nonmembers]).detach().cpu().double().numpy()
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    k = int(min(n_folds, len(members), len(nonmembers)))
    if k < 2:
        raise ValueError("The shadow audit needs at least two member and two non-member cells.")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000))
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    scores = cross_val_predict(clf, x, y, cv=folds, method="decision_function")
    return float(roc_auc_score(y, scores))


# -- cells handed to the plans ------------------------------------------------------------------
@dataclass
class CriticCells:
    """Cells a critic-based plan needs besides the retain/forget minibatches.

    Attributes
    ----------
    forget
        Tensors of all forget cells.
    nonmembers
        Tensors of the never-trained cells the critics learn from.
    shadow
        Tensors of further never-trained cells for the shadow audit (``None`` when not requested).
    info
        Counts and provenance, copied into the unlearning record.
    """

    forget: dict[str, torch.Tensor]
    nonmembers: dict[str, torch.Tensor]
    shadow: dict[str, torch.Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def select_nonmembers(
    model: BaseModelClass,
    ctx: UnlearnContext,
    nonmembers,
    *,
    match: int | None,
) -> tuple[np.ndarray, str]:
    """Never-trained cells for the critics: ``nonmembers`` or the model's validation cells.

    With ``match=k`` only the union of the ``k`` nearest candidates (Euclidean distance between
    posterior means of the input model) of each forget cell is kept, so that non-members resemble the
    forget cells (reference-study errors E3, M1).
    """
    if nonmembers is None:
        pool, source = np.asarray(ctx.validation, dtype=np.int64), "model validation cells"
        if pool.size < 2:
            raise ValueError(
                "Critic-based unlearning needs never-trained non-member cells, but the model has no validation "
                "cells. Pass `nonmembers=` (cells the model never trained on, not the ones you audit with)."
            )
    else:
        pool, source = as_positions(nonmembers, model.adata.obs_names, argument="nonmembers"), "nonmembers="
        trained = np.union1d(ctx.retain, ctx.forget)
        if model.train_indices is not None:
            trained = np.union1d(trained, np.asarray(model.train_indices, dtype=np.int64))
        overlap = np.intersect1d(pool, trained)
        if overlap.size:
            raise ValueError(
                f"{overlap.size} of the `nonmembers` cells were training cells of the model; non-members must be "
                "cells the model never trained on."
            )
        if pool.size < 2:
            raise ValueError("`nonmembers` must contain at least two cells.")
    if match is not None:
        if not isinstance(match, int | np.integer) or match < 1:
            raise ValueError(f"`match_nonmembers` must be a positive integer or None; got {match!r}.")
        if match * len(ctx.forget) < pool.size:
            from sklearn.neighbors import NearestNeighbors

            module = model.module
            device = next(module.parameters()).device
            f_mean = _posterior_means(module, collect_tensors(model, ctx.forget), device)
            p_mean = _posterior_means(module, collect_tensors(model, pool), device)
            nn_ = NearestNeighbors(n_neighbors=min(int(match), pool.size)).fit(p_mean)
            pool = np.unique(pool[nn_.kneighbors(f_mean, return_distance=False).ravel()])
            source += f", {match} nearest per forget cell"
    return pool, source


def _posterior_means(module: nn.Module, tensors: dict, device) -> np.ndarray:
    feats = features_no_grad(module, tensors_to(tensors, device))
    n_latent = (feats.shape[1] - 2) // 2
    return feats[:, 2 : 2 + n_latent].cpu().numpy()


class CriticTrainingPlan(UnlearningTrainingPlan):
    """Shared mechanics of critic-based plans; not a method itself.

    Subclasses receive :class:`CriticCells` through :meth:`attach_cells` before training starts (done
    by :func:`run_with_critics`), pre-train their critics there, and read non-member minibatches with
    :meth:`nonmember_batch`.
    """

    #: Fraction of the non-members kept aside for the shadow audit (0: no shadow audit).
    shadow_fraction_default: float = 0.0

    def __init__(
        self,
        module,
        *,
        privacy_weight: float,
        critics: Sequence[str],
        critic_hidden: Sequence[int],
        spectral_norm: bool,
        critic_pretrain_steps: int,
        nonmembers=None,
        match_nonmembers: int | None = 10,
        nonmember_batch_size: int = 128,
        **kwargs: Any,
    ):
        if privacy_weight < 0:
            raise ValueError(f"`privacy_weight` must be non-negative; got {privacy_weight!r}.")
        critics = tuple(critics)
        if not critics or any(c not in CRITIC_VARIANTS for c in critics):
            raise ValueError(f"`critics` must name variants among {CRITIC_VARIANTS}; got {critics!r}.")
        if critic_pretrain_steps < 0 or nonmember_batch_size < 1:
            raise ValueError("`critic_pretrain_steps` must be >= 0 and `nonmember_batch_size` >= 1.")
        super().__init__(module, **kwargs)
        self.privacy_weight = float(privacy_weight)
        self.critic_variants = critics
        self.critic_hidden = tuple(int(h) for h in critic_hidden)
        self.spectral_norm = bool(spectral_norm)
        self.critic_pretrain_steps = int(critic_pretrain_steps)
        self.nonmembers = nonmembers
        self.match_nonmembers = match_nonmembers
        self.nonmember_batch_size = int(nonmember_batch_size)
        self.critics = nn.ModuleList()
        self.cells: CriticCells | None = None
        self.loss_scale: float | None = None
        self.critic_info: dict[str, Any] = {}

    # -- set-up -------------------------------------------------------------------------------
    def attach_cells(self, cells: CriticCells) -> None:
        """Receive the forget/non-member cells and pre-train the critics on the input model."""
        self.cells = cells
        device = next(self.module.parameters()).device
        f = features_no_grad(self.module, tensors_to(cells.forget, device))
        n = features_no_grad(self.module, tensors_to(cells.nonmembers, device))
        # fixed scale of the privacy term: the input model's mean per-cell NELBO (-recon_ll + kl) on the
        # forget cells, so that privacy_weight=1 weighs the privacy term like the utility term
        self.loss_scale = float((-f[:, 0] + f[:, 1]).mean().abs().clamp_min(1.0))
        critics = pretrain_critics(
            f,
            n,
            variants=self.critic_variants,
            hidden=self.critic_hidden,
            spectral_norm=self.spectral_norm,
            n_steps=self.critic_pretrain_steps,
        )
        self.critics = nn.ModuleList(critics)
        self.critic_info = {
            **cells.info,
            "critic_variants": list(self.critic_variants),
            "critic_train_auc_start": [critic_auc(c, f, n) for c in critics],
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
        """A random minibatch of critic non-members on the module's device."""
        cells = self.require_cells().nonmembers
        n = next(iter(cells.values())).shape[0]
        idx = torch.randperm(n)[: self.nonmember_batch_size]
        return tensors_to(slice_tensors(cells, idx), self.device)

    def critic_logits(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every critic."""
        return [c(features) for c in self.critics]


def run_with_critics(plan_cls: type[CriticTrainingPlan], *, shadow: bool = False):
    """A registry ``run`` for critic-based plans.

    Mirrors :func:`scforget.methods._runner.run_training_plan` (and reuses it): before scvi-tools'
    TrainRunner starts, it resolves the non-member cells (``nonmembers=`` or the model's never-trained
    validation cells, optionally matched to the forget cells), splits off a shadow-audit part when
    ``shadow`` is true, collects the cells' tensors and hands them to the plan, which pre-trains its
    critics on the input model.
    """

    def run(model: BaseModelClass, ctx: UnlearnContext) -> None:
        params = ctx.params
        defaults = inspect_defaults(plan_cls)
        pool, source = select_nonmembers(
            model,
            ctx,
            params.get("nonmembers", defaults.get("nonmembers")),
            match=params.get("match_nonmembers", defaults.get("match_nonmembers")),
        )
        shadow_pos = None
        if shadow:
            frac = float(params.get("shadow_fraction", defaults.get("shadow_fraction", 0.5)))
            if not 0 < frac < 1:
                raise ValueError(f"`shadow_fraction` must lie strictly between 0 and 1; got {frac!r}.")
            perm = np.random.default_rng(ctx.seed).permutation(pool)
            n_shadow = int(round(frac * perm.size))
            if n_shadow < 2 or perm.size - n_shadow < 2:
                raise ValueError(
                    f"{perm.size} non-member cells cannot be split into critic and shadow-audit parts of at least "
                    "two cells each; pass more `nonmembers=` or set `match_nonmembers=None`."
                )
            shadow_pos, pool = np.sort(perm[:n_shadow]), np.sort(perm[n_shadow:])
        cells = CriticCells(
            forget=collect_tensors(model, ctx.forget),
            nonmembers=collect_tensors(model, pool),
            shadow=None if shadow_pos is None else collect_tensors(model, shadow_pos),
            info={
                "nonmember_source": source,
                "n_critic_nonmembers": int(pool.size),
                "n_shadow_nonmembers": 0 if shadow_pos is None else int(shadow_pos.size),
            },
        )
        made: list[CriticTrainingPlan] = []

        def factory(module, **kwargs):
            plan = plan_cls(module, **kwargs)
            plan.attach_cells(cells)
            made.append(plan)
            return plan

        factory.uses_forget = getattr(plan_cls, "uses_forget", True)
        run_training_plan(factory)(model, ctx)
        if made:
            ctx.info.update(made[-1].critic_info)

    return run


def inspect_defaults(plan_cls: type) -> dict[str, Any]:
    """Keyword defaults of ``plan_cls.__init__``."""
    import inspect

    return {
        p.name: p.default
        for p in inspect.signature(plan_cls.__init__).parameters.values()
        if p.default is not inspect.Parameter.empty
    }


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
