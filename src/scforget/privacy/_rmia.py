"""The relative membership-inference attack (RMIA) of Zarifzadeh et al. 2024, in log space on the NB likelihood."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def log_marginal(ref: np.ndarray, out_mask: np.ndarray) -> np.ndarray:
    """``log p(x)``: log of the mean likelihood of each cell over the reference models that did not train on it.

    Parameters
    ----------
    ref
        Per-cell log-likelihoods under the reference models, ``(n_reference, n_cells)``.
    out_mask
        Which reference model did *not* train on which cell (same shape).
    """
    ref = np.asarray(ref, dtype=np.float64)
    out_mask = np.asarray(out_mask, dtype=bool)
    n_out = out_mask.sum(0)
    if (n_out == 0).any():
        raise ValueError("Every cell needs at least one reference model that did not train on it.")
    masked = np.where(out_mask, ref, -np.inf)
    return logsumexp(masked, axis=0) - np.log(n_out)


def rmia_scores(
    target: np.ndarray,
    ref: np.ndarray,
    out_mask: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    log_gamma: float = 0.0,
) -> np.ndarray:
    """RMIA membership scores: how often a cell's likelihood ratio beats the population's.

    For a cell ``x`` the likelihood ratio is ``log p(x | target) - log p(x)``, with ``p(x)`` the mean
    likelihood under reference models that never trained on ``x`` (offline RMIA; the references may
    be as few as one). The score of ``x`` is the fraction of population cells ``z`` with
    ``LR(x) - LR(z) >= log_gamma``. The population is the non-members (``labels == 0``) of the same
    group as ``x`` (e.g. its cell type; all non-members without ``groups``), never ``x`` itself, so
    the comparison is between cells of one biology and the reference in the ratio cancels what a cell
    type or a sequencing depth does to the likelihood.

    Everything is in log space: NB likelihoods of whole cells are far below the smallest float, and
    the paper's offline correction, which mixes ``p(x)`` with a constant on the probability scale, has
    no meaning for densities of counts; it is not applied.

    Parameters
    ----------
    target
        Per-cell log-likelihood under the audited model, ``(n,)``.
    ref
        Per-cell log-likelihoods under the reference models, ``(n_reference, n)``.
    out_mask
        Which reference model did not train on which cell (``(n_reference, n)``).
    labels
        1 for members, 0 for non-members (the population is drawn from the non-members).
    groups
        Group of each cell (the population of a cell is the non-members of its group).
    log_gamma
        Log of the threshold on the pairwise ratio (0: ``gamma = 1``).

    Returns
    -------
    Scores in [0, 1], higher = member. A cell whose group has no other non-member gets 0.5.
    """
    target = np.asarray(target, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    ratio = target - log_marginal(ref, out_mask)
    groups = np.zeros(target.size, dtype=np.int64) if groups is None else np.asarray(groups)
    scores = np.full(target.size, 0.5)
    for g in np.unique(groups):
        cells = np.flatnonzero(groups == g)
        pop = np.sort(ratio[cells[~labels[cells]]])
        if pop.size == 0:
            continue
        # population values <= ratio(x) - log_gamma, from the sorted population
        beaten = np.searchsorted(pop, ratio[cells] - log_gamma, side="right").astype(np.float64)
        size = np.full(cells.size, float(pop.size))
        own = ~labels[cells]  # a non-member is not its own population
        beaten[own] -= (ratio[cells][own] - log_gamma >= ratio[cells][own]).astype(np.float64)
        size[own] -= 1
        ok = size > 0
        scores[cells[ok]] = beaten[ok] / size[ok]
    return scores
