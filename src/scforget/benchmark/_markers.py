"""Marker-gene utility: does an unlearned model still express the markers as retraining does?"""

from __future__ import annotations

import numpy as np

#: The reference study's PBMC markers (T: CD3D, CD3E; B: MS4A1, CD79A; monocytes: CD14, LYZ; NK: NKG7, GNLY).
PBMC_MARKERS = ("CD3D", "CD3E", "MS4A1", "CD79A", "CD14", "LYZ", "NKG7", "GNLY")


def marker_expression(model, cells: np.ndarray, genes: list[str], *, seed: int) -> np.ndarray:
    """Normalised expression (library size 1, mean of 25 posterior draws) of ``genes`` at ``cells``."""
    from scforget._core import seeded

    with seeded(seed):  # the draws are seeded; the caller's random state is restored
        frame = model.get_normalized_expression(
            indices=cells, gene_list=genes, library_size=1, n_samples=25, return_mean=True, return_numpy=False
        )
    return np.asarray(frame, dtype=np.float64)


def mean_gene_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over genes (columns) of the Pearson correlation across cells; genes constant in either are skipped."""
    rs = []
    for j in range(a.shape[1]):
        x, y = a[:, j], b[:, j]
        if np.std(x) > 0 and np.std(y) > 0:
            rs.append(float(np.corrcoef(x, y)[0, 1]))
    return float(np.mean(rs)) if rs else float("nan")


def observed_proportions(adata, cells: np.ndarray, genes: list[str]) -> np.ndarray:
    """Observed counts of ``genes`` over each cell's library size (the study compared reconstructions with these)."""
    import scipy.sparse as sp

    x = adata.X[cells]
    lib = np.asarray(x.sum(1)).ravel()
    cols = adata.var_names.get_indexer(genes)
    sub = x[:, cols]
    sub = sub.toarray() if sp.issparse(sub) else np.asarray(sub)
    return sub / np.maximum(lib, 1)[:, None]
