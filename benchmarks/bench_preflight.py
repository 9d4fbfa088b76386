"""Time the pre-flight check on a benchmark run's baselines, at its defaults and on every retain cell.

Usage::

    python benchmarks/bench_preflight.py --cache CACHE --run RUN_DIR --out OUT.csv

``RUN_DIR`` is the output of a ``scforget benchmark --cache CACHE`` run; its ``config.json`` gives
the data, designs and recipe, so the baseline of seed ``baseline_seeds[0]`` of every design is read
back from the cache (nothing is trained). For each design the check runs twice, one after the other
on the same machine: with its defaults (``max_retain="auto"``: the retain Fisher from
:data:`scforget.fisher._unlearnability.DEFAULT_MAX_RETAIN` random retain cells, or twice the forget
set; :data:`~scforget.fisher._unlearnability.DEFAULT_N_NULL` null subsets), which the benchmark also
uses, and with every retain cell and 5 null subsets (the defaults before 2026-12-07). Each row gives the verdict, the scores
and the wall time as a ratio to the design's median retrain time recorded by the run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    """Load the baselines and time the check."""
    import scforget as sf
    from scforget.benchmark import BenchmarkConfig, prepare_data
    from scforget.benchmark._cache import ModelCache
    from scforget.benchmark._forget_designs import parse_designs
    from scforget.benchmark._protocol import baseline_recipe, design_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    meta = json.loads((args.run / "config.json").read_text())
    cfg = BenchmarkConfig(**{**meta["config"], "cache": args.cache})
    adata = prepare_data(cfg)
    designs = parse_designs(
        cfg.forget, adata, label_key=cfg.label_key, donor_key=cfg.donor_key, heldout_donors=cfg.heldout_donors
    )
    sf.model.SCVI.setup_anndata(adata)
    cache = ModelCache(cfg.cache, adata)
    recipe = baseline_recipe(cfg)
    rows = []
    for design in designs:
        split = design_split(design, adata, cfg)
        sets = split.datasplitter_kwargs()["external_indexing"]
        key = cache.key(
            kind="baseline", train=sets[0], validation=sets[1], test=sets[2], seed=cfg.baseline_seeds[0], recipe=recipe
        )
        hit = cache.get(key, adata)
        if hit is None:
            raise SystemExit(
                f"The baseline of {design.name} is not in the cache; run the benchmark with --cache first."
            )
        model = hit[0]
        retrain_s = float(meta["timings_s"][f"{design.name}:retrain_s"])
        for setting, kw in (("defaults", {}), ("all retain", {"n_null": 5, "max_retain": None})):
            start = time.perf_counter()
            check = sf.fisher.unlearnability(
                model,
                split.forget,
                split.retain,
                calibration=split.calibration if split.calibration.size >= 2 else None,
                seed=cfg.split_seed,
                retrain_seconds=retrain_s,
                progress_bar=False,
                **kw,
            )
            wall = time.perf_counter() - start
            table = check.overlap.table
            rows.append(
                {
                    "run": args.run.name,
                    "design": design.name,
                    "setting": setting,
                    "n_forget": split.forget.size,
                    "verdict": check.verdict,
                    "global_relative_overlap": float(
                        table.loc["global", "cosine"] / table.loc["global", "null_cosine"]
                    ),
                    "isolation": check.isolation,
                    "memorisation_auc": check.memorisation_auc,
                    "seconds": wall,
                    "ratio_to_retrain": wall / retrain_s,
                }
            )
            print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
