"""A fleet of LiRA/RMIA reference models on a 2-worker Dask cluster against the sequential path.

Usage::

    python benchmarks/bench_fleet.py [--n-reference 8] [--epochs 20] [--workers 2] [--out fleet.md]

On the bundled pbmc3k (QC-passing cells, 2,000 highly variable genes), a default scVI (n_hidden
128, n_latent 10) is trained on a random 80% of the cells for ``--epochs`` epochs; the audit's
members are 300 of its training cells and its non-members 300 of the other cells.
:func:`scforget.audit` with ``attacks=("lira", "rmia")`` then trains ``--n-reference`` reference
models (``--epochs`` epochs each) three times: one after another in this process (``fleet=None``)
with torch on every core, the same with torch on one thread, and on ``--workers`` local worker
processes with one thread each (:func:`scforget.local_fleet`, what ``--fleet local:N``
starts). Reported: the wall times (the cluster's start-up excluded, its workers' first imports
included), their ratios, and the largest differences between the paths' per-cell scores. The
one-thread sequential run must give the fleet's scores exactly; with every core, float32 sums run
in another order, the trainings drift apart and so do the scores (not the AUCs).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    """Run the comparison and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-reference", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/issue13/fleet.md"))
    args = parser.parse_args()

    import numpy as np
    import scanpy as sc
    import scvi
    import torch

    import scforget as sf

    adata = sf.datasets.pbmc3k()
    adata = adata[adata.obs["qc_pass"].to_numpy()].copy()
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat_v3")
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    order = rng.permutation(adata.n_obs)
    n_train = int(0.8 * adata.n_obs)
    train, unseen = np.sort(order[:n_train]), np.sort(order[n_train:])
    rest = np.zeros(0, dtype=np.int64)
    sf.model.SCVI.setup_anndata(adata)
    scvi.settings.seed = 0
    model = sf.model.SCVI(adata)
    model.train(
        max_epochs=args.epochs,
        accelerator="cpu",
        enable_progress_bar=False,
        datasplitter_kwargs={"external_indexing": [train, rest, unseen]},
    )
    members = rng.choice(train, 300, replace=False)
    nonmembers = rng.choice(unseen, 300, replace=False)
    kw = {
        "members": members,
        "nonmembers": nonmembers,
        "attacks": ("lira", "rmia"),
        "n_reference": args.n_reference,
        "reference_epochs": args.epochs,
        "n_bootstrap": 200,
        "seed": 0,
        "progress_bar": False,
        "accelerator": "cpu",
    }
    start = time.perf_counter()
    here = sf.audit(model, **kw)
    sequential_s = time.perf_counter() - start
    torch.set_num_threads(1)  # the workers' thread count: the same float32 summation order
    start = time.perf_counter()
    here_one = sf.audit(model, **kw)
    sequential_one_s = time.perf_counter() - start
    torch.set_num_threads(threads)
    with sf.local_fleet(args.workers) as client:
        start = time.perf_counter()
        there = sf.audit(model, fleet=client, **kw)
        fleet_s = time.perf_counter() - start

    def max_diff(a, b):
        return {x: float(np.max(np.abs(a.per_cell[x].to_numpy() - b.per_cell[x].to_numpy()))) for x in kw["attacks"]}

    auc = {a: (float(here.summary().loc[a, "auc"]), float(there.summary().loc[a, "auc"])) for a in kw["attacks"]}
    record = {
        "cells": int(adata.n_obs),
        "genes": int(adata.n_vars),
        "training_cells": int(train.size),
        "n_reference": args.n_reference,
        "epochs": args.epochs,
        "workers": args.workers,
        "sequential_torch_threads": threads,
        "cpu_count": os.cpu_count(),
        "sequential_s": round(sequential_s, 2),
        "sequential_one_thread_s": round(sequential_one_s, 2),
        "fleet_s": round(fleet_s, 2),
        "speedup": round(sequential_s / fleet_s, 3),
        "speedup_vs_one_thread": round(sequential_one_s / fleet_s, 3),
        "max_abs_score_difference_fleet_vs_one_thread": max_diff(there, here_one),
        "max_abs_score_difference_fleet_vs_sequential": max_diff(there, here),
        "auc_sequential_vs_fleet": auc,
    }
    print(json.dumps(record, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"Command: `python benchmarks/bench_fleet.py --n-reference {args.n_reference} --epochs {args.epochs} "
        f"--workers {args.workers}`",
        "",
        "| quantity | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in record.items()],
        "",
    ]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
