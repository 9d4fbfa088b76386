"""Pseudo-donors for data from one donor: a stand-in grouping for donor-level deletion experiments."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scforget._core import check_int, close_matches, resolve_seed

if TYPE_CHECKING:
    from anndata import AnnData


def pseudo_donors(
    adata: AnnData, n_donors: int = 8, *, stratify_key: str | None = None, seed: int | None = None
) -> pd.Series:
    """Assign every cell to one of ``n_donors`` pseudo-donors of (near) equal size.

    Data from a single donor (such as pbmc3k) has no donor structure to delete; this makes a grouping
    to rehearse donor-level deletion on. The groups are random, so they share one biology and carry
    no donor effect: a pseudo-donor is an arbitrary, exchangeable set of cells, and results on them
    say nothing about how distinct real donors are. Say so wherever they are used.

    Parameters
    ----------
    adata
        The cells (only ``adata.obs`` is read; nothing is written).
    n_donors
        Number of pseudo-donors (at least 2).
    stratify_key
        An ``adata.obs`` column (e.g. ``"cell_type"``) whose categories are spread evenly over the
        pseudo-donors, so that each has about the same composition; by default cells are shuffled
        without regard to any label.
    seed
        Seed of the assignment (``None`` follows :attr:`scvi.settings.seed`).

    Returns
    -------
    A categorical :class:`pandas.Series` indexed by ``adata.obs_names`` with categories
    ``"donor_0"``, ``"donor_1"``, ...; assign it yourself, e.g. ``adata.obs["donor"] = ...``.
    """
    n_donors = check_int(n_donors, "n_donors", minimum=2)
    if n_donors > adata.n_obs:
        raise ValueError(f"`n_donors`={n_donors} is more than the {adata.n_obs} cells; pass at most {adata.n_obs}.")
    if stratify_key is not None and stratify_key not in adata.obs.columns:
        raise KeyError(
            f"`stratify_key`={stratify_key!r} is not a column of adata.obs.{close_matches(stratify_key, adata.obs)}"
        )
    rng = np.random.default_rng(resolve_seed(seed))
    if stratify_key is None:
        order = rng.permutation(adata.n_obs)
    else:
        # shuffle within each label, then deal the labels' cells out in turn so every donor gets its share
        labels = adata.obs[stratify_key].astype(str).to_numpy()
        order = np.concatenate([rng.permutation(np.flatnonzero(labels == g)) for g in np.unique(labels)])
    donor = np.empty(adata.n_obs, dtype=np.int64)
    donor[order] = np.arange(adata.n_obs) % n_donors
    names = [f"donor_{d}" for d in range(n_donors)]
    return pd.Series(pd.Categorical.from_codes(donor, categories=names), index=adata.obs_names.copy(), name="donor")
