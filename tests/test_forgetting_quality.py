"""Forgetting quality against an independent, brute-force reading of the challenge estimator; the
epsilon lower bound's level under the null, by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scforget.privacy import metrics as M
from scforget.privacy._metrics import _clopper_pearson_upper

DELTA = 1e-5


# ---- an independent implementation: every threshold against every score, plain loops over rules ----
def _rates(pos, neg, predicted):
    """Mean over models of the indicator "called positive", per rule (predicted: (rules, values) -> bool)."""
    return predicted(pos).mean(1), predicted(neg).mean(1)


def _rule_eps(tpr, fpr):
    out = []
    for t, f in zip(tpr, fpr, strict=True):
        fnr, tnr = 1 - t, 1 - f
        if f + fnr == 0 and t + tnr == 2:
            out.append(math.inf)
        elif f * fnr == 0:
            continue
        else:
            vals = []
            if 1 - DELTA - f > 0:
                vals.append(math.log(1 - DELTA - f) - math.log(fnr))
            if 1 - DELTA - fnr > 0:
                vals.append(math.log(1 - DELTA - fnr) - math.log(f))
            out.append(max(max(vals), 0.0) if vals else 0.0)
    return out


def brute_epsilon(u, r):
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    dp, dn = np.ptp(pos), np.ptp(neg)
    big, small = max(dp, dn), min(dp, dn)
    if big > 0 and small / big < 0.01:
        return 50.0
    # one threshold: called positive when score >= t
    lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
    grid = np.linspace(lo, hi, int(np.ceil((hi - lo) * 100)))
    eps = _rule_eps(*_rates(pos, neg, lambda v: v[None, :] >= grid[:, None]))
    # two thresholds: the peakier family called when l <= score <= r
    p2, n2 = (neg, pos) if dp >= dn else (pos, neg)
    width = np.ptp(p2)
    rights = np.linspace(p2.min() + width - 2, p2.max() + 2, int(np.ceil((p2.max() + 2 - p2.min() - width + 2) * 100)))
    for rt in rights:
        lefts = np.linspace(rt - width - 2, rt - width + 2, 400)
        eps += _rule_eps(
            *_rates(p2, n2, lambda v, lefts=lefts, rt=rt: (lefts[:, None] <= v[None, :]) & (v[None, :] <= rt))
        )
    return min(max(eps), 50.0) if eps else 0.0


def brute_quality(U, R):
    n = min(U.shape[0], R.shape[0])
    top = math.ceil(math.log(n - 1))
    buckets, start, pts = [], 0.0, 1.0
    while start + 0.5 <= top:
        buckets.append((start, pts))
        start, pts = start + 0.5, pts / 2
    total = 0.0
    for j in range(U.shape[1]):
        e = brute_epsilon(U[:, j], R[:, j])
        total += next((p for s, p in buckets if e < s + 0.5), 0.0)
    return total / U.shape[1]


def _cases(n, rng, m=3):
    base = rng.normal(0, 1, (n, m))
    return {
        "identical": (base, base.copy()),
        "same distribution": (rng.normal(0, 1, (n, m)), rng.normal(0, 1, (n, m))),
        "unlearned above": (rng.normal(1, 1, (n, m)), rng.normal(0, 1, (n, m))),
        "unlearned below": (rng.normal(-1, 1, (n, m)), rng.normal(0, 1, (n, m))),
        "separated": (rng.normal(10, 1, (n, m)), rng.normal(0, 1, (n, m))),
        "tied": (np.round(rng.normal(0, 1, (n, m)), 1), np.round(rng.normal(0.3, 1, (n, m)), 1)),
        "constant": (np.full((n, m), 0.25), rng.normal(0, 1, (n, m))),
        "both constant, apart": (np.full((n, m), 0.0), np.full((n, m), 1.0)),
        "peaky": (rng.normal(0, 0.004, (n, m)), rng.normal(0, 1, (n, m))),
    }


@pytest.mark.parametrize("n_models", [5, 10, 64])
def test_forgetting_quality_matches_an_independent_implementation(n_models):
    rng = np.random.default_rng(n_models)
    for name, (u, r) in _cases(n_models, rng).items():
        ours = M.forgetting_quality_from_scores(u, r)
        ref = brute_quality(u, r)
        assert ours == pytest.approx(ref, abs=0.01), name


def test_both_directions_count():
    """An unlearned family scoring *below* the retrained one is as distinguishable as one above."""
    rng = np.random.default_rng(0)
    r = rng.normal(0, 1, (10, 40))
    noise = rng.normal(0, 1, (10, 40))
    up, down = M.forgetting_quality_from_scores(noise + 3, r), M.forgetting_quality_from_scores(noise - 3, r)
    assert up == pytest.approx(down, abs=0.05)
    assert up < 0.2 and M.forgetting_quality_from_scores(r.copy(), r) == 1.0


def test_edge_rules():
    # a very peaky family gets the cap
    assert M.example_epsilon(np.full(8, 1.0) + np.arange(8) * 1e-4, np.linspace(-3, 3, 8)) == 50.0
    # perfectly separated: infinity, capped
    assert M.example_epsilon(np.arange(8.0) + 100, np.arange(8.0)) == 50.0
    # nothing to evaluate: every score equal
    assert M.example_epsilon(np.zeros(6), np.zeros(6)) == 0.0
    # the points halve every half unit up to ceil(log(n - 1)), then 0
    assert M.forgetting_quality_from_scores(np.arange(8.0)[:, None] + 100, np.arange(8.0)[:, None]) == 0.0


def test_unequal_model_counts():
    rng = np.random.default_rng(1)
    u, r = rng.normal(0.5, 1, (6, 5)), rng.normal(0, 1, (11, 5))
    assert M.forgetting_quality_from_scores(u, r) == pytest.approx(brute_quality(u, r), abs=0.01)
    with pytest.raises(ValueError, match="one column per example"):
        M.forgetting_quality_from_scores(u, r[:, :3])
    with pytest.raises(ValueError, match="at least two"):
        M.forgetting_quality_from_scores(u[:1], r)
    with pytest.raises(ValueError, match="NaN"):
        M.forgetting_quality_from_scores(np.full((3, 2), np.nan), r[:3, :2])


# ---- the epsilon lower bound holds its level under the null ----
def _naive_bound(s, y, alpha=0.05):
    """The invalid way: the largest Clopper-Pearson bound over every threshold of the same data."""
    pos, neg = s[y == 1], s[y == 0]
    t = np.unique(s)
    fp = neg.size - np.searchsorted(np.sort(neg), t, side="left")
    fn = np.searchsorted(np.sort(pos), t, side="left")
    return np.max(
        M.epsilon_lower_bound(
            _clopper_pearson_upper(fp, neg.size, alpha / 2), _clopper_pearson_upper(fn, pos.size, alpha / 2), DELTA
        )
    )


@pytest.mark.parametrize(("n", "draws"), [(100, 1500), (1000, 400)])
def test_epsilon_bound_holds_its_level_under_the_null(n, draws):
    rng = np.random.default_rng(n)
    y = np.r_[np.ones(n), np.zeros(n)]
    positive = {"split": 0, "bonferroni": 0}
    for i in range(draws):
        s = rng.normal(size=2 * n)
        positive["split"] += M.epsilon_lower_bound_roc(s, y, seed=i) > 0
        positive["bonferroni"] += M.epsilon_lower_bound_roc(s, y, selection="bonferroni") > 0
    # nominal 5%; allow the binomial noise of `draws` draws (one-sided, z = 2.33)
    limit = 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / draws)
    assert positive["split"] / draws <= limit
    assert positive["bonferroni"] / draws <= limit


def test_the_null_simulation_can_fail():
    """Positive control: the maximum over all thresholds exceeds its level at n = 1000 (issue 10: 6.8%)."""
    rng = np.random.default_rng(7)
    n, draws = 1000, 600
    y = np.r_[np.ones(n), np.zeros(n)]
    hits = sum(_naive_bound(rng.normal(size=2 * n), y) > 0 for _ in range(draws))
    assert hits / draws > 0.05


def test_epsilon_bound_has_power():
    rng = np.random.default_rng(0)
    s = np.r_[rng.normal(1.5, 1, 1000), rng.normal(0, 1, 1000)]
    y = np.r_[np.ones(1000), np.zeros(1000)]
    assert M.epsilon_lower_bound_roc(s, y, seed=0) > 1.0
    assert M.epsilon_lower_bound_roc(s, y, selection="bonferroni") > 1.0
    with pytest.raises(ValueError, match="selection"):
        M.epsilon_lower_bound_roc(s, y, selection="max")
