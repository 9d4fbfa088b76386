"""Forgetting quality: the estimator of the NeurIPS 2023 machine-unlearning challenge, on per-model scores.

For every forgotten example the estimator compares the example's scores under a family of unlearned
models with its scores under a family of retrained models, finds the decision rule that separates the
two best, converts that rule's error rates into an epsilon, and pays points that halve with every
half unit of epsilon. The definition followed here (Triantafillou et al. 2024, "Are we making
progress in unlearning?"; the challenge's ``metric.py``) has these parts, each tested:

- the *positive* family is the one with the larger median score for that example;
- two families of rules: one threshold (call positive when the score is >= t), and two thresholds
  (call the *peakier* family, the one with the smaller range, when ``l <= score <= r``);
- thresholds on a grid of 100 per unit of score: one threshold from the smallest to the largest
  pooled score; right thresholds from ``min + width - 2`` to ``max + 2`` of the peakier family and, for
  each, 400 left thresholds within 2 of ``right - width`` (``width`` = the peakier range);
- a rule with FPR = FNR = 0 gives epsilon = infinity; a rule with exactly one zero rate is discarded
  (too few models to estimate it); the others give ``max(log((1 - delta - FPR) / FNR),
  log((1 - delta - FNR) / FPR), 0)``;
- when the smaller range is under 1% of the larger one (a very peaky family), epsilon is the cap;
- epsilons are capped at 50; an example earns ``2 ** -k`` points for epsilon in ``[k/2, (k+1)/2)``
  while ``(k+1)/2 <= ceil(log(n - 1))`` for ``n`` models, and 0 beyond.

Rates are computed from sorted scores (a threshold's rate is a count of scores on one side), which
gives the same numbers as evaluating every threshold against every score, much faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec

#: Largest epsilon an example can get (perfect separation or a very peaky family).
EPSILON_CAP = 50.0
#: Grid density of the thresholds, per unit of score.
THRESHOLDS_PER_UNIT = 100
#: How far beyond the peakier family's range the two-threshold rules reach.
_BUFFER = 2.0
#: A family whose range is below this fraction of the other's is "very peaky".
_PEAKY_RATIO = 0.01
#: Epsilon bins.
BUCKET = 0.5


def _share_at_least(sorted_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of scores >= each threshold."""
    n = sorted_scores.size
    return (n - np.searchsorted(sorted_scores, thresholds, side="left")) / n


def _share_between(sorted_scores: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Fraction of scores with ``left <= score <= right``."""
    n = sorted_scores.size
    inside = np.searchsorted(sorted_scores, right, side="right") - np.searchsorted(sorted_scores, left, side="left")
    return np.maximum(inside, 0) / n


def _single_threshold_rates(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TPR, FPR) of the rules "positive when score >= t" on the one-threshold grid."""
    lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
    grid = np.linspace(lo, hi, int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
    return _share_at_least(np.sort(pos), grid), _share_at_least(np.sort(neg), grid)


def _double_threshold_rates(pos: np.ndarray, neg: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(TPR, FPR) of the rules "the peakier family when l <= score <= r" on the two-threshold grid.

    The peakier family (smaller range; the second one on a tie) plays the positive class here; the
    epsilon of a rule is symmetric in its two error rates, so which family is called positive does
    not change it.
    """
    if (pos.max() - pos.min()) >= (neg.max() - neg.min()):
        pos, neg = neg, pos
    width = pos.max() - pos.min()
    lo, hi = pos.min() + width - _BUFFER, pos.max() + _BUFFER
    right = np.linspace(lo, hi, int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
    n_left = int(np.ceil(2 * _BUFFER * THRESHOLDS_PER_UNIT))
    sp, sn = np.sort(pos), np.sort(neg)
    tprs, fprs = [], []
    for start in range(0, right.size, chunk):
        r = right[start : start + chunk, None]
        left = np.linspace(r - width - _BUFFER, r - width + _BUFFER, n_left, axis=1)[..., 0]
        rr = np.broadcast_to(r, left.shape)
        tprs.append(_share_between(sp, left, rr).ravel())
        fprs.append(_share_between(sn, left, rr).ravel())
    if not tprs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(tprs), np.concatenate(fprs)


def rule_epsilons(tpr: np.ndarray, fpr: np.ndarray, delta: float) -> np.ndarray:
    """Epsilon of each decision rule from its rates: ``inf`` for a perfect rule, NaN where one rate is 0."""
    fnr = 1.0 - tpr
    with np.errstate(divide="ignore", invalid="ignore"):
        # fmax: a direction whose log is undefined (an error rate of 1) does not count
        eps = np.fmax(np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr))
    eps = np.clip(eps, 0.0, None)
    eps = np.where((fpr == 0) ^ (fnr == 0), np.nan, eps)
    return np.where((fpr == 0) & (fnr == 0), np.inf, eps)


def example_epsilon(a: np.ndarray, b: np.ndarray, delta: float = 1e-5) -> float:
    """Epsilon of one example from its scores under two families of models (see the module notes).

    Parameters
    ----------
    a
        The example's scores under the first family (e.g. unlearned models).
    b
        Its scores under the second family (e.g. retrained models); the counts may differ.
    delta
        The delta of (epsilon, delta)-DP.

    Returns
    -------
    Epsilon in ``[0, EPSILON_CAP]``; 0 when no rule can be evaluated (e.g. every score equal).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    pos, neg = (b, a) if np.median(b) > np.median(a) else (a, b)
    ranges = sorted([pos.max() - pos.min(), neg.max() - neg.min()])
    if ranges[1] > 0 and ranges[0] / ranges[1] < _PEAKY_RATIO:
        return EPSILON_CAP
    tpr_d, fpr_d = _double_threshold_rates(pos, neg)
    tpr_s, fpr_s = _single_threshold_rates(pos, neg)
    eps = rule_epsilons(np.concatenate([tpr_d, tpr_s]), np.concatenate([fpr_d, fpr_s]), delta)
    if np.isnan(eps).all():
        return 0.0
    return float(np.clip(np.nanmax(eps), 0.0, EPSILON_CAP))


def points(eps: np.ndarray, n_models: int) -> np.ndarray:
    """Points of each epsilon: ``2 ** -k`` in bucket ``k`` (width 0.5) below ``ceil(log(n_models - 1))``, else 0."""
    eps = np.asarray(eps, dtype=np.float64)
    top = np.ceil(np.log(n_models - 1)) if n_models > 1 else 0.0
    n_buckets = int(np.floor(top / BUCKET + 1e-9))
    k = np.floor(eps / BUCKET)
    return np.where(k < n_buckets, np.exp2(-np.minimum(k, 1074)), 0.0)


def forgetting_quality_from_scores(
    unlearned_scores: np.ndarray, retrained_scores: np.ndarray, *, delta: float = 1e-5
) -> float:
    """Forgetting quality (the NeurIPS 2023 unlearning challenge's score) from per-model scores.

    Parameters
    ----------
    unlearned_scores
        Array ``(n_unlearned_models, n_examples)`` of one score per model and forgotten example.
    retrained_scores
        Array ``(n_retrained_models, n_examples)``; the number of models may differ from the
        unlearned one (the points then use the smaller count).
    delta
        The delta of (epsilon, delta)-DP.

    Returns
    -------
    The mean points over examples, in [0, 1]: 1 when no example is distinguishable, 0 when every
    example is separated beyond what the number of models can resolve.
    """
    u = np.atleast_2d(np.asarray(unlearned_scores, dtype=np.float64))
    r = np.atleast_2d(np.asarray(retrained_scores, dtype=np.float64))
    if u.shape[1] != r.shape[1]:
        raise ValueError(f"Both score arrays need one column per example; got {u.shape[1]} and {r.shape[1]} columns.")
    if u.shape[0] < 2 or r.shape[0] < 2:
        raise ValueError("Forgetting quality needs at least two unlearned and two retrained models.")
    if not (np.isfinite(u).all() and np.isfinite(r).all()):
        raise ValueError("The scores contain NaN or infinite values.")
    eps = np.array([example_epsilon(u[:, j], r[:, j], delta) for j in range(u.shape[1])])
    return float(points(eps, min(u.shape[0], r.shape[0])).mean())


def forgetting_quality(
    unlearned_models: Sequence[BaseModelClass],
    retrained_models: Sequence[BaseModelClass],
    cells: CellSpec,
    *,
    signal: str = "recon_ll",
    delta: float = 1e-5,
    batch_size: int = 1024,
) -> float:
    """NeurIPS 2023 unlearning-challenge forgetting quality of a family of unlearned models.

    Each model scores every cell with a posterior-mean signal; each cell's scores under the unlearned
    and the retrained models give an epsilon (see :func:`forgetting_quality_from_scores` and the
    module notes: both directions, one- and two-threshold rules, the peaky-family rule), converted to
    points that halve every half unit of epsilon; the mean over cells is returned.

    Parameters
    ----------
    unlearned_models
        Unlearned models (e.g. one per seed), all on the same AnnData.
    retrained_models
        Models retrained without the cells (exact unlearning), same AnnData.
    cells
        The forgotten cells to score.
    signal
        Signal column of :func:`scforget.privacy.signals` to compare.
    delta
        The delta of (epsilon, delta)-DP.
    batch_size
        Cells per minibatch.

    Returns
    -------
    Forgetting quality in [0, 1]; higher is better forgotten.
    """
    from scforget._core import AUDIT_CLASSES, check_model
    from scforget.data import as_positions

    from ._signals import BASE_COLUMNS, compute_raw

    if signal not in ("recon_ll", "kl", "elbo"):
        raise ValueError(f"`signal` must be one of 'recon_ll', 'kl', 'elbo'; got {signal!r} (of {BASE_COLUMNS}).")
    models = list(unlearned_models) + list(retrained_models)
    unlearned_models, retrained_models = list(unlearned_models), list(retrained_models)
    if len(unlearned_models) < 2 or len(retrained_models) < 2:
        raise ValueError("Forgetting quality needs at least two unlearned and two retrained models.")
    for i, m in enumerate(models):
        check_model(m, supported=AUDIT_CLASSES, task="auditing", argument=f"models[{i}]")
    names = models[0].adata.obs_names
    for m in models[1:]:
        if not m.adata.obs_names.equals(names):
            raise ValueError("All models must be set up on the same cells (identical obs_names).")
    pos = as_positions(cells, names, argument="cells")

    def score(m):
        raw = compute_raw(m, pos, batch_size=batch_size)
        return {"recon_ll": raw["recon_ll"], "kl": raw["kl"], "elbo": raw["recon_ll"] - raw["kl"]}[signal]

    u = np.stack([score(m) for m in unlearned_models])
    r = np.stack([score(m) for m in retrained_models])
    return forgetting_quality_from_scores(u, r, delta=delta)
