"""Benchmark of the Fisher engine, the parameter-space methods, and the reference study's Fisher-overlap check.

Usage::

    python benchmarks/bench_fisher.py [--quick] [--out results.md] [--threads N] [--measure-retrain]

On pbmc3k (QC-pass cells, 2,000 seurat_v3 HVGs) it trains a default scVI (1x128 hidden, 10 latent)
and a wide one (3x1024 hidden, 32 latent) on all cells, then, in one run:

1. per-sample diagonal Fisher over all cells with the vectorised engine, and with the per-cell loop
   on a subset (its rate extrapolated): cells/s, speed-up and peak memory;
2. wall time of ``ssd`` and ``fisher_forgetting`` (forget = DC) as a ratio to one retrain, taken as
   the measured training time of the model (same recipe; the retain set is the training set minus
   36 cells); with ``--measure-retrain`` a real ``retrain`` of the default model is also timed;
3. the reproduction check of the study's Fisher-overlap table: per-category cosines with null
   references for forget = DC (36 cells) and forget = Platelet (19 cells), with the classifier
   baselines (linear probe on latents, MLP on the VAE's input genes with the VAE's width and depth).

Results are printed and, with ``--out``, written as Markdown (plus ``.csv`` files beside it).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_data():
    import scanpy as sc

    import scforget as sf

    adata = sf.datasets.pbmc3k()
    adata = adata[adata.obs["qc_pass"].to_numpy()].copy()
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat_v3")
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.remove_unused_categories()
    return adata


def train_model(adata, name: str, epochs: int):
    import scforget as sf

    kwargs = (
        {"n_hidden": 128, "n_latent": 10} if name == "default" else {"n_hidden": 1024, "n_layers": 3, "n_latent": 32}
    )
    a = adata.copy()
    sf.model.SCVI.setup_anndata(a)
    model = sf.model.SCVI(a, **kwargs)
    start = time.perf_counter()
    model.train(
        max_epochs=epochs,
        batch_size=128,
        train_size=1.0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    return model, time.perf_counter() - start


def bench_engine(model, n_loop: int) -> dict:
    from scforget import fisher

    cells = np.arange(model.adata.n_obs)
    fisher.diagonal(model, cells[:64], progress_bar=False)  # warm-up
    rss0 = peak_rss_mb()
    start = time.perf_counter()
    fast = fisher.diagonal(model, cells, progress_bar=False)
    t_fast = time.perf_counter() - start
    rss1 = peak_rss_mb()
    sub = cells[:: max(1, cells.size // n_loop)][:n_loop]
    start = time.perf_counter()
    slow = fisher.diagonal(model, sub, engine="loop", progress_bar=False)
    t_slow = time.perf_counter() - start
    check = fisher.diagonal(model, sub, progress_bar=False)
    err = max(float((check[k] - slow[k]).norm() / slow[k].norm()) for k in slow if float(slow[k].norm()) > 0)
    rate_fast, rate_slow = cells.size / t_fast, sub.size / t_slow
    return {
        "n_params": sum(v.numel() for v in fast.values()) + 0,
        "cells": int(cells.size),
        "vectorised_s": t_fast,
        "vectorised_cells_per_s": rate_fast,
        "loop_cells": int(sub.size),
        "loop_cells_per_s": rate_slow,
        "speedup": rate_fast / rate_slow,
        "max_rel_err_vs_loop": err,
        "peak_rss_mb": max(rss0, rss1),
        "no_gradient_tensors": len(fast.no_gradient),
    }


def mean_nll(model, cells: np.ndarray) -> float:
    """Mean per-cell negative log-likelihood at the posterior mean (deterministic)."""
    import torch

    from scforget.fisher._engine import reconstruction_per_cell

    model.module.eval()
    total = 0.0
    with torch.no_grad():
        for t in model._make_data_loader(adata=model.adata, indices=cells, batch_size=512):
            total += float(reconstruction_per_cell(model.module, {k: v.to(model.device) for k, v in t.items()}).sum())
    return total / len(cells)


def bench_methods(model, train_seconds: float, forget: np.ndarray, real_retrain: bool) -> list[dict]:
    import scforget as sf
    import scforget.methods._fisher_forgetting
    import scforget.methods._ssd

    rows = []
    retain = np.setdiff1d(np.arange(model.adata.n_obs), forget)
    base = {"forget": mean_nll(model, forget), "retain": mean_nll(model, retain)}
    retrain_s = train_seconds
    if real_retrain:
        start = time.perf_counter()
        sf.unlearn(model, forget, method="retrain", seed=0, enable_progress_bar=False)
        retrain_s = time.perf_counter() - start
        rows.append({"method": "retrain", "seconds": retrain_s, "ratio_to_retrain": 1.0})
    for method in ("ssd", "fisher_forgetting"):
        start = time.perf_counter()
        new = sf.unlearn(model, forget, method=method, seed=0)
        t = time.perf_counter() - start
        rec = new.unlearning_records_[-1]
        rows.append(
            {
                "method": method,
                "seconds": t,
                "ratio_to_retrain": t / retrain_s,
                "fraction_changed": rec["fraction_changed"],
                "relative_change_norm": rec["relative_change_norm"],
                "forget_nll_change": mean_nll(new, forget) / base["forget"] - 1,
                "retain_nll_change": mean_nll(new, retain) / base["retain"] - 1,
            }
        )
    for r in rows:
        r["retrain_reference"] = "measured retrain" if real_retrain else "training time of the model"
    return rows


def reproduction(model, label: str, quick: bool) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    from scforget import fisher

    adata = model.adata
    forget = np.flatnonzero(adata.obs["cell_type"].to_numpy() == label)
    ov = fisher.overlap(model, forget, n_null=3 if quick else 5, progress_bar=False)
    vae = ov.table.copy()
    vae.index = pd.MultiIndex.from_product([["scVI"], vae.index], names=["model", "category"])
    cb = fisher.classifier_baseline(adata, "cell_type", label, model=model, max_iter=30 if quick else 60)
    table = pd.concat([vae, cb.table])
    gene = ov.per_gene["cosine"]
    per_gene = {
        "mean": round(float(gene.mean()), 3),
        "median": round(float(gene.median()), 3),
        "frac_gt_0.5": round(float((gene > 0.5).mean()), 3),
    }
    return table, per_gene, cb.accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, smaller loop subset, fewer null draws")
    parser.add_argument("--out", type=Path, default=None, help="write a Markdown report (and CSVs) here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--measure-retrain", action="store_true", help="also time a real retrain of the default model")
    parser.add_argument("--engine-only", action="store_true", help="only the engine speed-up (no methods, no overlap)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    import torch

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    import scvi

    scvi.settings.seed = 0
    epochs = {"default": 30, "wide": 3} if args.quick else {"default": 100, "wide": 10}
    n_loop = 48 if args.quick else 150
    adata = load_data()
    lines = [
        f"# Fisher benchmark ({'quick' if args.quick else 'full'})",
        "",
        f"pbmc3k QC-pass cells: {adata.n_obs}, genes: {adata.n_vars}; torch threads: {torch.get_num_threads()}, "
        f"CPU count: {os.cpu_count()}; epochs: {epochs}",
        "",
    ]
    engine_rows, method_rows, repro = [], [], {}
    for name in ("default", "wide"):
        model, train_s = train_model(adata, name, epochs[name])
        row = {"model": name, "train_epochs": epochs[name], "train_s": train_s, **bench_engine(model, n_loop)}
        engine_rows.append(row)
        print(row, flush=True)
        if args.engine_only:
            continue
        forget = np.flatnonzero(model.adata.obs["cell_type"].to_numpy() == "DC")
        for r in bench_methods(model, train_s, forget, real_retrain=(name == "default" and args.measure_retrain)):
            method_rows.append({"model": name, **r})
            print(method_rows[-1], flush=True)
        for label in ("DC", "Platelet"):
            repro[(name, label)] = reproduction(model, label, args.quick)
            print(name, label, flush=True)
            print(repro[(name, label)][0][["n_params", "cosine", "null_cosine", "log_fisher_pearson"]].round(3))
    eng = pd.DataFrame(engine_rows)
    meth = pd.DataFrame(method_rows)
    lines += ["## Per-sample Fisher engine (all cells)", "", eng.round(3).to_markdown(index=False), ""]
    lines += ["## Parameter-space methods vs one retrain (forget = DC)", "", meth.round(3).to_markdown(index=False), ""]
    lines += ["## Reproduction: forget/retain Fisher cosine per category (per-sample estimator, damping 1e-8)", ""]
    cols = ["n_params", "cosine", "null_cosine", "null_cosine_sd", "log_fisher_pearson", "top_1%", "eff_rank_ratio"]
    for (name, label), (t, per_gene, accuracy) in repro.items():
        lines += [f"### {name} scVI, forget = {label} ({int((adata.obs['cell_type'] == label).sum())} cells)", ""]
        lines += [t[cols].round(3).to_markdown(), ""]
        lines += [f"Per-gene decoder-output cosine: {per_gene}", ""]
        lines += ["Classifier accuracy:", "", accuracy.round(3).to_markdown(), ""]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        eng.to_csv(args.out.with_suffix(".engine.csv"), index=False)
        meth.to_csv(args.out.with_suffix(".methods.csv"), index=False)
        pd.concat({f"{n}/{lab}": t for (n, lab), (t, _, _) in repro.items()}, names=["run"]).to_csv(
            args.out.with_suffix(".overlap.csv")
        )


if __name__ == "__main__":
    main()
