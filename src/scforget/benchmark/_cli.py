"""The ``scforget`` command line."""

from __future__ import annotations

import argparse
import sys
import time

from ._audit_cli import add_parser as add_audit_parser


def _benchmark(args: argparse.Namespace) -> int:
    from ._config import BenchmarkConfig
    from ._protocol import run_benchmark

    overrides = {
        "data": args.data,
        "label_key": args.label_key,
        "forget": args.forget,
        "donor_key": args.donor_key,
        "heldout_donors": args.heldout_donors,
        "holdout_fraction": args.holdout_fraction,
        "calibration_fraction": args.calibration_fraction,
        "retrain_seeds": args.retrain_seeds,
        "baseline_seeds": args.baseline_seeds,
        "primary_attack": args.primary_attack,
        "epochs": args.epochs,
        "n_top_genes": args.n_top_genes,
        "methods": args.methods,
        "seeds": args.seeds,
        "audit": not args.no_audit,
        "accelerator": args.accelerator,
        "fleet": args.fleet,
        "dp_epsilons": args.dp_epsilons,
        "dp_epochs": args.dp_epochs,
        "sisa_shards": args.sisa_shards,
        "sisa_slices": args.sisa_slices,
        "n_pseudo_donors": args.n_pseudo_donors,
        "cache": args.cache,
        "preflight": args.preflight or None,
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``scforget`` command."""
    parser = argparse.ArgumentParser(prog="scforget", description="Unlearning and membership audits for scvi-tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("benchmark", help="run the unlearning protocol end to end")
    b.add_argument("--quick", action="store_true", help="small configuration (a few minutes on a laptop CPU)")
    b.add_argument("--data", help="an .h5ad with raw counts (default: the bundled pbmc3k)")
    b.add_argument("--label-key", help="obs column holding the groups (default: cell_type)")
    b.add_argument(
        "--forget",
        nargs="+",
        help="forget designs, each on its own baseline: a group of --label-key, random:N (N scattered cells) "
        "or donor:ID (with --donor-key); default: DC",
    )
    b.add_argument(
        "--donor-key",
        help="obs column of donors, for donor:ID designs; 'pseudo_donor' makes --n-pseudo-donors random groups "
        "when the data has no such column",
    )
    b.add_argument(
        "--heldout-donors",
        type=int,
        help="donor designs: other donors set aside whole before training, their cells extra non-members (0)",
    )
    b.add_argument("--holdout-fraction", type=float, help="share of a group or donor held out as non-members (0.5)")
    b.add_argument(
        "--calibration-fraction",
        type=float,
        help="share of the non-members kept apart as calibration cells for methods that take them, never "
        "audited (0.25)",
    )
    b.add_argument("--epochs", type=int, help="training epochs of the baseline and each retrain")
    b.add_argument("--n-top-genes", type=int, help="highly variable genes to keep (0 = all)")
    b.add_argument("--methods", nargs="+", help="methods to run (default: all registered)")
    b.add_argument(
        "--seeds", type=int, nargs="+", help="unlearning seeds: every method runs once per seed and baseline"
    )
    b.add_argument("--retrain-seeds", type=int, nargs="+", help="seeds of the retrain reference (its band)")
    b.add_argument("--baseline-seeds", type=int, nargs="+", help="seeds of the baseline, one baseline per seed")
    b.add_argument(
        "--primary-attack",
        choices=("loss", "kl", "classifier", "distance", "lira"),
        help="the pre-registered attack of the verdict (default: lira)",
    )
    b.add_argument("--no-audit", action="store_true", help="skip the membership-inference audit")
    b.add_argument("--accelerator", default="auto", help="Lightning accelerator (cpu, gpu, auto)")
    b.add_argument(
        "--fleet",
        metavar="SPEC",
        help="run retrain seeds and SISA shards in parallel on Dask: local:N worker processes, or a scheduler "
        "address (tcp://host:8786); needs scforget[fleet]",
    )
    b.add_argument("--dp-epsilons", type=float, nargs="+", help="epsilons of the dpsgd rows (default: 1 3 10)")
    b.add_argument("--dp-epochs", type=int, help="epochs of the DP-SGD training (default: the baseline's)")
    b.add_argument("--sisa-shards", type=int, help="shards of the SISA ensemble (default: 4)")
    b.add_argument("--sisa-slices", type=int, help="slices per SISA shard (default: 2)")
    b.add_argument("--n-pseudo-donors", type=int, help="pseudo-donors of the adapter design (default: 8)")
    b.add_argument(
        "--preflight",
        action="store_true",
        help="run the unlearnability pre-flight check on each design's first baseline (preflight.csv)",
    )
    b.add_argument("--cache", metavar="DIR", help="reuse trained models from DIR (and store new ones there)")
    b.add_argument("--out", default="benchmark_out", help="output directory")
    b.set_defaults(func=_benchmark)

    add_audit_parser(sub)
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
