"""Membership-inference metrics: AUC with a bootstrap CI, advantage, TPR at low FPR, epsilon bounds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats
from scipy.stats import rankdata

from scforget._core import doc_params

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec


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


def advantage(auc: float) -> float:
    """Membership advantage ``2 |AUC - 0.5|`` (0 = chance, 1 = perfect, either direction)."""
    return float(2 * abs(auc - 0.5))


def roc(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)``, a cell is called a member when its score is >= the threshold."""
    from sklearn.metrics import roc_curve

    s, y = _check_scores(scores, labels)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thr


def tpr_at_fpr(scores, labels, fpr: float) -> float:
    """Largest true-positive rate among thresholds whose false-positive rate is at most ``fpr``.

    With ``n`` non-members the smallest attainable non-zero FPR is ``1/n``; below it this is the
    TPR at FPR 0.
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


@doc_params(scores_labels=_DOC_SCORES_LABELS)
def epsilon_lower_bound_roc(scores, labels, *, delta: float = 1e-5, confidence: float | None = 0.95) -> float:
    """Largest epsilon lower bound over all thresholds of an attack's ROC curve.

    Parameters
    ----------
    {scores_labels}
    delta
        The delta of (epsilon, delta)-DP.
    confidence
        With a value, FPR and FNR are replaced by one-sided Clopper-Pearson upper bounds at this
        level (each at ``1 - (1 - confidence) / 2``), so the result is a statistically valid lower
        bound (Jagielski et al. 2020); ``None`` uses the point estimates, which overstate epsilon
        on small sets (any threshold with FPR = FNR = 0 gives ``inf``).

    Returns
    -------
    The bound (0 when no threshold beats chance).
    """
    f, t, _ = roc(scores, labels)
    y = np.asarray(labels).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    fnr = 1 - t
    if confidence is None:
        return float(np.max(epsilon_lower_bound(f, fnr, delta)))
    alpha = (1 - confidence) / 2
    fpr_up = _clopper_pearson_upper(np.round(f * n0), n0, alpha)
    fnr_up = _clopper_pearson_upper(np.round(fnr * n1), n1, alpha)
    return float(np.max(epsilon_lower_bound(fpr_up, fnr_up, delta)))


def per_example_epsilon(a: np.ndarray, b: np.ndarray, delta: float = 1e-5) -> float:
    """Epsilon of the best threshold separating two samples of one example's score.

    Thresholds at every observed value, both directions; thresholds with exactly one error rate
    of zero are discarded (the rate is not estimable), FPR = FNR = 0 gives ``inf`` (the NeurIPS
    2023 unlearning-challenge estimator).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    thr = np.unique(np.concatenate([a, b]))
    thr = np.concatenate([thr, [np.inf]])
    # rule: call "a" when score >= threshold
    fnr = (a[None, :] < thr[:, None]).mean(1)  # a called b
    fpr = (b[None, :] >= thr[:, None]).mean(1)  # b called a
    best = 0.0
    for f, n in zip(fpr, fnr, strict=True):
        if f == 0 and n == 0:
            return float("inf")
        if f == 0 or n == 0:
            continue
        best = max(best, float(epsilon_lower_bound(f, n, delta)))
    return best


def forgetting_quality_from_scores(
    unlearned_scores: np.ndarray, retrained_scores: np.ndarray, *, delta: float = 1e-5, bin_width: float = 0.5
) -> float:
    """NeurIPS 2023 machine-unlearning challenge score from per-model scores.

    Parameters
    ----------
    unlearned_scores
        Array ``(n_unlearned_models, n_cells)`` of one signal per model and cell.
    retrained_scores
        Array ``(n_retrained_models, n_cells)``.
    delta
        The delta of (epsilon, delta)-DP.
    bin_width
        Width of the epsilon bins.

    Returns
    -------
    Mean over cells of ``2 ** -floor(eps / bin_width)``: 1 when no cell is distinguishable,
    0 when every cell is perfectly separated.
    """
    u = np.atleast_2d(np.asarray(unlearned_scores, dtype=np.float64))
    r = np.atleast_2d(np.asarray(retrained_scores, dtype=np.float64))
    if u.shape[1] != r.shape[1]:
        raise ValueError(f"Both score arrays need the same number of cells; got {u.shape[1]} and {r.shape[1]}.")
    if u.shape[0] < 2 or r.shape[0] < 2:
        raise ValueError("Forgetting quality needs at least two unlearned and two retrained models.")
    eps = np.array([per_example_epsilon(u[:, j], r[:, j], delta) for j in range(u.shape[1])])
    bins = np.floor(eps / bin_width)
    points = np.where(np.isinf(eps), 0.0, np.exp2(-np.where(np.isinf(bins), 0, bins)))
    return float(points.mean())


def forgetting_quality(
    unlearned_models: Sequence[BaseModelClass],
    retrained_models: Sequence[BaseModelClass],
    cells: CellSpec,
    *,
    signal: str = "recon_ll",
    delta: float = 1e-5,
    bin_width: float = 0.5,
    batch_size: int = 1024,
) -> float:
    """NeurIPS 2023 unlearning-challenge forgetting quality of a family of unlearned models.

    Each model scores every cell with a posterior-mean signal; for each cell the best threshold
    between the unlearned and the retrained distributions gives an epsilon, which is binned
    (``bin_width``) and converted to ``2 ** -bin`` points; the mean over cells is returned.

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
    bin_width
        Width of the epsilon bins.
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
    return forgetting_quality_from_scores(u, r, delta=delta, bin_width=bin_width)
