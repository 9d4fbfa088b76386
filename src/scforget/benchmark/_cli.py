"""The ``scforget`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _benchmark(args: argparse.Namespace) -> int:
    from ._config import BenchmarkConfig
    from ._protocol import run_benchmark

    overrides = {
        "data": args.data,
        "label_key": args.label_key,
        "forget": args.forget,
        "epochs": args.epochs,
        "n_top_genes": args.n_top_genes,
        "methods": args.methods,
        "seeds": args.seeds,
        "audit": not args.no_audit,
        "accelerator": args.accelerator,
        "dp_epsilons": args.dp_epsilons,
        "sisa_shards": args.sisa_shards,
        "sisa_slices": args.sisa_slices,
        "n_pseudo_donors": args.n_pseudo_donors,
    }
    if args.quick:
        config = BenchmarkConfig.quick_config(**overrides)
    else:
        config = BenchmarkConfig(**{k: v for k, v in overrides.items() if v is not None})
    start = time.perf_counter()
    result = run_benchmark(config)
    paths = result.write(args.out)
    print()
    print(result.to_markdown())
    print(f"total wall time {time.perf_counter() - start:.1f} s; wrote {', '.join(str(p) for p in paths)}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    import anndata as ad
    import scvi

    import scforget as sf

    adata = ad.read_h5ad(args.adata)
    registry = scvi.model.base.BaseModelClass.load_registry(args.model)
    name = registry["model_name"]
    cls = getattr(sf.model, name, None) or getattr(scvi.model, name)
    model = cls.load(args.model, adata=adata)
    col = adata.obs[args.members_key].astype(str)
    members = (col == args.members_value).to_numpy()
    nonmembers = None if args.nonmembers_value is None else (col == args.nonmembers_value).to_numpy()
    report = sf.privacy.audit(
        model, members=members, nonmembers=nonmembers, n_bootstrap=args.n_bootstrap, seed=args.seed, progress_bar=False
    )
    summary = report.summary()
    print(summary.to_string())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``scforget`` command."""
    parser = argparse.ArgumentParser(prog="scforget", description="Unlearning and membership audits for scvi-tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("benchmark", help="run the unlearning protocol end to end")
    b.add_argument("--quick", action="store_true", help="small configuration (a few minutes on a laptop CPU)")
    b.add_argument("--data", help="an .h5ad with raw counts (default: the bundled pbmc3k)")
    b.add_argument("--label-key", help="obs column holding the groups (default: cell_type)")
    b.add_argument("--forget", help="the group to forget (default: DC)")
    b.add_argument("--epochs", type=int, help="training epochs of the baseline and each retrain")
    b.add_argument("--n-top-genes", type=int, help="highly variable genes to keep (0 = all)")
    b.add_argument("--methods", nargs="+", help="methods to run (default: all registered)")
    b.add_argument("--seeds", type=int, nargs="+", help="seeds of every method and of the retrain reference")
    b.add_argument("--no-audit", action="store_true", help="skip the membership-inference audit")
    b.add_argument("--accelerator", default="auto", help="Lightning accelerator (cpu, gpu, auto)")
    b.add_argument("--dp-epsilons", type=float, nargs="+", help="epsilons of the dpsgd rows (default: 1 3 10)")
    b.add_argument("--sisa-shards", type=int, help="shards of the SISA ensemble (default: 4)")
    b.add_argument("--sisa-slices", type=int, help="slices per SISA shard (default: 2)")
    b.add_argument("--n-pseudo-donors", type=int, help="pseudo-donors of the adapter design (default: 8)")
    b.add_argument("--out", default="benchmark_out", help="output directory")
    b.set_defaults(func=_benchmark)

    a = sub.add_parser("audit", help="audit a saved model for membership leakage")
    a.add_argument("model", help="directory of a saved scvi-tools model")
    a.add_argument("adata", help="the .h5ad the model was trained on")
    a.add_argument("--members-key", required=True, help="obs column that marks the audited members")
    a.add_argument("--members-value", required=True, help="value of --members-key for members")
    a.add_argument("--nonmembers-value", help="value for non-members (default: the model's held-out cells)")
    a.add_argument("--n-bootstrap", type=int, default=1000)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", default="audit_summary.csv", help="CSV file for the summary")
    a.set_defaults(func=_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scforget`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as e:
        print(f"scforget {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
