"""Benchmark of the guaranteed deletion designs: SISA cost and utility for several shard counts, adapter drop.

Usage::

    python benchmarks/bench_guarantees.py [--quick] [--epochs 100] [--out results.md]

On pbmc3k (QC-pass cells, seurat_v3 highly variable genes), with the cells split as in
``scforget benchmark`` (DC forget/holdout, retain, unseen, validation):

* **SISA**, for S in ``--shards`` (random shards, ``--slices`` slices): the cost of deleting one
  random training cell (retrained epochs over the ensemble's, and wall time over one full scVI
  training), repeated for ``--deletions`` cells; the cost of deleting the DC forget set; and the
  ensemble's utility (held-out NLL of unseen cells under the mixture likelihood, accuracy of a
  cell-type probe on the aggregate latent) next to one scVI trained on all training cells.
* **Adapters**, on ``--donors`` pseudo-donors (random, stratified by cell type: pbmc3k has one
  donor, so these carry no donor effect), half of them the core: the audit of a mapped donor's cells
  against its held-out cells before and after ``adapter_drop``, the utility of the model after the
  drop, and the cost of the drop.

DP-SGD rows (epsilon 1, 3, 10) come from ``scforget benchmark --methods dpsgd``. Everything here is
measured in one run on one machine and printed as Markdown; times are ratios to the full scVI
training of the same run.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np


def utility(model, split, labels) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import scforget as sf

    nll = -sf.privacy.signals(model, split.unseen, include_latent=False, progress_bar=False)["recon_ll"]
    rng = np.random.default_rng(0)
    fit = rng.choice(split.retain, size=min(2000, split.retain.size), replace=False)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(model.get_latent_representation(indices=fit), labels[fit])
    acc = clf.score(model.get_latent_representation(indices=split.unseen), labels[split.unseen])
    return {"heldout_nll": float(nll.mean()), "celltype_accuracy": float(acc)}


def audit_row(model, members, nonmembers) -> dict[str, float]:
    import scforget as sf

    report = sf.audit(
        model,
        members=members,
        nonmembers=nonmembers,
        attacks=("loss", "kl", "classifier", "distance"),
        n_bootstrap=500,
        seed=0,
        progress_bar=False,
    )
    best = report.best_attack()
    row = report.summary().loc[best]
    return {"attack": best, "auc": row["auc"], "ci": f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (few epochs, 500 genes, S in 2 4)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every training (default 100; quick 10)")
    parser.add_argument("--genes", type=int, default=None, help="highly variable genes (default 1000; quick 500)")
    parser.add_argument("--shards", type=int, nargs="+", default=None, help="shard counts (default 2 4 8)")
    parser.add_argument("--slices", type=int, default=2, help="slices per shard")
    parser.add_argument("--deletions", type=int, default=3, help="single-cell deletions per shard count")
    parser.add_argument("--donors", type=int, default=8, help="pseudo-donors of the adapter design")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here as well")
    args = parser.parse_args()
    epochs = args.epochs or (10 if args.quick else 100)
    genes = args.genes or (500 if args.quick else 1000)
    shards = args.shards or ([2, 4] if args.quick else [2, 4, 8])

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
    sc.pp.highly_variable_genes(adata, n_top_genes=genes, flavor="seurat_v3", subset=True)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    kw = {"enable_progress_bar": False, "accelerator": "cpu"}
    lines = [
        f"# Guaranteed deletion designs on pbmc3k ({adata.n_obs} cells x {genes} genes, {epochs} epochs, "
        f"{args.threads} torch thread(s))",
        "",
    ]

    # ---- reference: one scVI on every training cell ----
    sf.model.SCVI.setup_anndata(adata)
    full = sf.model.SCVI(adata, n_latent=10)
    t0 = time.perf_counter()
    with quiet_training():
        full.train(max_epochs=epochs, datasplitter_kwargs=split.datasplitter_kwargs(), **kw)
    t_full = time.perf_counter() - t0
    u_full = utility(full, split, labels)
    print(f"full scVI: {t_full:.1f} s, {u_full}")

    # ---- SISA ----
    lines += [
        "## SISA (random shards)",
        "",
        f"One scVI on all training cells: {t_full:.1f} s, held-out NLL {u_full['heldout_nll']:.2f}, "
        f"cell-type probe accuracy {u_full['celltype_accuracy']:.3f}.",
        "",
        "| S | R | train s | heldout NLL | probe acc | 1-cell deletion: cost fraction | 1-cell: time / full "
        "| DC set: cost fraction | DC set: time / full |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for s in shards:
        ens = sf.model.ShardedSCVI(adata, n_shards=s, n_slices=args.slices, n_latent=10)
        t0 = time.perf_counter()
        with quiet_training():
            ens.train(max_epochs=epochs, datasplitter_kwargs=split.datasplitter_kwargs(), seed=0, **kw)
        t_train = time.perf_counter() - t0
        u = utility(ens, split, labels)
        costs, times = [], []
        for cell in rng.choice(split.retain, size=args.deletions, replace=False):
            t0 = time.perf_counter()
            new = ens.unlearn([int(cell)], method="sisa", seed=0)
            times.append((time.perf_counter() - t0) / t_full)
            costs.append(new.unlearning_records_[-1]["cost_fraction"])
        t0 = time.perf_counter()
        new = ens.unlearn(split.forget, method="sisa", seed=0)
        t_dc = (time.perf_counter() - t0) / t_full
        dc = new.unlearning_records_[-1]["cost_fraction"]
        lines.append(
            f"| {s} | {args.slices} | {t_train:.1f} | {u['heldout_nll']:.2f} | {u['celltype_accuracy']:.3f} | "
            f"{np.mean(costs):.3f} | {np.mean(times):.3f} | {dc:.3f} | {t_dc:.3f} |"
        )
        print(lines[-1])
    lines += [
        "",
        f"Expected cost fraction of one deletion: (1/S) x (mean fraction of stages redone) = "
        f"(1/S) x {(args.slices + 1) / (2 * args.slices):.2f} for {args.slices} slices.",
        "",
    ]

    # ---- adapters ----
    data = adata.copy()
    data.obs["donor"] = sf.data.pseudo_donors(data, args.donors, stratify_key="cell_type", seed=0)
    donors = [f"donor_{i}" for i in range(args.donors)]
    core, mapped = donors[: args.donors // 2], donors[args.donors // 2 :]
    target = mapped[0]
    dsplit = sf.data.structured_forget(data, "donor", target, holdout_fraction=0.3, seed=0)
    sf.model.AdapterSCVI.setup_anndata(data, donor_key="donor")
    model = sf.model.AdapterSCVI(data, core_donors=core, n_latent=10)
    t0 = time.perf_counter()
    with quiet_training():
        model.train(max_epochs=epochs, datasplitter_kwargs=dsplit.datasplitter_kwargs(), seed=0, **kw)
    t_core = time.perf_counter() - t0
    cert0 = model.certificate()["core"]
    t0 = time.perf_counter()
    with quiet_training():
        model.map_donors(mapped, max_epochs=epochs, seed=0, accelerator="cpu")
    t_map = time.perf_counter() - t0
    before = audit_row(model, dsplit.forget, dsplit.holdout)
    t0 = time.perf_counter()
    dropped = model.unlearn(dsplit.forget, method="adapter_drop")
    t_drop = time.perf_counter() - t0
    after = audit_row(dropped, dsplit.forget, dsplit.holdout)
    # utility on the cells that are neither the dropped donor's nor trained on
    usplit = sf.data.ForgetSplit(
        forget=dsplit.forget,
        holdout=dsplit.holdout,
        retain=np.setdiff1d(dropped.train_indices, dsplit.forget),
        unseen=dsplit.unseen,
        validation=dsplit.validation,
    )
    sf.model.SCVI.setup_anndata(data)
    single = sf.model.SCVI(data, n_latent=10)
    t0 = time.perf_counter()
    with quiet_training():
        single.train(max_epochs=epochs, datasplitter_kwargs=dsplit.datasplitter_kwargs(), **kw)
    t_single = time.perf_counter() - t0
    u_drop, u_single = utility(dropped, usplit, labels), utility(single, usplit, labels)
    same_core = dropped.certificate()["core"] == cert0
    lines += [
        f"## Adapters ({args.donors} pseudo-donors, core {len(core)}, mapped {len(mapped)}; "
        f"forgotten: {target}, {dsplit.forget.size} training cells vs {dsplit.holdout.size} held out)",
        "",
        "| model | audit best attack | AUC | 95% CI | heldout NLL | probe acc | time s |",
        "|---|---|---|---|---|---|---|",
        f"| adapters, donor mapped | {before['attack']} | {before['auc']:.3f} | {before['ci']} |  |  | "
        f"core {t_core:.1f} + mapping {t_map:.1f} |",
        f"| adapters, donor dropped | {after['attack']} | {after['auc']:.3f} | {after['ci']} | "
        f"{u_drop['heldout_nll']:.2f} | {u_drop['celltype_accuracy']:.3f} | drop {t_drop:.4f} |",
        f"| one scVI on all training cells |  |  |  | {u_single['heldout_nll']:.2f} | "
        f"{u_single['celltype_accuracy']:.3f} | {t_single:.1f} |",
        "",
        f"Core certificate unchanged by mapping and dropping: {same_core}. Drop time / one scVI training: "
        f"{t_drop / t_single:.2e}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
