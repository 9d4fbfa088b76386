"""The benchmark's pre-registered estimator: hierarchical bootstrap of AUC and advantage over seeds and cells.

Per model, the audit gives one (out-of-fold) score per audited cell and its AUC; the advantage of a
model is ``2 |AUC - 0.5|``. A method's statistic is the mean over its models (baseline seeds x
unlearning seeds). Its uncertainty comes from a hierarchical bootstrap that resamples, in turn,
baseline seeds, unlearning seeds within each baseline seed, and members and non-members within each
model, so that seed-to-seed variation and cell sampling both enter the interval. The retrain band is
the same estimator applied to the retrain models. The permutation null shuffles membership labels
within each model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from scforget.privacy.metrics import auc_with_ci

#: One model's audit: (scores, labels) of the audited cells, keyed by (baseline seed, unlearning seed).
Runs = Mapping[tuple[int, int], tuple[np.ndarray, np.ndarray]]


def _auc(s: np.ndarray, y: np.ndarray) -> float:
    return float(auc_with_ci(s, y, n_bootstrap=0)[0])


@dataclass(frozen=True)
class Estimate:
    """Mean AUC and mean advantage over a method's models, with hierarchical-bootstrap intervals."""

    auc: float
    auc_low: float
    auc_high: float
    advantage: float
    advantage_low: float
    advantage_high: float
    n_models: int


def hierarchical_bootstrap(runs: Runs, *, n_bootstrap: int, seed: int, level: float = 0.95) -> Estimate:
    """Mean AUC and advantage of ``runs`` with percentile intervals from the three-level bootstrap."""
    if not runs:
        raise ValueError("No runs to estimate from.")
    keys = sorted(runs)
    aucs = np.array([_auc(*runs[k]) for k in keys])
    baselines = sorted({b for b, _ in keys})
    by_base = {b: [k for k in keys if k[0] == b] for b in baselines}
    rng = np.random.default_rng(seed)
    boot_auc = np.empty(n_bootstrap)
    boot_adv = np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        picked = []
        for b in rng.choice(len(baselines), len(baselines)):
            members = by_base[baselines[b]]
            picked += [members[j] for j in rng.choice(len(members), len(members))]
        vals = []
        for k in picked:
            s, y = runs[k]
            pos, neg = s[y], s[~y]
            sb = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
            yb = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
            vals.append(_auc(sb, yb))
        vals_a = np.asarray(vals)
        boot_auc[i] = vals_a.mean()
        boot_adv[i] = (2 * np.abs(vals_a - 0.5)).mean()
    a = (1 - level) / 2
    return Estimate(
        auc=float(aucs.mean()),
        auc_low=float(np.quantile(boot_auc, a)),
        auc_high=float(np.quantile(boot_auc, 1 - a)),
        advantage=float((2 * np.abs(aucs - 0.5)).mean()),
        advantage_low=float(np.quantile(boot_adv, a)),
        advantage_high=float(np.quantile(boot_adv, 1 - a)),
        n_models=len(keys),
    )


def permutation_p(runs: Runs, *, n_permutations: int, seed: int) -> float:
    """P-value of the mean advantage against membership labels shuffled within each model."""
    keys = sorted(runs)
    observed = np.mean([2 * abs(_auc(*runs[k]) - 0.5) for k in keys])
    rng = np.random.default_rng(seed)
    null = np.array(
        [
            np.mean([2 * abs(_auc(runs[k][0], rng.permutation(runs[k][1])) - 0.5) for k in keys])
            for _ in range(n_permutations)
        ]
    )
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations))


def min_detectable_auc(n_members: int, n_nonmembers: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest AUC a one-sided test at ``alpha`` detects with ``power`` for these set sizes.

    Uses the null variance of the Mann-Whitney AUC, ``(n1 + n0 + 1) / (12 n1 n0)``, for both
    hypotheses (a close approximation for AUCs up to about 0.75).
    """
    se = np.sqrt((n_members + n_nonmembers + 1) / (12 * n_members * n_nonmembers))
    return float(min(1.0, 0.5 + (stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)) * se))
