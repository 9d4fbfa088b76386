"""Privacy-utility figures from saved benchmark summaries, rows of several runs on one plot.

Usage::

    python benchmarks/plot_summaries.py OUT_PREFIX RUN_DIR[:METHOD,...] [RUN_DIR[:METHOD,...] ...] \
        --designs DC NK B

For each design, the rows of every ``RUN_DIR/summary.csv`` (only ``METHOD,...`` when given; the
baseline is always left out so the retrain band stays readable) are drawn with
:func:`scforget.pl.privacy_utility` into ``OUT_PREFIX<design>_privacy_utility.png``. A method found
in several runs is taken from the first. Runs are combined only when their baselines and retrains
are the same models (the benchmark page says where that was checked).

The issue-12 figures of the tenth and eleventh runs::

    python benchmarks/plot_summaries.py docs/_static/issue12/sp10_ \
        benchmarks/results/issue12/sp10_dcnkb:retrain,rewind,rw_sp10_cos1e2_20 --designs DC NK B
    python benchmarks/plot_summaries.py docs/_static/issue12/sr_ \
        benchmarks/results/issue12/sp10_dcnkb:retrain,rewind \
        benchmarks/results/issue12/sr_dcnkb:short_retrain --designs DC NK B
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from scforget.pl import privacy_utility


def rows(specs: list[str], design: str) -> pd.DataFrame:
    """One design's summary rows (index: method) from ``RUN_DIR[:METHOD,...]`` specs, baseline left out."""
    parts = []
    for spec in specs:
        run, _, wanted = spec.partition(":")
        summary = pd.read_csv(Path(run) / "summary.csv")
        sub = summary[(summary["design"] == design) & (summary["method"] != "baseline")]
        if wanted:
            sub = sub[sub["method"].isin(wanted.split(","))]
        parts.append(sub)
    table = pd.concat(parts).drop_duplicates("method").set_index("method")
    if table.empty:
        raise ValueError(f"No rows for design {design!r} in {specs}; check `--designs` and the method names.")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", help="output path prefix, e.g. docs/_static/issue12/sr_")
    parser.add_argument("runs", nargs="+", help="RUN_DIR or RUN_DIR:METHOD,METHOD")
    parser.add_argument("--designs", nargs="+", required=True)
    parser.add_argument("--data", default="pbmc3k", help="data name for the titles")
    args = parser.parse_args(argv)
    for design in args.designs:
        table = rows(args.runs, design)
        attack = table["primary_attack"].iloc[0] if "primary_attack" in table else "primary attack"
        fig, ax = plt.subplots(figsize=(5.0, 3.6))
        privacy_utility(table, title=f"{args.data} {design} ({attack})", ax=ax, show=False)
        fig.tight_layout()
        path = f"{args.prefix}{design.replace(':', '_')}_privacy_utility.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(path)


if __name__ == "__main__":
    main()
