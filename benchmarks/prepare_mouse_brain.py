"""Make a labelled benchmark file from the mouse-brain counts: a random subset of cells with k-means clusters.

The 10x mouse-brain file in ``../shared/data`` (first 10,000 cells x 1,000 genes of the "1.3 million
brain cells" data, CC BY 4.0, 10x Genomics) has no labels. The benchmark's structured designs need a
label column, so this script draws ``--n-cells`` cells at random, clusters them (scanpy: library-size
normalisation, log1p, PCA on the 1,000 genes; scikit-learn's k-means on 20 principal components) and
writes the raw counts with ``obs['cluster']`` (``c0`` the largest cluster, ``c1`` the next, ...).
The clusters stand in for cell types; they are not annotated biology.

Run::

    python benchmarks/prepare_mouse_brain.py --out /tmp/mouse_brain_3k.h5ad
    scforget benchmark --data /tmp/mouse_brain_3k.h5ad --label-key cluster --forget c5 random:100 ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mouse_brain_10k_x_1000genes_raw_counts.h5ad"


def main() -> None:
    """Parse the command line and write the labelled subset."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    from sklearn.cluster import KMeans

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-cells", type=int, default=3000)
    parser.add_argument("--n-clusters", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    adata = ad.read_h5ad(args.source)
    rng = np.random.default_rng(args.seed)
    keep = np.sort(rng.choice(adata.n_obs, size=min(args.n_cells, adata.n_obs), replace=False))
    adata = adata[keep].copy()
    sc.pp.filter_cells(adata, min_counts=1)
    work = adata.copy()
    sc.pp.normalize_total(work, target_sum=1e4)
    sc.pp.log1p(work)
    sc.pp.pca(work, n_comps=20, random_state=args.seed)
    labels = KMeans(n_clusters=args.n_clusters, n_init=10, random_state=args.seed).fit_predict(work.obsm["X_pca"])
    order = pd.Series(labels).value_counts().index  # largest first
    names = {int(c): f"c{i}" for i, c in enumerate(order)}
    adata.obs["cluster"] = pd.Categorical([names[int(c)] for c in labels])
    adata.obs = adata.obs[["cluster"]]
    adata.write_h5ad(args.out)
    print(adata.obs["cluster"].value_counts().to_string())


if __name__ == "__main__":
    main()
