"""Benchmark of the membership audit: signal throughput and full-audit cost relative to one retrain.

Usage::

    python benchmarks/bench_audit.py [--quick] [--out results.md]

Part 1 times :func:`scforget.privacy.signals` on the 10,000-cell mouse-brain file (skipped when
absent). Part 2 runs the full audit (all attacks, LiRA with ``--n-reference`` trained reference
models) on pbmc3k (QC-pass cells, 2,000 seurat_v3 HVGs) and compares its wall time with one
retrain of the same model; it also times the audit when retrained models are reused as LiRA
references. Everything is measured in one run and printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np

MOUSE_BRAIN = Path("/work/shared/data/mouse_brain_10k_x_1000genes_raw_counts.h5ad")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(model, train_idx, val_idx, epochs: int, batch_size: int = 128):
    rest = np.setdiff1d(np.arange(model.adata.n_obs), np.union1d(train_idx, val_idx))
    model.train(
        max_epochs=epochs,
        batch_size=batch_size,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        datasplitter_kwargs={"external_indexing": [np.asarray(train_idx), np.asarray(val_idx), rest]},
    )
    return model


def bench_signals(rows: list, quick: bool, path: Path) -> None:
    import anndata as ad

    import scforget as sf
    import scforget.privacy  # until the top-level package imports it

    if not path.exists():
        rows.append(("signals (mouse brain)", "skipped: file absent", "", "", ""))
        return
    adata = ad.read_h5ad(path)
    if quick:
        adata = adata[:2000].copy()
    sf.model.SCVI.setup_anndata(adata)
    model = sf.model.SCVI(adata)
    train(model, np.arange(adata.n_obs), np.zeros(0, dtype=np.int64), epochs=1, batch_size=512)
    sf.privacy.signals(model, np.arange(min(1024, adata.n_obs)), progress_bar=False)  # warm-up
    t = time.perf_counter()
    sig = sf.privacy.signals(model, progress_bar=False)
    dt = time.perf_counter() - t
    rows.append(
        (
            f"signals, {adata.n_obs} cells x {adata.n_vars} genes (n_latent 10, k=10)",
            f"{dt:.2f}",
            f"{peak_rss_mb():.0f}",
            f"{len(sig) / dt:,.0f} cells/s",
            "",
        )
    )
    t = time.perf_counter()
    sf.privacy.signals(model, np.arange(min(1000, adata.n_obs)), marginal_ll=True, n_mc_samples=100, progress_bar=False)
    dt = time.perf_counter() - t
    rows.append(
        (
            "signals + marginal LL (100 importance samples), 1000 cells",
            f"{dt:.2f}",
            f"{peak_rss_mb():.0f}",
            f"{1000 / dt:,.0f} cells/s",
            "",
        )
    )


def bench_audit(rows: list, quick: bool, epochs: int, n_reference: int) -> None:
    import scanpy as sc

    import scforget as sf
    import scforget.privacy  # until the top-level package imports it

    adata = sf.datasets.pbmc3k()
    adata = adata[adata.obs["qc_pass"].to_numpy()].copy()
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat_v3")
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    sf.model.SCVI.setup_anndata(adata)
    split = sf.data.structured_forget(adata, "cell_type", "B", holdout_fraction=0.5, seed=0)
    model = train(sf.model.SCVI(adata), split.train, split.validation, epochs)
    t = time.perf_counter()
    retrained = train(sf.model.SCVI(adata), split.retain, split.validation, epochs)
    t_retrain = time.perf_counter() - t
    rows.append(
        (
            f"one retrain ({len(split.retain)} cells, {epochs} epochs)",
            f"{t_retrain:.1f}",
            f"{peak_rss_mb():.0f}",
            "",
            "1.00",
        )
    )
    kw = {"members": split.forget, "nonmembers": split.holdout, "progress_bar": False, "n_bootstrap": 1000}
    t = time.perf_counter()
    rep = sf.privacy.audit(model, n_reference=n_reference, **kw)
    t_full = time.perf_counter() - t
    best = rep.best_attack()
    auc = rep.summary().loc[best, "auc"]
    rows.append(
        (
            f"full audit, 5 attacks, LiRA trains {n_reference} references ({len(split.forget)} vs {len(split.holdout)} B cells)",
            f"{t_full:.1f}",
            f"{peak_rss_mb():.0f}",
            f"best attack {best}: AUC {auc:.3f}",
            f"{t_full / t_retrain:.2f}",
        )
    )
    t = time.perf_counter()
    rep2 = sf.privacy.audit(model, reference_models=[retrained], **kw)
    t_reuse = time.perf_counter() - t
    rows.append(
        (
            "full audit, 5 attacks, LiRA reuses the retrained model (offline)",
            f"{t_reuse:.1f}",
            f"{peak_rss_mb():.0f}",
            f"lira AUC {rep2.summary().loc['lira', 'auc']:.3f}",
            f"{t_reuse / t_retrain:.2f}",
        )
    )
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in rep.info["timings"].items())
    rows.append(("stage timings of the full audit", timings, "", "", ""))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (2,000 mouse-brain cells, 3 epochs, 2 references)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs on pbmc3k (default 50; quick 3)")
    parser.add_argument("--n-reference", type=int, default=None, help="LiRA reference models (default 8; quick 2)")
    parser.add_argument("--mouse-brain", type=Path, default=MOUSE_BRAIN)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import scvi
    import torch

    scvi.settings.seed = 0
    epochs = args.epochs or (3 if args.quick else 50)
    n_ref = args.n_reference or (2 if args.quick else 8)
    rows: list = []
    t0 = time.perf_counter()
    bench_signals(rows, args.quick, args.mouse_brain)
    bench_audit(rows, args.quick, epochs, n_ref)
    header = "| step | wall time (s) | peak RSS so far (MiB) | throughput / result | time / one retrain |\n|---|---|---|---|---|\n"
    table = header + "".join("| " + " | ".join(map(str, r)) + " |\n" for r in rows)
    env = (
        f"\nCommand: `python benchmarks/bench_audit.py{' --quick' if args.quick else ''}`; total {time.perf_counter() - t0:.0f} s; "
        f"torch threads {torch.get_num_threads()}, CPU count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}.\n"
    )
    text = table + env
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
