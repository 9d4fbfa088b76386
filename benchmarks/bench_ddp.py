"""Lightning DDP on CPU processes against one process: wall time and what the parameters become.

Usage::

    python benchmarks/bench_ddp.py [--epochs 20] [--out benchmarks/results/issue13/ddp.md]

A default scVI (n_hidden 128, n_latent 10, NB) is trained on the bundled pbmc3k (QC-passing cells,
2,000 highly variable genes; 90% of the cells, the rest held out) with a global minibatch of 128
cells, once in one process (torch on every core) and once with ``devices=2, strategy="ddp"`` over
gloo (64 cells per process, one torch thread each), with the same seed. Then
``unlearn(method="neggrad_plus")`` forgets the DC cells in each. Reported: the wall time of each
phase and the ratio, the held-out ELBO of both models (scvi-tools' ``get_elbo``), and the relative difference of
their parameters next to that between two one-process runs with different seeds (the scale of
seed-to-seed variation). Dropout, BatchNorm statistics and the latent draws differ between one
process and two, so the parameters are not expected to be equal here; ``tests/test_distributed.py``
switches those off and shows agreement to 1e-8.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def worker(devices: int, seed: int, epochs: int, out: str) -> None:
    """Train and unlearn on ``devices`` processes; rank 0 writes times, held-out ELBO and parameters.

    The training's wall time on two processes includes Lightning starting the second one (it runs
    this script again: imports, data, gene selection) inside the first ``fit``; the unlearning's
    does not.
    """
    import numpy as np
    import scanpy as sc
    import scvi

    import scforget as sf

    adata = sf.datasets.pbmc3k()
    adata = adata[adata.obs["qc_pass"].to_numpy()].copy()
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat_v3")
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    order = np.random.default_rng(0).permutation(adata.n_obs)
    n_train = int(0.9 * adata.n_obs)
    train, test = np.sort(order[:n_train]), np.sort(order[n_train:])
    sf.model.SCVI.setup_anndata(adata)
    scvi.settings.seed = seed
    dist = {"accelerator": "cpu", "devices": devices, **({"strategy": "ddp"} if devices > 1 else {})}
    quiet = {"enable_progress_bar": False, "enable_checkpointing": False, "enable_model_summary": False}
    model = sf.model.SCVI(adata)
    start = time.perf_counter()
    model.train(
        max_epochs=epochs,
        batch_size=128 // devices,
        datasplitter_kwargs={"external_indexing": [train, np.zeros(0, dtype=np.int64), test]},
        **dist,
        **quiet,
    )
    train_s = time.perf_counter() - start
    forget = np.flatnonzero(adata.obs["cell_type"].astype(str).to_numpy() == "DC")
    forget = np.intersect1d(forget, train)
    start = time.perf_counter()
    new = model.unlearn(forget, method="neggrad_plus", batch_size=128 // devices, seed=seed, **dist, **quiet)
    unlearn_s = time.perf_counter() - start
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        params = {k: v.detach().cpu().numpy() for k, v in model.module.state_dict().items()}
        np.savez(out + ".npz", **params)
        record = {
            "devices": devices,
            "seed": seed,
            "train_s": train_s,
            "unlearn_s": unlearn_s,
            "heldout_elbo": float(model.get_elbo(indices=test)),
            "unlearned_heldout_elbo": float(new.get_elbo(indices=test)),
        }
        Path(out + ".json").write_text(json.dumps(record))


def _run(devices: int, seed: int, epochs: int, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(devices), str(seed), str(out)]
    subprocess.run([*cmd, "--epochs", str(epochs)], check=True, capture_output=True)
    return json.loads(Path(str(out) + ".json").read_text())


def _relative_difference(a: Path, b: Path) -> float:
    import numpy as np

    with np.load(str(a) + ".npz") as x, np.load(str(b) + ".npz") as y:
        keys = [k for k in x.files if x[k].dtype.kind == "f" and "running" not in k]
        num = sum(float(np.sum((x[k] - y[k]) ** 2)) for k in keys)
        den = sum(float(np.sum(x[k] ** 2)) for k in keys)
    return (num / den) ** 0.5


def main() -> None:
    """Run one process (two seeds) and two processes, and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/issue13/ddp.md"))
    parser.add_argument("--work", type=Path, default=Path("benchmark_out/ddp"))
    parser.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(int(args.worker[0]), int(args.worker[1]), args.epochs, args.worker[2])
        return
    args.work.mkdir(parents=True, exist_ok=True)
    one = _run(1, 0, args.epochs, args.work / "one")
    two = _run(2, 0, args.epochs, args.work / "two")
    other = _run(1, 1, args.epochs, args.work / "one_seed1")
    rows = {
        "train wall time, 1 process (s)": round(one["train_s"], 1),
        "train wall time, 2 DDP processes (s)": round(two["train_s"], 1),
        "train time ratio (2 / 1)": round(two["train_s"] / one["train_s"], 2),
        "neggrad_plus wall time, 1 process (s)": round(one["unlearn_s"], 1),
        "neggrad_plus wall time, 2 DDP processes (s)": round(two["unlearn_s"], 1),
        "neggrad_plus time ratio (2 / 1)": round(two["unlearn_s"] / one["unlearn_s"], 2),
        "held-out ELBO (get_elbo), 1 process": round(one["heldout_elbo"], 2),
        "held-out ELBO (get_elbo), 2 DDP processes": round(two["heldout_elbo"], 2),
        "held-out ELBO (get_elbo), 1 process, seed 1": round(other["heldout_elbo"], 2),
        "relative parameter difference, 2 DDP vs 1 process": round(
            _relative_difference(args.work / "two", args.work / "one"), 4
        ),
        "relative parameter difference, seed 1 vs seed 0 (1 process)": round(
            _relative_difference(args.work / "one_seed1", args.work / "one"), 4
        ),
    }
    lines = [
        f"Command: `python benchmarks/bench_ddp.py --epochs {args.epochs}`; {os.cpu_count()} cores.",
        "",
        "| quantity | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows.items()],
        "",
    ]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
