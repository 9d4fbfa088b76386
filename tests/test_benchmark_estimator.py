"""The benchmark's estimator, power and verdicts, on simulated audits (no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scforget.benchmark._config import BenchmarkConfig
from scforget.benchmark._estimator import hierarchical_bootstrap, min_detectable_auc, permutation_p
from scforget.benchmark._forget_designs import parse_designs
from scforget.benchmark._summary import summarise
from scforget.privacy.metrics import auc_with_ci


def run(rng, n1, n0, shift):
    s = np.r_[rng.normal(shift, 1, n1), rng.normal(0, 1, n0)]
    return s, np.r_[np.ones(n1, bool), np.zeros(n0, bool)]


def test_one_model_matches_the_stratified_cell_bootstrap():
    rng = np.random.default_rng(0)
    s, y = run(rng, 150, 150, 0.5)
    e = hierarchical_bootstrap({(0, 0): (s, y)}, n_bootstrap=600, seed=1)
    auc, lo, hi = auc_with_ci(s, y, n_bootstrap=2000, seed=2)
    assert e.auc == pytest.approx(auc)
    assert e.auc_low == pytest.approx(lo, abs=0.015) and e.auc_high == pytest.approx(hi, abs=0.015)
    assert e.advantage == pytest.approx(2 * abs(auc - 0.5))


def test_seed_to_seed_variation_widens_the_interval():
    rng = np.random.default_rng(1)
    same = {(0, u): run(rng, 100, 100, 0.4) for u in range(5)}
    varied = {(0, u): run(rng, 100, 100, shift) for u, shift in enumerate([0.0, 0.2, 0.4, 0.6, 0.8])}
    a = hierarchical_bootstrap(same, n_bootstrap=400, seed=0)
    b = hierarchical_bootstrap(varied, n_bootstrap=400, seed=0)
    assert (b.auc_high - b.auc_low) > 1.5 * (a.auc_high - a.auc_low)
    assert b.n_models == 5


def test_min_detectable_auc_has_the_stated_power():
    n = 60
    mde = min_detectable_auc(n, n)
    shift = np.sqrt(2) * stats.norm.ppf(mde)  # AUC of N(shift, 1) vs N(0, 1) is Phi(shift / sqrt 2)
    rng = np.random.default_rng(0)
    hits = [
        stats.mannwhitneyu(rng.normal(shift, 1, n), rng.normal(0, 1, n), alternative="greater").pvalue < 0.05
        for _ in range(2000)
    ]
    assert np.mean(hits) == pytest.approx(0.8, abs=0.04)  # binomial sd at 2000 draws: 0.009
    assert min_detectable_auc(18, 18) > min_detectable_auc(172, 172) > 0.5


def test_permutation_p_is_valid_under_the_null():
    rng = np.random.default_rng(3)
    ps = [
        permutation_p({(0, u): run(rng, 20, 20, 0.0) for u in range(2)}, n_permutations=99, seed=i) for i in range(200)
    ]
    assert np.mean(np.asarray(ps) <= 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 200)
    strong = {(0, 0): run(rng, 50, 50, 1.5)}
    assert permutation_p(strong, n_permutations=99, seed=0) == pytest.approx(0.01)


def synthetic_runs(baseline_shift, method_shift, *, n=60, nll=None, time=0.1):
    """Audits of a baseline, 3 retrains and one method, like a benchmark's."""
    rng = np.random.default_rng(0)
    rows, scores = [], {}
    plan = (
        [("baseline", 0, baseline_shift)]
        + [("retrain", r, 0.0) for r in range(3)]
        + [("m", s, method_shift) for s in range(3)]
    )
    for method, seed, shift in plan:
        s, y = run(rng, n, n, shift)
        per_cell = pd.DataFrame({"label": y.astype(int), "loss": s, "classifier": s + rng.normal(0, 0.5, s.size)})
        scores[("DC", method, 0, seed)] = per_cell
        rows.append(
            {
                "design": "DC", "method": method, "baseline_seed": 0, "seed": seed,
                "guarantee": {"baseline": "none", "retrain": "exact"}.get(method, "approximate"),
                "wall_time_s": 1.0, "time_ratio_to_retrain": {"baseline": np.nan, "retrain": 1.0}.get(method, time),
                "heldout_nll": 100.0 if method != "m" or nll is None else nll,
                "auc_loss": auc_with_ci(s, y, n_bootstrap=0)[0],
                "auc_classifier": auc_with_ci(per_cell["classifier"], y, n_bootstrap=0)[0],
            }
        )  # fmt: skip
    return pd.DataFrame(rows), scores


def _retrain_runs(scores, attack):
    return {
        (b, seed): (cells[attack].to_numpy(np.float64), cells["label"].to_numpy().astype(bool))
        for (_, method, b, seed), cells in scores.items()
        if method == "retrain"
    }


CONFIG = BenchmarkConfig(primary_attack="loss", n_bootstrap=200)


def test_verdicts_follow_the_band_power_utility_and_time():
    runs, scores = synthetic_runs(1.5, 0.0)
    s = summarise(runs, scores, CONFIG)
    assert s.loc[("DC", "baseline"), "informative"]
    assert s.loc[("DC", "m"), "in_band"] and s.loc[("DC", "m"), "meets_target"] == "yes"
    assert s.loc[("DC", "baseline"), "best_attack"] in ("loss", "classifier")
    assert s.loc[("DC", "m"), "min_detectable_auc"] == pytest.approx(min_detectable_auc(60, 60))
    # three models on each side: the challenge's forgetting quality is defined, and in [0, 1]
    assert 0 <= s.loc[("DC", "m"), "forgetting_quality"] <= 1
    assert np.isnan(s.loc[("DC", "baseline"), "forgetting_quality"])  # one baseline model
    # keeps the leak -> outside the band
    forgets = s.loc[("DC", "m"), "forgetting_quality"]
    runs, scores = synthetic_runs(1.5, 1.5)
    leaky = summarise(runs, scores, CONFIG).loc[("DC", "m")]
    assert leaky["meets_target"] == "no"
    assert leaky["forgetting_quality"] < forgets  # forget cells fit better than under retraining
    # overshoot (Streisand): advantage may be small in size but the AUC is below the band
    runs, scores = synthetic_runs(1.5, -1.0)
    row = summarise(runs, scores, CONFIG).loc[("DC", "m")]
    assert not row["in_band"] and row["meets_target"] == "no"
    # the two bounds the verdict used are in the table, from the retrain models alone
    assert row["auc"] < row["band_auc_low"]
    band = hierarchical_bootstrap(
        _retrain_runs(scores, "loss"), n_bootstrap=max(CONFIG.n_bootstrap, 50), seed=CONFIG.split_seed
    )
    assert row["band_auc_low"] == pytest.approx(band.auc_low) and row["band_high"] == pytest.approx(band.advantage_high)
    # forgets but costs utility, or time
    runs, scores = synthetic_runs(1.5, 0.0, nll=103.0)
    assert summarise(runs, scores, CONFIG).loc[("DC", "m"), "meets_target"] == "no"
    runs, scores = synthetic_runs(1.5, 0.0, time=0.5)
    assert summarise(runs, scores, CONFIG).loc[("DC", "m"), "meets_target"] == "no"


def test_a_design_without_power_is_uninformative():
    runs, scores = synthetic_runs(0.05, 0.05, n=15)
    s = summarise(runs, scores, CONFIG)
    assert not s.loc[("DC", "baseline"), "informative"]
    assert s.loc[("DC", "m"), "meets_target"] == "uninformative"


def test_forget_designs_are_parsed_and_checked(pbmc_small):
    pbmc_small.obs["donor"] = np.where(np.arange(pbmc_small.n_obs) % 3 == 0, "P1", "P2")
    designs = parse_designs(["DC", "random:30", "donor:P1"], pbmc_small, label_key="cell_type", donor_key="donor")
    assert [d.kind for d in designs] == ["structured", "scattered", "donor"]
    split = designs[2].split(pbmc_small, label_key="cell_type", donor_key="donor", holdout_fraction=0.5, seed=0)
    donors = pbmc_small.obs["donor"].to_numpy()
    assert (donors[split.forget] == "P1").all() and (donors[split.holdout] == "P1").all()
    assert abs(split.holdout.size - split.forget.size) <= 1
    assert (
        designs[1].split(pbmc_small, label_key="cell_type", donor_key=None, holdout_fraction=0.5, seed=0).forget.size
        == 30
    )
    for specs, donor_key, match in [
        (["dc"], None, "Did you mean 'DC'"),
        (["random:x"], None, "random:N"),
        (["donor:P1"], None, "needs --donor-key"),
        (["donor:P9"], "donor", "no donor 'P9'"),
        (["DC", "DC"], None, "twice"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_designs(specs, pbmc_small, label_key="cell_type", donor_key=donor_key)


def test_donor_design_adds_donors_never_trained_on_as_nonmembers(pbmc_small):
    donors = np.array(["P1", "P2", "P3", "P4"])[np.arange(pbmc_small.n_obs) % 4]
    pbmc_small.obs["donor"] = donors
    kw = {"label_key": "cell_type", "donor_key": "donor"}
    (design,) = parse_designs(["donor:P1"], pbmc_small, heldout_donors=2, **kw)
    plain = design.split(pbmc_small, holdout_fraction=0.5, seed=0, **kw)
    split = design.split(pbmc_small, holdout_fraction=0.5, seed=0, heldout_donors=2, **kw)
    away = sorted(set(donors[split.holdout]) - {"P1"})
    assert len(away) == 2 and "P1" not in away
    # every cell of the two set-aside donors is a non-member and none is trained on or validated on
    for d in away:
        assert np.isin(np.flatnonzero(donors == d), split.holdout).all()
    assert not np.isin(donors[np.concatenate([split.train, split.validation])], away).any()
    # the forgotten donor's own cells are split exactly as without set-aside donors
    np.testing.assert_array_equal(split.forget, plain.forget)
    np.testing.assert_array_equal(split.holdout[donors[split.holdout] == "P1"], plain.holdout)
    assert split.n_obs == pbmc_small.n_obs
    for bad, match in [(3, "pass at most 2"), (True, "a count"), (-1, "a count")]:
        with pytest.raises(ValueError, match=match):
            parse_designs(["donor:P1"], pbmc_small, heldout_donors=bad, **kw)


def test_config_refuses_repeated_seeds():
    with pytest.raises(ValueError, match="--retrain-seeds"):
        BenchmarkConfig(retrain_seeds=[0, 0])


def test_marker_correlation_against_scipy():
    from scforget.benchmark._markers import mean_gene_correlation

    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 4))
    b = a + rng.normal(scale=[0.1, 1.0, 3.0, 1.0], size=(50, 4))
    b[:, 3] = 1.0  # a constant gene is skipped
    expected = np.mean([stats.pearsonr(a[:, j], b[:, j])[0] for j in range(3)])
    assert mean_gene_correlation(a, b) == pytest.approx(expected)
    assert np.isnan(mean_gene_correlation(a[:, 3:], b[:, 3:]))
