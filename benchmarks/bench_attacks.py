"""LiRA against RMIA with 1, 2, 4 and 8 reference models, on a planted-leak design.

Usage::

    python benchmarks/bench_attacks.py [--quick] [--out results.md]

The planted leak: an scVI memorises 40 B cells (250 epochs, minibatches of 8, no dropout, with 60
other cells); the audit tells those members from 40 never-trained B cells. For each number of
references, LiRA runs with its own reference models (online when every cell has IN and OUT fits)
and RMIA with its own all-OUT references (offline), both trained with the target's recipe. Reported:
AUC with its 95% bootstrap CI and TPR at 1% FPR (with 40 non-members the smallest non-zero FPR is
2.5%, so this is the TPR at FPR 0). Measured in one run on one machine; times include reference
training.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 2 references, 60 epochs")
    parser.add_argument("--references", type=int, nargs="+", default=None, help="reference counts (default 1 2 4 8)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the target and references (default 250)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    counts = args.references or ([1, 2] if args.quick else [1, 2, 4, 8])
    epochs = args.epochs or (60 if args.quick else 250)

    import scanpy as sc
    import scvi
    import torch

    import scforget as sf
    from scforget._core import quiet_training

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    scvi.settings.seed = 0
    adata = sf.datasets.pbmc3k()
    adata = adata[adata.obs["qc_pass"].to_numpy()].copy()
    sc.pp.highly_variable_genes(adata, n_top_genes=300, flavor="seurat_v3", subset=True)
    sf.model.SCVI.setup_anndata(adata)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    b = rng.permutation(np.flatnonzero(labels == "B"))
    members, holdout = np.sort(b[:40]), np.sort(b[40:80])
    others = np.sort(rng.choice(np.flatnonzero(labels != "B"), 60, replace=False))
    train = np.union1d(members, others)
    model = sf.model.SCVI(adata, n_hidden=128, n_latent=10, dropout_rate=0.0)
    with quiet_training():
        model.train(
            max_epochs=epochs,
            batch_size=8,
            enable_progress_bar=False,
            datasplitter_kwargs={
                "external_indexing": [train, np.zeros(0, np.int64), np.setdiff1d(np.arange(adata.n_obs), train)]
            },
        )
    lines = [
        f"# LiRA vs RMIA on a planted leak (40 memorised B cells vs 40 never-trained; {epochs} epochs)",
        "",
        "| references | attack | mode | AUC | 95% CI | TPR at 1% FPR | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in counts:
        for attack in ("lira", "rmia"):
            t0 = time.perf_counter()
            report = sf.audit(
                model,
                members=members,
                nonmembers=holdout,
                attacks=(attack,),
                n_reference=k,
                label_key="cell_type",
                n_bootstrap=1000,
                seed=0,
                progress_bar=False,
            )
            row = report.summary().loc[attack]
            mode = report.info.get("lira_mode", "offline") if attack == "lira" else "offline"
            lines.append(
                f"| {k} | {attack} | {mode} | {row['auc']:.3f} | [{row['ci_low']:.3f}, {row['ci_high']:.3f}] | "
                f"{row['tpr_1pct']:.3f} | {time.perf_counter() - t0:.1f} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
