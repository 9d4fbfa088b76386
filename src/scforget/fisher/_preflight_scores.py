"""Cheap pre-flight scores of a forget set, from forward passes of the input model only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from scforget._core import eval_mode, minibatches, posterior, posterior_mean_forward, reconstruction_log_prob

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: Training cells searched for the forget cells' neighbours (a random subset of the retain cells bounds the cost).
MAX_NEIGHBOUR_POOL = 5000
#: Neighbours per forget cell of the isolation score.
N_NEIGHBOURS = 15


def latent_and_fit(model: BaseModelClass, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and reconstruction log-likelihood per count of the cells at ``positions``."""
    from scvi import REGISTRY_KEYS

    module = model.module
    device = next(module.parameters()).device
    means, fits = [], []
    with torch.no_grad(), eval_mode(module):
        for tensors in minibatches(model, positions, batch_size=1024, device=device):
            inf, gen = posterior_mean_forward(module, tensors)
            counts = tensors[REGISTRY_KEYS.X_KEY].sum(-1).clamp(min=1.0)
            means.append(posterior(inf, module).loc.cpu().numpy())
            fits.append((reconstruction_log_prob(module, tensors, gen) / counts).cpu().numpy())
    return np.concatenate(means), np.concatenate(fits)


def isolation(forget_latent: np.ndarray, retain_latent: np.ndarray) -> float:
    """How much the forget cells are their own neighbours, beyond chance (0: mixed in, 1: a group apart).

    Among the :data:`N_NEIGHBOURS` nearest training cells (posterior means) of each forget cell, the
    share that are forget cells, averaged, rescaled so that a forget set drawn at random scores 0 and
    one whose neighbours are all forget cells scores 1.
    """
    from sklearn.neighbors import NearestNeighbors

    pool = np.vstack([forget_latent, retain_latent])
    is_forget = np.r_[np.ones(len(forget_latent), bool), np.zeros(len(retain_latent), bool)]
    k = min(N_NEIGHBOURS, len(pool) - 1)
    nn_ = NearestNeighbors(n_neighbors=k + 1).fit(pool)
    idx = nn_.kneighbors(forget_latent, return_distance=False)[:, 1:]  # drop the cell itself
    share = float(is_forget[idx].mean())
    chance = (len(forget_latent) - 1) / (len(pool) - 1)
    return (share - chance) / (1 - chance)


def memorisation_auc(forget_fit: np.ndarray, calibration_fit: np.ndarray) -> float:
    """AUC of the fit per count, forget cells (members) against calibration cells (never trained).

    The loss attack an audit would run, on cells the audit never uses: 0.5 means the input model fits
    the forget cells no better than never-trained cells of their kind.
    """
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(forget_fit)), np.zeros(len(calibration_fit))]
    return float(roc_auc_score(y, np.r_[forget_fit, calibration_fit]))
