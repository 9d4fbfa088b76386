"""The pre-flight check of a benchmark design, timed against one retrain."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scforget.data import ForgetSplit

    from ._config import BenchmarkConfig


def preflight_row(name: str, model, split: ForgetSplit, config: BenchmarkConfig, retrain_s: float) -> dict[str, Any]:
    """:func:`scforget.fisher.unlearnability` on a design's baseline, before any unlearning.

    The calibration cells (never audited) feed the memorisation score; the wall time is reported as
    a ratio to the design's median retrain. The check runs at its defaults (the retain Fisher from at
    most :data:`~scforget.fisher._unlearnability.DEFAULT_MAX_RETAIN` random retain cells), as a user
    would run it.
    """
    from scforget.fisher import unlearnability

    start = time.perf_counter()
    check = unlearnability(
        model,
        split.forget,
        split.retain,
        calibration=split.calibration if split.calibration.size >= 2 else None,
        seed=config.split_seed,
        retrain_seconds=retrain_s,
        progress_bar=False,
    )
    wall = time.perf_counter() - start
    ev = check.evidence
    table = check.overlap.table
    return {
        "design": name,
        "verdict": check.verdict,
        "global_relative_overlap": float(table.loc["global", "cosine"] / table.loc["global", "null_cosine"]),
        "max_relative_overlap": float(ev["relative_overlap"].max()),
        "isolation": check.isolation,
        "memorisation_auc": check.memorisation_auc,
        "preflight_s": wall,
        "preflight_ratio_to_retrain": wall / retrain_s,
    }
