"""Membership-inference metrics: AUC with a bootstrap CI, advantage, TPR at low FPR, epsilon bounds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats
from scipy.stats import rankdata

from scforget._core import doc_params

if TYPE_CHECKING:
    pass


_DOC_SCORES_LABELS = """\
    scores
        Attack scores; higher means "member".
    labels
        1 for members, 0 for non-members."""


def _check_scores(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"`scores` and `labels` must have the same length; got {s.size} and {y.size}.")
    if not np.isin(y, [0, 1, True, False]).all():
        raise ValueError("`labels` must be binary (1 = member, 0 = non-member).")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("`labels` must contain both members (1) and non-members (0).")
    if np.isnan(s).any():
        raise ValueError("`scores` contains NaN.")
    return s, y


def _auc(s: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count one half)."""
    r = rankdata(s)
    n1 = int(y.sum())
    n0 = y.size - n1
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _bootstrap_aucs(pos: np.ndarray, neg: np.ndarray, n_bootstrap: int, seed: int, chunk: int = 100) -> np.ndarray:
    """AUCs of stratified bootstrap resamples, computed from resampling counts in O(B n)."""
    rng = np.random.default_rng(seed)
    neg_sorted = np.sort(neg)
    # for every member: number of non-members strictly below and at most equal to its score
    below = np.searchsorted(neg_sorted, pos, side="left")
    upto = np.searchsorted(neg_sorted, pos, side="right")
    order = np.argsort(neg, kind="stable")
    n1, n0 = pos.size, neg.size
    out = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        w = rng.multinomial(n1, np.full(n1, 1.0 / n1), size=b).astype(np.float64)
        v = rng.multinomial(n0, np.full(n0, 1.0 / n0), size=b).astype(np.float64)[:, order]
        cum = np.concatenate([np.zeros((b, 1)), np.cumsum(v, axis=1)], axis=1)
        wins = 0.5 * (cum[:, below] + cum[:, upto])
        out[start : start + b] = (w * wins).sum(1) / (n1 * n0)
    return out


@doc_params(scores_labels=_DOC_SCORES_LABELS)
def auc_with_ci(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    n_bootstrap: int = 1000,
    seed: int | None = None,
    *,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Area under the ROC curve with a percentile bootstrap confidence interval over cells.

    Members and non-members are resampled separately (stratified bootstrap), so every resample
    holds both classes in their original numbers.

    Parameters
    ----------
    {scores_labels}
    n_bootstrap
        Number of bootstrap resamples; ``0`` returns NaN bounds.
    seed
        Seed of the resampling; ``None`` follows :attr:`scvi.settings.seed`.
    level
        Confidence level of the interval.

    Returns
    -------
    ``(auc, ci_low, ci_high)``.

    Examples
    --------
    >>> auc_with_ci([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0], n_bootstrap=200)[0]
    1.0
    """
    from scforget._core import check_int, check_number, resolve_seed

    s, y = _check_scores(scores, labels)
    n_bootstrap = check_int(n_bootstrap, "n_bootstrap", minimum=0)
    level = check_number(level, "level", minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True)
    auc = _auc(s, y)
    if n_bootstrap == 0:
        return auc, float("nan"), float("nan")
    boots = _bootstrap_aucs(s[y], s[~y], n_bootstrap, resolve_seed(seed))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return auc, float(lo), float(hi)


@doc_params(scores_labels=_DOC_SCORES_LABELS)
def auc_p_value(scores, labels) -> float:
    """One-sided p-value of "members score higher than non-members" (Mann-Whitney U test, AUC > 0.5).

    Exact where the permutation distribution is (no ties, up to 60 cells), normal approximation with
    tie correction otherwise. Valid for scores fixed before the labels are looked at (threshold
    attacks, out-of-fold classifier scores up to the small dependence cross-fitting leaves).

    Parameters
    ----------
    {scores_labels}
    """
    s, y = _check_scores(scores, labels)
    exact = s.size <= 60 and np.unique(s).size == s.size
    return float(
        stats.mannwhitneyu(s[y], s[~y], alternative="greater", method="exact" if exact else "asymptotic").pvalue
    )


def advantage(auc: float) -> float:
    """Membership advantage ``2 |AUC - 0.5|`` (0 = chance, 1 = perfect, either direction)."""
    return float(2 * abs(auc - 0.5))


def roc(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)``, a cell is called a member when its score is >= the threshold."""
    from sklearn.metrics import roc_curve

    s, y = _check_scores(scores, labels)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thr


#: False-positive rates of the reports' ``tpr_*`` columns.
FPR_LEVELS = {"tpr_1pct": 0.01, "tpr_0.1pct": 0.001}


def reachable(fpr: float, n_nonmembers: int) -> bool:
    """Whether ``n_nonmembers`` non-members resolve a false-positive rate of ``fpr`` (one false positive ≤ it)."""
    return n_nonmembers * fpr >= 1 - 1e-9


def tpr_curve(scores, labels, fpr_grid: np.ndarray) -> np.ndarray:
    """Largest TPR among thresholds with FPR at most each grid value (the ROC step function)."""
    f, t, _ = roc(scores, labels)
    # f is non-decreasing and t with it, so the largest TPR at FPR <= g is at the last f <= g
    idx = np.searchsorted(f, np.asarray(fpr_grid, dtype=np.float64) + 1e-12, side="right") - 1
    return np.where(idx >= 0, t[np.clip(idx, 0, None)], 0.0)


def roc_band(
    scores, labels, fpr_grid: np.ndarray, *, n_bootstrap: int = 200, seed: int | None = None, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile bootstrap band of the ROC curve's TPR at each FPR of ``fpr_grid``.

    Members and non-members are resampled separately, as for :func:`auc_with_ci`.

    Returns
    -------
    ``(low, high)`` arrays of the grid's length.
    """
    from scforget._core import resolve_seed

    s, y = _check_scores(scores, labels)
    pos, neg = s[y], s[~y]
    rng = np.random.default_rng(resolve_seed(seed))
    curves = np.empty((n_bootstrap, len(fpr_grid)))
    lab = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    for b in range(n_bootstrap):
        sb = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        curves[b] = tpr_curve(sb, lab, fpr_grid)
    alpha = (1 - level) / 2
    return np.quantile(curves, alpha, axis=0), np.quantile(curves, 1 - alpha, axis=0)


def tpr_at_fpr(scores, labels, fpr: float) -> float:
    """Largest true-positive rate among thresholds whose false-positive rate is at most ``fpr``.

    With ``n`` non-members the smallest attainable non-zero FPR is ``1/n``; below it this is the
    TPR at FPR 0 (reports give NaN there instead: see :class:`~scforget.privacy.AuditReport`).
    """
    if not 0 <= fpr <= 1:
        raise ValueError(f"`fpr` must lie in [0, 1]; got {fpr}.")
    f, t, _ = roc(scores, labels)
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


def epsilon_lower_bound(fpr, fnr, delta: float = 1e-5):
    """Empirical differential-privacy lower bound implied by an attack's (FPR, FNR).

    An (epsilon, delta)-DP mechanism forces ``FPR + exp(eps) FNR >= 1 - delta`` and
    ``FNR + exp(eps) FPR >= 1 - delta`` (Kairouz et al. 2015), hence
    ``eps >= max(log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR), 0)``.

    Parameters
    ----------
    fpr
        False-positive rate(s).
    fnr
        False-negative rate(s).
    delta
        The delta of (epsilon, delta)-DP.

    Returns
    -------
    The bound (``inf`` when FPR = FNR = 0); an array if the inputs are arrays.
    """
    fpr_a = np.asarray(fpr, dtype=np.float64)
    fnr_a = np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.log(np.clip(1 - delta - fpr_a, 0, None)) - np.log(fnr_a)
        e2 = np.log(np.clip(1 - delta - fnr_a, 0, None)) - np.log(fpr_a)
    e1 = np.nan_to_num(e1, nan=0.0, posinf=np.inf, neginf=0.0)
    e2 = np.nan_to_num(e2, nan=0.0, posinf=np.inf, neginf=0.0)
    out = np.maximum(np.maximum(e1, e2), 0.0)
    return float(out) if out.ndim == 0 else out


def _clopper_pearson_upper(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        up = stats.beta.ppf(1 - alpha, k + 1, n - k)
    return np.where(k >= n, 1.0, up)


def _cp_bound_at(pos: np.ndarray, neg: np.ndarray, thresholds: np.ndarray, alpha: float, delta: float) -> np.ndarray:
    """Epsilon bound of the rules "member when score >= t" from one-sided Clopper-Pearson upper bounds.

    FPR and FNR each get an upper bound at level ``1 - alpha / 2``, so the bound of one rule fixed
    in advance is below the true epsilon with probability at least ``1 - alpha``.
    """
    n1, n0 = pos.size, neg.size
    fp = n0 - np.searchsorted(np.sort(neg), thresholds, side="left")  # non-members called members
    fn = np.searchsorted(np.sort(pos), thresholds, side="left")  # members called non-members
    fpr_up = _clopper_pearson_upper(fp, n0, alpha / 2)
    fnr_up = _clopper_pearson_upper(fn, n1, alpha / 2)
    return np.asarray(epsilon_lower_bound(fpr_up, fnr_up, delta), dtype=np.float64)


@doc_params(scores_labels=_DOC_SCORES_LABELS)
def epsilon_lower_bound_roc(
    scores,
    labels,
    *,
    delta: float = 1e-5,
    confidence: float | None = 0.95,
    selection: str = "split",
    seed: int | None = None,
) -> float:
    """Empirical epsilon lower bound of an attack, valid at the stated confidence (or a point estimate).

    Every threshold of the ROC curve gives a bound from its FPR and FNR (Kairouz et al. 2015). Taking
    the largest of them on the same cells that estimate the rates is not a valid bound: the maximum
    over many thresholds exceeds the truth far more often than one threshold does. Two valid ways:

    - ``selection="split"`` (default): the cells are split in half within each class; the threshold
      with the largest bound on the first half is chosen, and the bound is computed on the second
      half alone, with one-sided Clopper-Pearson upper bounds on FPR and FNR (Jagielski et al. 2020).
    - ``selection="bonferroni"``: every threshold on all cells, each at level
      ``1 - (1 - confidence) / n_thresholds`` (a union bound), the largest kept.

    Under the null (members and non-members exchangeable) either gives a positive bound in at most
    ``1 - confidence`` of the draws; this is checked by simulation in the tests.

    Parameters
    ----------
    {scores_labels}
    delta
        The delta of (epsilon, delta)-DP.
    confidence
        Confidence level of the bound; ``None`` returns the largest point estimate over the
        thresholds where both error rates are non-zero (``inf`` when one threshold separates the
        sets): a description of the sample, not a bound.
    selection
        ``"split"`` or ``"bonferroni"`` (ignored when ``confidence`` is ``None``).
    seed
        Seed of the split; ``None`` follows :attr:`scvi.settings.seed`.

    Returns
    -------
    The bound, 0 when no threshold beats chance.
    """
    from scforget._core import check_choice, resolve_seed

    s, y = _check_scores(scores, labels)
    pos, neg = s[y], s[~y]
    thresholds = np.unique(s)
    if confidence is None:
        fnr = np.searchsorted(np.sort(pos), thresholds, side="left") / pos.size
        fpr = (neg.size - np.searchsorted(np.sort(neg), thresholds, side="left")) / neg.size
        eps = np.asarray(epsilon_lower_bound(fpr, fnr, delta), dtype=np.float64)
        estimable = (fpr > 0) & (fnr > 0)  # one zero rate says only that the sample is small
        if ((fpr == 0) & (fnr == 0)).any():
            return float("inf")
        return float(np.max(eps[estimable])) if estimable.any() else 0.0
    check_choice(selection, ("split", "bonferroni"), "selection")
    alpha = 1 - confidence
    if selection == "bonferroni":
        return float(np.max(_cp_bound_at(pos, neg, thresholds, alpha / thresholds.size, delta)))
    if pos.size < 2 or neg.size < 2:
        return 0.0
    rng = np.random.default_rng(resolve_seed(seed))
    pos, neg = rng.permutation(pos), rng.permutation(neg)
    pick_pos, test_pos = pos[: pos.size // 2], pos[pos.size // 2 :]
    pick_neg, test_neg = neg[: neg.size // 2], neg[neg.size // 2 :]
    candidates = np.unique(np.concatenate([pick_pos, pick_neg]))
    on_pick = _cp_bound_at(pick_pos, pick_neg, candidates, alpha, delta)
    if not np.any(on_pick > 0):
        return 0.0
    chosen = candidates[[int(np.argmax(on_pick))]]
    return float(_cp_bound_at(test_pos, test_neg, chosen, alpha, delta)[0])
