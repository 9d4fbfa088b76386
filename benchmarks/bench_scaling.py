"""Scaling of the audit signals and the Fisher on backed AnnData: throughput and peak memory against N.

Usage::

    python benchmarks/bench_scaling.py --sizes 10000 100000 [--task signals|fisher] [--work DIR] [--out results.md]

For each size N it writes (once, into ``--work``) a synthetic h5ad of N cells x 2,000 genes with
``benchmarks/make_synthetic.py`` (negative-binomial counts fitted to pbmc3k) and trains an scVI on
it in memory (n_hidden 128, n_latent 10, ``--epochs`` epochs: the model's quality does not enter a
throughput measurement, and an audited model must have been trained on the file it is audited on);
then, in a fresh subprocess per N so that peak memory is that size's own, it opens the file backed
(``anndata.read_h5ad(path, backed="r")``: the counts stay on disk), loads the model onto it and
computes :func:`scforget.privacy.signals` for every cell, with the kNN distance to every other cell
(exact search up to 50,000 reference cells, then ``knn_search="auto"``: a k-d tree up to 250,000 queries, faiss' inverted-file index above); with ``--task fisher`` it computes
instead the per-sample diagonal Fisher (:func:`scforget.fisher.diagonal`, negative ELBO, vectorised
engine) over every cell. Reported per N: wall time, cells per second, and the subprocess's peak
resident memory (``ru_maxrss``). The ratios
between sizes are what the benchmark is about; absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def synthetic(work: Path, n: int) -> Path:
    """The N-cell synthetic file, written if absent."""
    path = work / f"synthetic_{n}.h5ad"
    if not path.exists():
        subprocess.run(
            [sys.executable, str(HERE / "make_synthetic.py"), str(path), "--n-cells", str(n), "--seed", "0"],
            check=True,
        )
    return path


def train(path: Path, epochs: int) -> Path:
    """Train a model on the file (in memory) and save it next to the file, once."""
    import anndata as ad
    import scvi

    import scforget as sf

    out = path.with_name(f"{path.stem}_model_{epochs}ep")
    if out.exists():
        return out
    adata = ad.read_h5ad(path)
    sf.model.SCVI.setup_anndata(adata)
    scvi.settings.seed = 0
    model = sf.model.SCVI(adata, gene_likelihood="nb")
    model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False)
    model.save(str(out), save_anndata=False)
    return out


def measure(path: Path, model_dir: Path, batch_size: int, task: str = "signals", knn_search: str = "auto") -> dict:
    """Signals (or the Fisher) of every cell of the backed file (run in its own process)."""
    import anndata as ad
    import numpy as np

    import scforget as sf

    adata = ad.read_h5ad(path, backed="r")
    sf.model.SCVI.setup_anndata(adata)
    model = sf.model.SCVI.load(str(model_dir), adata=adata, accelerator="cpu")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if task == "fisher":
        fisher = sf.fisher.diagonal(model, np.arange(adata.n_obs), batch_size=batch_size, progress_bar=False)
        finite = bool(np.isfinite(fisher.flat().numpy()).all()) and fisher.n_cells == adata.n_obs
    else:
        sig = sf.privacy.signals(
            model,
            reference=np.arange(adata.n_obs),
            include_latent=False,
            batch_size=batch_size,
            progress_bar=False,
            knn_search=knn_search,
        )
        finite = bool(np.isfinite(sig[["recon_ll", "kl", "knn_distance"]].to_numpy()).all())
    wall = time.perf_counter() - t0
    return {
        "n_cells": int(adata.n_obs),
        "signals_s": wall,
        "cells_per_s": adata.n_obs / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_signals_mb": rss_before,
        "finite": finite,
    }


def main() -> None:
    """Write the files, train once, measure each size in its own process, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--work", type=Path, default=Path("benchmark_out/scaling"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--task", choices=("signals", "fisher"), default="signals")
    parser.add_argument("--knn-search", choices=("auto", "exact", "approximate"), default="auto")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--measure", nargs=2, default=None, help=argparse.SUPPRESS)  # subprocess entry
    args = parser.parse_args()
    if args.measure is not None:
        measured = measure(Path(args.measure[0]), Path(args.measure[1]), args.batch_size, args.task, args.knn_search)
        print(json.dumps(measured))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        path = synthetic(args.work, n)
        model_dir = train(path, args.epochs)
        cmd = [sys.executable, __file__, "--measure", str(path), str(model_dir), "--batch-size", str(args.batch_size)]
        cmd += ["--task", args.task, "--knn-search", args.knn_search]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"measuring {path} failed:\n{run.stderr[-3000:]}")
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]
    lines = [
        f"| cells | {args.task} (s) | cells/s | throughput vs smallest | peak RSS (MiB) | RSS before {args.task} (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_cells']:,} | {r['signals_s']:.1f} | {r['cells_per_s']:,.0f} | "
            f"{r['cells_per_s'] / base['cells_per_s']:.2f} | {r['peak_rss_mb']:,.0f} | {r['rss_before_signals_mb']:,.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
