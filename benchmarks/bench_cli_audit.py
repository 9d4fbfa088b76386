"""Benchmark of the ``scforget audit`` command on pbmc3k: wall time of a user's first audit.

Usage::

    python benchmarks/bench_cli_audit.py [--epochs 100] [--attacks loss classifier]

Trains a stock ``scvi.model.SCVI`` (NB, 128 hidden, 10 latent) on 80% of the QC-pass pbmc3k cells
(2,000 seurat_v3 HVGs; 10% validation, 10% never seen), saves it and its AnnData as a user would,
then times the command in a fresh Python process, as a user runs it::

    scforget audit MODEL DATA --attacks loss classifier --nonmembers-key split --nonmembers-value test

Members are all training cells; non-members the never-seen cells. Training is not part of the
timing. Prints one Markdown line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--attacks", nargs="+", default=["loss", "classifier"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import scanpy as sc
    import scvi

    import scforget as sf

    adata = sf.datasets.pbmc3k()
    adata = adata[adata.obs["qc_pass"].to_numpy()].copy()
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat_v3")
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    rng = np.random.default_rng(0)
    split = rng.choice(np.array(["train", "validation", "test"]), size=adata.n_obs, p=[0.8, 0.1, 0.1])
    adata.obs["split"] = split
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pbmc3k.h5ad"
        adata.write_h5ad(data)
        scvi.model.SCVI.setup_anndata(adata)
        model = scvi.model.SCVI(adata, gene_likelihood="nb")
        t = time.perf_counter()
        model.train(
            max_epochs=args.epochs,
            batch_size=128,
            enable_progress_bar=False,
            datasplitter_kwargs={
                "external_indexing": [np.flatnonzero(split == s) for s in ("train", "validation", "test")]
            },
        )
        train_s = time.perf_counter() - t
        model.save(Path(tmp) / "model", save_anndata=False)
        cmd = [
            sys.executable, "-m", "scforget.benchmark._cli", "audit", str(Path(tmp) / "model"), str(data),
            "--attacks", *args.attacks, "--nonmembers-key", "split", "--nonmembers-value", "test",
            "--out", str(Path(tmp) / "summary.csv"), "--quiet",
        ]  # fmt: skip
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
        audit_s = time.perf_counter() - t
        if done.returncode:
            raise SystemExit(done.stderr)
        print(done.stdout)
    n_train, n_test = int((split == "train").sum()), int((split == "test").sum())
    print(
        f"| `scforget audit --attacks {' '.join(args.attacks)}` | {n_train} members vs {n_test} non-members | "
        f"{audit_s:.1f} s (training the model: {train_s:.1f} s, {args.epochs} epochs) | {os.cpu_count()} cores |"
    )


if __name__ == "__main__":
    main()
