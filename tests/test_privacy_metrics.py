"""Unit tests of the membership-inference metric functions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from scforget.privacy import metrics as M


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 200).astype(float)  # many ties
    y = rng.integers(0, 2, 200)
    auc, lo, hi = M.auc_with_ci(s, y, n_bootstrap=200, seed=0)
    assert auc == pytest.approx(roc_auc_score(y, s))
    assert lo <= auc <= hi


def test_auc_bootstrap_matches_naive_resampling():
    # the O(Bn) bootstrap must give the same distribution as resampling cells and recomputing AUC
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.normal(0.5, 1, 60), rng.normal(0, 1, 80)])
    y = np.r_[np.ones(60), np.zeros(80)]
    _, lo, hi = M.auc_with_ci(s, y, n_bootstrap=2000, seed=3)
    r = np.random.default_rng(7)
    naive = []
    for _ in range(2000):
        p = r.choice(s[:60], 60)
        n = r.choice(s[60:], 80)
        ranks = rankdata(np.r_[p, n])  # Mann-Whitney AUC, independent of the implementation under test
        naive.append((ranks[:60].sum() - 60 * 61 / 2) / (60 * 80))
    nlo, nhi = np.quantile(naive, [0.025, 0.975])
    assert lo == pytest.approx(nlo, abs=0.02)
    assert hi == pytest.approx(nhi, abs=0.02)


def test_auc_ci_coverage_under_null():
    # 95% CI covers 0.5 in most null draws (binomial tolerance: >= 85 of 100)
    covered = 0
    for i in range(100):
        rng = np.random.default_rng(100 + i)
        s = rng.normal(size=80)
        y = np.r_[np.ones(40), np.zeros(40)]
        _, lo, hi = M.auc_with_ci(s, y, n_bootstrap=300, seed=i)
        covered += lo <= 0.5 <= hi
    assert covered >= 85


def test_auc_ci_deterministic_and_seed_dependent():
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=50), np.r_[np.ones(25), np.zeros(25)]
    assert M.auc_with_ci(s, y, 100, 0) == M.auc_with_ci(s, y, 100, 0)
    assert M.auc_with_ci(s, y, 100, 0) != M.auc_with_ci(s, y, 100, 1)


def test_auc_input_errors():
    with pytest.raises(ValueError, match="both"):
        M.auc_with_ci([1, 2], [1, 1])
    with pytest.raises(ValueError, match="same length"):
        M.auc_with_ci([1, 2, 3], [1, 0])
    with pytest.raises(ValueError, match="binary"):
        M.auc_with_ci([1, 2], [2, 0])


def test_advantage():
    assert M.advantage(0.5) == 0
    assert M.advantage(1.0) == 1
    assert M.advantage(0.2) == pytest.approx(0.6)


def test_tpr_at_fpr():
    s = np.r_[np.arange(10, 20), np.arange(0, 100) / 10.0]  # members 10..19 all above non-members 0..9.9
    y = np.r_[np.ones(10), np.zeros(100)]
    assert M.tpr_at_fpr(s, y, 0.0) == 1.0
    s2 = np.r_[np.arange(10), np.arange(100) / 10.0]
    # members 0..9, non-members 0..9.9; at FPR <= 1%, only threshold above 9.8 -> member 9.0? no: 9 < 9.8
    assert M.tpr_at_fpr(s2, y, 0.01) == 0.0
    assert M.tpr_at_fpr(s2, y, 1.0) == 1.0
    with pytest.raises(ValueError):
        M.tpr_at_fpr(s2, y, 1.5)


def test_epsilon_lower_bound_formula():
    assert M.epsilon_lower_bound(0.5, 0.5) == 0.0  # chance
    e = M.epsilon_lower_bound(0.1, 0.2, delta=0.0)
    assert e == pytest.approx(max(np.log(0.9 / 0.2), np.log(0.8 / 0.1)))
    assert M.epsilon_lower_bound(0.0, 0.0) == np.inf
    arr = M.epsilon_lower_bound(np.array([0.5, 0.1]), np.array([0.5, 0.2]), delta=0.0)
    assert arr.shape == (2,) and arr[0] == 0


def test_epsilon_roc_confidence_is_conservative():
    rng = np.random.default_rng(0)
    s = np.r_[rng.normal(2, 1, 100), rng.normal(0, 1, 100)]
    y = np.r_[np.ones(100), np.zeros(100)]
    point = M.epsilon_lower_bound_roc(s, y, confidence=None)
    valid = M.epsilon_lower_bound_roc(s, y, confidence=0.95)
    assert 0 < valid < point
    # separated sets: the point estimate is infinite, the statistical bound finite
    s2 = np.r_[np.arange(10) + 100.0, np.arange(10)]
    y2 = np.r_[np.ones(10), np.zeros(10)]
    assert M.epsilon_lower_bound_roc(s2, y2, confidence=None) == np.inf
    assert np.isfinite(M.epsilon_lower_bound_roc(s2, y2, confidence=0.95))
