"""Never-trained cells that look like the members in the model's latent space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scforget._core import check_int, close_matches, never_trained, warn

from ._index import CellSpec, as_positions

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass


@dataclass(frozen=True)
class MatchedNegatives:
    """Matched non-members found by :func:`matched_negatives`.

    Attributes
    ----------
    positions
        Sorted unique positions (into ``model.adata``) of the matched never-trained cells.
    neighbors
        ``(n_members, k)`` positions of each member's nearest pool cells (may repeat across members).
    n_requested
        ``k`` times the number of members: the number of matches before removing duplicates.
    composition
        Number of matched cells per group of ``groupby`` (``None`` without ``groupby``).
    """

    positions: np.ndarray
    neighbors: np.ndarray
    n_requested: int
    composition: pd.Series | None = None

    @property
    def n_distinct(self) -> int:
        """Number of distinct matched cells."""
        return int(self.positions.size)

    def __len__(self) -> int:
        return self.n_distinct

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.positions, dtype=dtype)

    def __repr__(self) -> str:
        comp = "" if self.composition is None else f", composition={self.composition.to_dict()}"
        return f"MatchedNegatives(n_distinct={self.n_distinct} of {self.n_requested} matches{comp})"


def matched_negatives(
    model: BaseModelClass,
    members: CellSpec,
    pool: CellSpec | None = None,
    k: int = 10,
    *,
    groupby: str | None = None,
    batch_size: int | None = None,
) -> MatchedNegatives:
    """The ``k`` nearest never-trained cells to each member in the model's posterior-mean latent space.

    Parameters
    ----------
    model
        A trained scvi-tools model with ``get_latent_representation``.
    members
        The member cells (positions, mask, obs names or boolean Series of ``model.adata``).
    pool
        Candidate non-members; defaults to every cell the model neither trained nor validated on.
        Training cells, validation cells and members in ``pool`` are dropped with a warning.
    k
        Neighbours per member.
    groupby
        Column of ``model.adata.obs`` whose composition among the matched cells is reported.
    batch_size
        Minibatch size for the latent representation.

    Returns
    -------
    The matched cells; ``len(result)`` is the number of distinct cells.

    Examples
    --------
    >>> neg = scforget.data.matched_negatives(model, split.forget, k=10, groupby="cell_type")
    >>> neg.n_distinct, neg.composition
    """
    from sklearn.neighbors import NearestNeighbors

    names = model.adata.obs_names
    mem = as_positions(members, names, argument="members")
    k = check_int(k, "k", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1, allow_none=True)
    if groupby is not None and groupby not in model.adata.obs.columns:
        raise KeyError(f"`groupby`={groupby!r} is not a column of adata.obs.{close_matches(groupby, model.adata.obs)}")
    allowed = np.setdiff1d(never_trained(model), mem)
    if pool is None:
        cand = allowed
    else:
        cand = as_positions(pool, names, argument="pool")
        dropped = np.setdiff1d(cand, allowed)
        if dropped.size:
            warn(f"{dropped.size} cell(s) of `pool` were trained or validated on, or are members; they were dropped.")
        cand = np.intersect1d(cand, allowed)
    if cand.size == 0:
        raise ValueError(
            "No never-trained cells are available to match: the model was trained on every cell (e.g. CondSCVI "
            "with train_size=1) or `pool` holds only training cells. Train with held-out cells or pass a `pool`."
        )
    kk = min(int(k), cand.size)
    if kk < k:
        warn(f"Only {cand.size} pool cells; using k={kk}.")
    z_mem = model.get_latent_representation(indices=mem, give_mean=True, batch_size=batch_size)
    z_pool = model.get_latent_representation(indices=cand, give_mean=True, batch_size=batch_size)
    nn = NearestNeighbors(n_neighbors=kk).fit(z_pool)
    _, idx = nn.kneighbors(z_mem)
    neighbors = cand[idx]
    positions = np.unique(neighbors)
    composition = None
    if groupby is not None:
        composition = model.adata.obs[groupby].iloc[positions].astype(str).value_counts()
        composition.name = "n_cells"
    return MatchedNegatives(positions, neighbors, int(mem.size * kk), composition)
