"""Set a benchmark run's methods beside the reference study's verdicts: which fail, and how.

Usage::

    python benchmarks/render_reproduction.py benchmarks/results/dc_100ep_5seeds \\
        benchmarks/results/reproduction/methods.md

Reads the run's ``summary.csv`` and writes a Markdown table (included by the docs page "The reference
study, reproduced"): per method, the study's V2 advantage and status on its PBMC-33k structured
cluster (reference-study-spec section 7.2, quoted) beside scforget's primary-attack advantage with
its interval, the retrain band, the held-out NLL change and time ratio, and the failure modes read
off those columns:

- ``leak kept``: advantage above the retrain band, AUC above chance (the forgotten cells still
  look like members);
- ``Streisand``: AUC below the retrain band's AUC (the forgotten cells now look *less* like members
  than never-seen cells of their type, which is itself a signal);
- ``utility loss``: held-out NLL more than 2% above retrain's;
- ``too slow``: more than 0.2x one retrain;
- ``design uninformative``: the method's attack (``classifier`` where LiRA has no references of
  its architecture) cannot tell the baseline from retrain on this design, so no verdict.

A second table gives every attack's mean AUC, so that a method inside the band under the primary
and best attacks but below retrain under another (an overshoot) is visible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

# the Markdown table `scforget benchmark` writes into summary.md
from scforget.benchmark._protocol import _markdown as markdown
from scforget.benchmark._summary import NLL_TOLERANCE, TIME_RATIO

#: The study's V2 headline (PBMC-33k, cluster c13, 30 cells; per-seed fresh attacker, nested CIs).
STUDY_V2 = {
    "baseline": ("0.582", "anchor"),
    "retrain": ("0.156 [0.08, 0.26]", "target"),
    "finetune": ("0.333 [0.23, 0.43]", "FAIL"),
    "gradient_ascent": ("0.396 [0.30, 0.49]", "FAIL"),
    "ssd": ("0.435 [0.31, 0.56]", "FAIL"),
    "scrub": ("0.411 [0.28, 0.54]", "FAIL"),
    "contrastive": ("0.673 [0.57, 0.75]", "FAIL (Streisand)"),
    "fisher_forgetting": ("0.615 [0.45, 0.77]", "FAIL"),
    "frozen_critic": ("0.984", "FAIL"),
    "extragradient": ("0.281 [0.20, 0.37]", "FAIL (marginal)"),
    "dpsgd (eps=10)": ("0.045 [0.03, 0.18]", "= retrain"),
}


def failure_modes(row: pd.Series) -> str:
    """The ways a method misses the target, from its summary row (empty for the references).

    Outside the band with an advantage inside it means an AUC below the band (``in_band`` requires
    both), i.e. Streisand; so does an AUC below chance beyond the band's advantage.
    """
    if row.name in ("baseline", "retrain"):
        return ""
    if row["meets_target"] == "uninformative":
        return f"design uninformative under {row['primary_attack']} (no verdict)"
    modes = []
    if not row["in_band"]:
        modes.append("Streisand" if row["advantage"] <= row["band_high"] or row["auc"] < 0.5 else "leak kept")
    if row["heldout_nll_change"] > NLL_TOLERANCE:
        modes.append("utility loss")
    if row["time_ratio_to_retrain"] > TIME_RATIO:
        modes.append("too slow")
    return ", ".join(modes) or "meets the target"


def methods_table(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for method, r in summary.iterrows():
        study = STUDY_V2.get(method, ("", "not in the study"))
        rows.append(
            {
                "method": method,
                "study advantage": study[0],
                "study status": study[1],
                "attack": r["primary_attack"],
                "auc": f"{r['auc']:.3f}",
                "advantage [95% CI]": f"{r['advantage']:.3f} [{r['advantage_low']:.3f}, {r['advantage_high']:.3f}]",
                "band top": f"{r['band_high']:.3f}",
                "NLL change": f"{100 * r['heldout_nll_change']:+.1f}%",
                "time ratio": "" if pd.isna(r["time_ratio_to_retrain"]) else f"{r['time_ratio_to_retrain']:.2f}",
                "best attack (in band)": f"{r['best_attack']} ({'yes' if r['best_in_band'] else 'no'})",
                "scforget": failure_modes(r),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="output directory of `scforget benchmark`")
    parser.add_argument("out", type=Path, help="Markdown table to write")
    parser.add_argument("--design", default="DC")
    args = parser.parse_args()
    summary = pd.read_csv(args.run / "summary.csv", index_col=[0, 1]).loc[args.design]
    aucs = summary[[c for c in summary.columns if c.startswith("auc_")]]
    aucs = aucs.rename(columns=lambda c: c[4:]).map(lambda v: "" if pd.isna(v) else f"{v:.3f}").reset_index()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tables = (markdown(methods_table(summary)), markdown(aucs))
    args.out.write_text(tables[0] + "\n\nMean AUC per attack:\n\n" + tables[1] + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
