"""Membership critics for adversarial unlearning: differentiable features, critic MLPs, a shadow audit.

Shared by :class:`~scforget.train.FrozenCriticPlan` and :class:`~scforget.train.ExtraGradientPlan`
(whose common plan mechanics live in :mod:`scforget.methods._critic_plan`):

- :func:`membership_features`: per-cell signals of a VAE that a membership-inference attacker
  reads (posterior mean and log-variance, negative-binomial reconstruction log-likelihood with the
  observed library size at the posterior mean, analytic KL to the prior), computed **with**
  gradients through the module so that the VAE can be trained against a critic;
- :class:`MembershipCritic`: a small MLP on standardised features (optionally spectrally normalised);
- :func:`pretrain_critics`: fit critics on forget (members) vs never-trained cells (non-members);
- :func:`shadow_audit`: a fresh cross-validated logistic-regression attack for early stopping.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from scforget._core import eval_mode, kl_to_prior, posterior_mean_forward, reconstruction_log_prob, tensors_to

#: Feature subsets a critic can read (the study's attacker variants, see reference-study-spec 4.1).
CRITIC_VARIANTS = ("all", "scores", "latent")


# -- features ---------------------------------------------------------------------------------
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
        mode; use :func:`~scforget._core.eval_mode` so that BatchNorm statistics stay untouched.
    tensors
        A minibatch from a scvi-tools data loader (on the module's device).

    Returns
    -------
    A ``(cells, 2 + 2 * n_latent)`` tensor with columns :func:`feature_names`: the negative-binomial
    log-likelihood of the counts at the posterior mean (observed library size), the analytic KL
    divergence of the posterior to the prior, the posterior mean and the posterior log-variance.
    The posterior mean is used instead of a random draw so the features are deterministic (one
    random draw per cell made the study's features noisy).
    """
    inf, gen = posterior_mean_forward(module, tensors)
    qz = inf["qz"]
    recon = reconstruction_log_prob(module, tensors, gen)
    kl = kl_to_prior(inf, gen)
    return torch.cat([recon[:, None], kl[:, None], qz.loc, 2.0 * torch.log(qz.scale)], dim=1)


def features_no_grad(module: nn.Module, batches: Iterable[dict[str, torch.Tensor]], device) -> torch.Tensor:
    """:func:`membership_features` of every minibatch, in eval mode and without gradients."""
    out = []
    with eval_mode(module), torch.no_grad():
        for tensors in batches:
            out.append(membership_features(module, tensors_to(tensors, device)))
    return torch.cat(out)


# -- critics ----------------------------------------------------------------------------------
class MembershipCritic(nn.Module):
    """A membership critic: an MLP on standardised membership features, returning a logit.

    A positive logit means "member" (a training cell). The standardisation (mean and standard
    deviation of each read feature on the critic's pre-training data) is a fixed buffer, so the
    critic sees features on comparable scales (unscaled features let the study's attackers fit the
    largest one only).

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


def shadow_audit(members: torch.Tensor, nonmembers: torch.Tensor, *, seed: int, n_folds: int = 5) -> float:
    """Cross-validated AUC of a fresh logistic-regression membership attack.

    Features are standardised on each training fold (scikit-learn pipeline) and the AUC is computed
    from out-of-fold scores only (never in-sample, which overstates any attack), with class-balanced
    weights.

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
