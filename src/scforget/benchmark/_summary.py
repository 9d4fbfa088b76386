"""From a benchmark's runs to its verdicts: pre-registered estimates, the retrain band, power, the target."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._config import BenchmarkConfig
from ._estimator import hierarchical_bootstrap, min_detectable_auc, permutation_p

#: Timing columns, summarised by their median over a method's models (one slow run, e.g. a cold
#: start or another process on the machine, should not decide the time target).
MEDIANS = ("wall_time_s", "time_ratio_to_retrain")
#: Columns averaged over a method's models.
MEANS = (
    "design_train_s",
    "cost_fraction",
    "epsilon",
    "heldout_nll",
    "forget_nll",
    "holdout_nll",
    "membership_gap",
    "celltype_accuracy",
    "marker_r_retrain",
    "marker_r_observed",
)
#: The columns a reader needs first, in order (``summary.md`` shows these; ``summary.csv`` has all).
KEY_COLUMNS = (
    "guarantee",
    "n_models",
    "time_ratio_to_retrain",
    "heldout_nll_change",
    "celltype_accuracy",
    "marker_r_retrain",
    "primary_attack",
    "auc",
    "advantage",
    "advantage_low",
    "advantage_high",
    "band_high",
    "band_auc_low",
    "in_band",
    "best_attack",
    "best_auc",
    "best_in_band",
    "informative",
    "min_detectable_auc",
    "forgetting_quality",
    "meets_target",
)
#: The benchmark target: utility within this fraction of retrain's held-out NLL, time within this ratio.
NLL_TOLERANCE = 0.02
TIME_RATIO = 0.2


def _runs_of(
    scores: dict, design: str, method: str, attack: str
) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    out = {}
    for (d, m, b, s), per_cell in scores.items():
        if d == design and m == method and attack in per_cell.columns:
            out[(b, s)] = (per_cell[attack].to_numpy(np.float64), per_cell["label"].to_numpy().astype(bool))
    return out


def _has(scores: dict, design: str, method: str, attack: str, n_models: int) -> bool:
    return len(_runs_of(scores, design, method, attack)) == n_models and n_models > 0


def summarise(runs: pd.DataFrame, scores: dict, config: BenchmarkConfig) -> pd.DataFrame:
    """One row per (design, method): means, the primary and best attacks' estimates, band, power, target.

    - The primary attack is ``config.primary_attack`` (pre-registered); a method whose models lack it
      (LiRA needs references of the model's architecture) falls back to ``classifier``, and
      ``primary_attack`` says which was used.
    - The best attack is chosen once per design, on the baseline (the largest baseline advantage),
      and then applied to every method: choosing the best of several attacks per model would inflate
      the retrain reference at small sizes.
    - The retrain band is the retrain models' hierarchical-bootstrap interval of the same statistic.
      A method is inside it when its advantage is at most the band's top and its mean AUC is at least
      the band's bottom AUC (no Streisand effect); ``band_high`` and ``band_auc_low`` are those two
      bounds.
    - A design is informative when the baseline's advantage interval lies above the retrain band;
      otherwise no method can be judged on it and ``meets_target`` says ``uninformative``.
    """
    rows: list[dict[str, Any]] = []
    seed = config.split_seed
    nb = max(config.n_bootstrap, 50)
    for design, d_runs in runs.groupby("design", sort=False):
        order = list(dict.fromkeys(d_runs["method"]))
        n_models = d_runs.groupby("method", sort=False).size()
        row_base: dict[str, Any] = {"design": design}
        est: dict[tuple[str, str], Any] = {}

        def estimate(method: str, attack: str, design=design, est=est):
            key = (method, attack)
            if key not in est:
                runs_ = _runs_of(scores, design, method, attack)
                est[key] = hierarchical_bootstrap(runs_, n_bootstrap=nb, seed=seed) if runs_ else None
            return est[key]

        audited = bool(scores) and any(k[0] == design for k in scores)
        if audited:
            attacks = [
                c[4:]
                for c in d_runs.columns
                if c.startswith("auc_") and d_runs.loc[d_runs["method"] == "baseline", c].notna().all()
            ]
            best = max(attacks, key=lambda a: estimate("baseline", a).advantage)
            some = next(v for k, v in scores.items() if k[0] == design)
            n1, n0 = int(some["label"].sum()), int((some["label"] == 0).sum())
            mde = min_detectable_auc(n1, n0)
        for method in order:
            sub = d_runs[d_runs["method"] == method]
            row = {**row_base, "method": method, "guarantee": sub["guarantee"].iloc[0], "n_models": len(sub)}
            for col in MEDIANS:
                if col in sub.columns and sub[col].notna().any():
                    row[col] = float(sub[col].median())
            for col in MEANS:
                if col in sub.columns and sub[col].notna().any():
                    row[col] = float(sub[col].mean())
            retrain_nll = float(d_runs.loc[d_runs["method"] == "retrain", "heldout_nll"].mean())
            row["heldout_nll_change"] = row["heldout_nll"] / retrain_nll - 1
            if audited:

                def usable(attack: str, method=method, n_models=n_models, design=design) -> str:
                    """The attack, or ``classifier`` where the method or retrain lacks it (no references)."""
                    ok = _has(scores, design, method, attack, int(n_models[method])) and _has(
                        scores, design, "retrain", attack, int(n_models["retrain"])
                    )
                    return attack if ok else "classifier"

                primary = usable(config.primary_attack)
                for prefix, attack in (("", primary), ("best_", usable(best))):
                    e, band = estimate(method, attack), estimate("retrain", attack)
                    row[f"{prefix or 'primary_'}attack"] = attack
                    row[f"{prefix}auc"] = e.auc
                    row[f"{prefix}advantage"] = e.advantage
                    row[f"{prefix}advantage_low"] = e.advantage_low
                    row[f"{prefix}advantage_high"] = e.advantage_high
                    row[f"{prefix}band_high"] = band.advantage_high
                    row[f"{prefix}band_auc_low"] = band.auc_low
                    row[f"{prefix}in_band"] = bool(e.advantage <= band.advantage_high and e.auc >= band.auc_low)
                for c in d_runs.columns:
                    if c.startswith("auc_") and sub[c].notna().any():
                        row[c] = float(sub[c].mean())
                row["forgetting_quality"] = _forgetting_quality(scores, design, method)
                row["p_permutation"] = permutation_p(
                    _runs_of(scores, design, method, primary), n_permutations=200, seed=seed
                )
                base_e, band = estimate("baseline", primary), estimate("retrain", primary)
                row["informative"] = bool(base_e.advantage_low > band.advantage_high)
                row["min_detectable_auc"] = mde
            rows.append(row)
    out = pd.DataFrame(rows).set_index(["design", "method"])
    if "informative" in out.columns:
        out["meets_target"] = [_target(r) for _, r in out.iterrows()]
    first = [c for c in KEY_COLUMNS if c in out.columns]
    return out[first + [c for c in out.columns if c not in first]]


def _forgetting_quality(scores: dict, design: str, method: str) -> float:
    """The NeurIPS 2023 forgetting quality of a method's models against the retrain models.

    Per forget cell, the ``loss`` score (its NB log-likelihood) under each model; NaN with fewer than
    two models on either side (the estimator needs a distribution over models).
    """
    from scforget.privacy.metrics import forgetting_quality_from_scores

    def matrix(m: str) -> np.ndarray:
        rows = [
            pc.loc[pc["label"] == 1, "loss"].to_numpy(np.float64)
            for k, pc in sorted(scores.items())
            if k[:2] == (design, m)
        ]
        return np.vstack(rows) if rows else np.zeros((0, 0))

    u, r = matrix(method), matrix("retrain")
    if u.shape[0] < 2 or r.shape[0] < 2:
        return float("nan")
    return forgetting_quality_from_scores(u, r)


def _target(row: pd.Series) -> str:
    method = row.name[1]
    if method in ("baseline", "retrain"):
        return ""
    if not row["informative"]:
        return "uninformative"
    ok = (
        bool(row["in_band"])
        and bool(row["best_in_band"])
        and row["heldout_nll_change"] <= NLL_TOLERANCE
        and row["time_ratio_to_retrain"] <= TIME_RATIO
    )
    return "yes" if ok else "no"
