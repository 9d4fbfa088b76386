"""Does the pre-flight check predict whether approximate unlearning reaches the retrain band?

Usage::

    python benchmarks/evaluate_preflight.py OUT.md RUN_DIR [RUN_DIR ...] [--methods NAME ...]

Each ``RUN_DIR`` is a ``scforget benchmark --preflight`` output (``summary.csv`` and
``preflight.csv``). Per design, the outcome is read off the summary: ``reached`` when at least one
approximate method lies inside the retrain band under both the primary and the best attack
(``in_band`` and ``best_in_band``), ``target`` when one meets all four criteria, and
``uninformative`` when the baseline itself is not above the band (nothing to predict). The
verdict predicts ``not reached`` when it is ``entangled`` and ``reached`` otherwise. The Markdown
written to ``OUT.md`` holds the per-design table, the confusion tables of the verdict on the
informative designs (against ``reached`` and against ``target``), each score's AUC for telling reached from not reached (with as few designs
as this, a description, not a validated rule) and the check's cost relative to one retrain. Runs on
the same data (``config.json``'s ``data``) and design are pooled: a design counts as reached when
any approximate method of any of those runs reached the band. ``--methods`` restricts the
outcome to those methods (e.g. the parameter-space edits the verdict speaks for).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

# the Markdown table `scforget benchmark` writes into summary.md
from scforget.benchmark._protocol import _markdown as markdown

SCORES = ("global_relative_overlap", "max_relative_overlap", "isolation", "memorisation_auc")


def dataset(run: Path) -> str:
    """The data a run used: the file's name, or ``pbmc3k`` for the bundled data."""
    data = json.loads((run / "config.json").read_text())["config"].get("data")
    return "pbmc3k" if data is None else Path(data).stem


def pooled(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (data, design): the first run's pre-flight columns, outcomes over every run."""

    def methods(values: pd.Series) -> str:
        names = sorted({m for v in values for m in v.split(", ") if m != "-"})
        return ", ".join(names) or "-"

    agg = {c: "first" for c in table.columns if c not in ("data", "design")}
    agg.update({"run": lambda v: " + ".join(v), "reached": "any", "target": "any", "best_methods": methods})
    return table.groupby(["data", "design"], sort=False, as_index=False).agg(agg)


def outcomes(run: Path, methods: list[str] | None = None) -> pd.DataFrame:
    """One row per design: pre-flight columns and what the approximate methods (or ``methods``) achieved."""
    summary = pd.read_csv(run / "summary.csv", index_col=[0, 1])
    pre = pd.read_csv(run / "preflight.csv", index_col=0)
    rows = []
    for design, sub in summary.groupby(level=0, sort=False):
        sub = sub.droplevel(0)
        approx = sub[sub["guarantee"] == "approximate"]
        if methods is not None:
            approx = approx[approx.index.isin(methods)]
        informative = bool(sub["informative"].dropna().iloc[0]) if sub["informative"].notna().any() else False
        privacy = approx["in_band"].fillna(False).astype(bool) & approx["best_in_band"].fillna(False).astype(bool)
        met = approx["meets_target"].eq("yes")
        rows.append(
            {
                "run": run.name,
                "data": dataset(run),
                "design": design,
                **pre.loc[design].to_dict(),
                "informative": informative,
                "reached": bool(privacy.any()),
                "best_methods": ", ".join(approx.index[privacy]) or "-",
                "target": bool(met.any()),
            }
        )
    return pd.DataFrame(rows)


def score_auc(score: pd.Series, positive: pd.Series) -> float:
    """AUC of ``score`` for telling ``positive`` designs from the others (ties count half; NaN scores dropped)."""
    ok = score.notna()
    s, y = score[ok].to_numpy(float), positive[ok].to_numpy(bool)
    if y.all() or not y.any():
        return float("nan")
    diff = s[y][:, None] - s[~y][None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def main() -> None:
    """Read the runs and write the evaluation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--methods", nargs="+", default=None, help="count only these approximate methods")
    args = parser.parse_args()
    table = pooled(pd.concat([outcomes(r, args.methods) for r in args.runs], ignore_index=True))
    inf = table[table["informative"]]
    predicted = inf["verdict"] != "entangled"
    confusion = pd.crosstab(
        predicted.map({True: "verdict: can work", False: "verdict: entangled"}),
        inf["reached"].map({True: "reached the band", False: "did not"}),
    )
    confusion_target = pd.crosstab(
        predicted.map({True: "verdict: can work", False: "verdict: entangled"}),
        inf["target"].map({True: "met the whole target", False: "did not"}),
    )
    aucs = pd.DataFrame(
        {"score": list(SCORES), "AUC (higher score = reached)": [score_auc(inf[s], inf["reached"]) for s in SCORES]}
    )
    cost = table["preflight_ratio_to_retrain"]
    cols = ["data", "design", "run", "verdict", *SCORES, "informative", "reached", "best_methods", "target"]
    scope = "" if args.methods is None else f"Outcomes of {', '.join(args.methods)} only.\n\n"
    lines = [
        scope + "Per design (pre-flight on the first baseline, before any unlearning):",
        "",
        markdown(table[cols]),
        "",
        f"Confusion table of the verdict on the {len(inf)} informative designs:",
        "",
        markdown(confusion.reset_index().rename(columns={"index": ""})),
        "",
        "The same against the whole target (band under both attacks, utility within 2%, time):",
        "",
        markdown(confusion_target.reset_index().rename(columns={"index": ""})),
        "",
        "How well each score separates reached from not reached (informative designs):",
        "",
        markdown(aucs),
        "",
        f"Cost: median {np.median(cost):.3f}x one retrain (max {cost.max():.3f}x; "
        f"{table['preflight_s'].median():.1f} s median).",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
