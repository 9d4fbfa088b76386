"""The audit report for readers: verdict sentences, unreachable FPRs, direction labels, HTML, donors, ROC bands."""

from __future__ import annotations

import itertools
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from scforget.privacy import AuditReport, audit, plot_roc_models
from scforget.privacy import metrics as M
from scforget.privacy._donors import MIN_DONORS_CI


def synthetic(n1, n0, shift, *, seed=0, attacks=("loss", "kl"), unlearned=False, donors=None, n_bootstrap=200):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n1, int), np.zeros(n0, int)]
    per_cell = pd.DataFrame({"label": y})
    for i, a in enumerate(attacks):
        per_cell[a] = rng.normal(size=y.size) + shift * y * (1 if i == 0 else 0.5)
    if donors is not None:
        per_cell["donor"] = donors
    return AuditReport(
        per_cell=per_cell,
        attacks=tuple(attacks),
        n_bootstrap=n_bootstrap,
        seed=0,
        info={"model": "SCVI", "unlearned": unlearned},
        donor_key=None if donors is None else "donor",
    )


def brute_tpr_at(scores, labels, fpr):
    """Independent: try every threshold, keep those with FPR <= fpr, report the best TPR."""
    best = 0.0
    for t in np.r_[np.unique(scores), np.inf]:
        called = scores >= t
        f = called[labels == 0].mean()
        if f <= fpr + 1e-12:
            best = max(best, called[labels == 1].mean())
    return best


def test_unreachable_fpr_is_nan_with_a_note():
    small = synthetic(40, 18, 1.0)
    s = small.summary(full=True)
    assert s["tpr_1pct"].isna().all() and s["tpr_0.1pct"].isna().all()  # 18 non-members resolve neither
    notes = " ".join(small.notes())
    assert "needs at least 100 non-members (there are 18)" in notes and "at least 1000" in notes
    mid = synthetic(40, 150, 1.0)
    s = mid.summary(full=True)
    assert s["tpr_0.1pct"].isna().all()
    y = mid.per_cell["label"].to_numpy()
    for a in mid.attacks:
        assert s.loc[a, "tpr_1pct"] == pytest.approx(brute_tpr_at(mid.per_cell[a].to_numpy(), y, 0.01))


@pytest.mark.parametrize(
    ("shift", "unlearned", "expected"),
    [(1.5, False, "member"), (0.0, False, "chance"), (-1.5, False, "reversed"), (-1.5, True, "over-unlearned")],
)
def test_direction_fits_the_model(shift, unlearned, expected):
    rep = synthetic(200, 200, shift, unlearned=unlearned, attacks=("loss",))
    row = rep.summary().loc["loss"]
    assert row["direction"] == expected, row
    sentence = rep.verdict().splitlines()[0]
    assert sentence.startswith("loss:")
    assert f"{row['ci_low']:.2f}-{row['ci_high']:.2f}" in sentence and "chance" in sentence
    if expected == "reversed":
        assert "never unlearned" in sentence and "rarity confound" in sentence and "not over-unlearning" in sentence
        assert "separates them in reverse" in rep.verdict().splitlines()[-1]
    if expected == "over-unlearned":
        assert "over-unlearning" in sentence


def test_verdict_one_sentence_per_attack_and_overall():
    leak = synthetic(300, 300, 1.0).verdict().splitlines()
    assert len(leak) == 3
    assert leak[-1].startswith("Overall: membership is detectable") and "strongest is loss" in leak[-1]
    null = synthetic(300, 300, 0.0, attacks=("loss",)).verdict().splitlines()
    assert null[-1].startswith("Overall: no attack") and "300 members vs 300 non-members" in null[-1]
    unl = synthetic(300, 300, 1.0, unlearned=True, attacks=("loss",)).verdict()
    assert "still look like training data" in unl and "forgotten cells are still recognisable" in unl


def test_summary_fits_a_terminal():
    rep = synthetic(300, 3000, 1.0, attacks=("loss", "kl", "classifier", "distance", "lira", "rmia"))
    text = rep.summary().to_string()  # to_string never truncates or wraps
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert {"tpr_0.1pct", "p_value", "advantage", "n_members", "n_nonmembers"} <= set(rep.summary(full=True).columns)
    with pytest.raises(TypeError, match="full"):
        rep.summary(full=1)


def test_tpr_curve_and_roc_band():
    rng = np.random.default_rng(1)
    s, y = np.r_[rng.normal(1, 1, 80), rng.normal(0, 1, 120)], np.r_[np.ones(80), np.zeros(120)]
    grid = np.array([0.0, 0.01, 0.05, 0.2, 0.5, 1.0])
    np.testing.assert_allclose(M.tpr_curve(s, y, grid), [brute_tpr_at(s, y, g) for g in grid])
    lo, hi = M.roc_band(s, y, grid, n_bootstrap=300, seed=0)
    point = M.tpr_curve(s, y, grid)
    assert (lo <= hi).all() and hi[-1] == 1.0
    assert ((lo <= point + 1e-9) & (point <= hi + 1e-9)).mean() >= 5 / 6


def donors_for(n1_donors, n0_donors, per):
    return np.r_[
        np.repeat([f"m{i}" for i in range(n1_donors)], per), np.repeat([f"n{i}" for i in range(n0_donors)], per)
    ]


def brute_rank_p(pos, neg):
    """Independent exact one-sided p: share of all label assignments with a rank sum at least the observed."""
    s = np.r_[pos, neg]
    ranks = pd.Series(s).rank().to_numpy()
    observed = ranks[: pos.size].sum()
    sums = [ranks[list(c)].sum() for c in itertools.combinations(range(s.size), pos.size)]
    return float(np.mean(np.asarray(sums) >= observed - 1e-9))


@pytest.mark.parametrize(("n1d", "n0d"), [(3, 4), (6, 5), (2, 2)])
def test_donor_summary_against_exact_enumeration(n1d, n0d):
    per = 20
    rep = synthetic(n1d * per, n0d * per, 0.4, seed=n1d, donors=donors_for(n1d, n0d, per))
    table = rep.by_donor()
    assert len(table) == n1d + n0d and (table["n_cells"] == per).all()
    assert table["member"].sum() == n1d
    np.testing.assert_allclose(table.loc["m0", "loss"], rep.per_cell.loc[rep.per_cell["donor"] == "m0", "loss"].mean())
    ds = rep.donor_summary()
    pos, neg = table.loc[table["member"], "loss"].to_numpy(), table.loc[~table["member"], "loss"].to_numpy()
    assert ds.loc["loss", "p_value"] == pytest.approx(brute_rank_p(pos, neg))
    assert ds.loc["loss", "min_p"] == pytest.approx(1 / len(list(itertools.combinations(range(n1d + n0d), n1d))))
    assert ds["ci_low"].isna().all()  # fewer than MIN_DONORS_CI a side: no interval
    assert "too few donors for an interval" in ds.loc["loss", "note"]
    if ds.loc["loss", "min_p"] > 0.05:
        assert "no result can reach p < 0.05" in ds.loc["loss", "note"]
    if ds.loc["loss", "min_p"] * 2 > 0.05:  # two attacks share the 5%
        assert "too few donors to say" in rep.verdict()


def test_donor_interval_with_enough_donors():
    n = MIN_DONORS_CI
    rep = synthetic(n * 10, n * 10, 2.0, donors=donors_for(n, n, 10))
    ds = rep.donor_summary()
    assert np.isfinite(ds.loc["loss", "ci_low"]) and ds.loc["loss", "ci_low"] <= ds.loc["loss", "auc"]
    assert ds.loc["loss", "p_value"] < 0.01 and ds.loc["loss", "note"] == ""
    assert "a donor's presence in the training set is detectable" in rep.verdict()
    with pytest.raises(ValueError, match="donor_key"):
        synthetic(10, 10, 0.0).by_donor()


def test_roc_of_several_models_on_one_axis():
    reps = {
        "baseline": synthetic(100, 100, 1.5),
        "unlearned": synthetic(100, 100, 0.5),
        "retrain": synthetic(100, 100, 0),
    }
    ax = plot_roc_models(reps, "loss", show=False)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [lab.split(" ")[0] for lab in labels] == ["baseline", "unlearned", "retrain", "chance"]
    assert len(ax.collections) == 3  # one band per model
    with pytest.raises(ValueError, match="not in every report"):
        plot_roc_models(reps, "lira")
    with pytest.raises(TypeError, match="AuditReport"):
        plot_roc_models({"a": 1})


def test_html_report_is_self_contained(tmp_path, trained_scvi, dc_split):
    adata = trained_scvi.adata
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 2 == 0, "d0", "d1")
    donors = np.empty(adata.n_obs, dtype=object)
    donors[dc_split.forget] = [f"m{i % 3}" for i in range(dc_split.forget.size)]
    donors[dc_split.holdout] = [f"h{i % 3}" for i in range(dc_split.holdout.size)]
    adata.obs["donor"] = pd.Categorical(np.where(donors == None, "other", donors).astype(str))  # noqa: E711
    rep = audit(
        trained_scvi,
        members=dc_split.forget,
        nonmembers=dc_split.holdout,
        attacks=("loss", "classifier"),
        n_folds=3,
        groupby="cell_type",
        donor_key="donor",
        n_bootstrap=50,
        progress_bar=False,
    )
    # donor-grouped folds: each donor's cells in one fold
    folds = pd.DataFrame({"donor": rep.per_cell["donor"].to_numpy(), "fold": rep.info["folds"]})
    assert (folds.groupby("donor", observed=True)["fold"].nunique() == 1).all()
    path = rep.to_html(tmp_path / "sub" / "audit.html")
    text = path.read_text()
    for line in rep.verdict().splitlines():
        assert line.split(" (")[0].replace("&", "&amp;") in text.replace("&#x27;", "'")
    assert text.count("data:image/png;base64,") == 2
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", text)  # nothing fetched from elsewhere
    assert "By cell_type" in text and "Donors (donor)" in text and "scvi-tools" in text and "Versions" in text
    assert not set(re.findall(r"[ACGT]{14,}-1", text)) & set(adata.obs_names)  # no barcodes


def test_donor_design_checks(trained_scvi, dc_split):
    adata = trained_scvi.adata
    adata.obs["donor"] = "d0"  # every cell the same donor: members and non-members share it
    kw = {"members": dc_split.forget, "nonmembers": dc_split.holdout, "attacks": ("loss",), "progress_bar": False}
    with pytest.raises(ValueError, match="both members and non-members"):
        audit(trained_scvi, donor_key="donor", **kw)
    adata.obs["donor"] = np.where(np.isin(np.arange(adata.n_obs), dc_split.forget), "m", "n")
    with pytest.raises(ValueError, match="folds keep each donor"):
        audit(trained_scvi, donor_key="donor", **{**kw, "attacks": ("classifier",)})
    with pytest.raises(KeyError, match="donor_key"):
        audit(trained_scvi, donor_key="donr", **kw)
    rep = audit(trained_scvi, donor_key="donor", **kw)
    assert "too few donors" in rep.verdict()


@pytest.mark.parametrize(("n1", "n0"), [(5, 7), (30, 25), (300, 200)])
def test_auc_p_value_against_its_definition(n1, n0):
    rng = np.random.default_rng(n1)
    s, y = np.r_[rng.normal(0.3, 1, n1), rng.normal(0, 1, n0)], np.r_[np.ones(n1), np.zeros(n0)]
    p = M.auc_p_value(s, y)
    if n1 + n0 <= 12:  # exact: enumerate every assignment of the member labels
        assert p == pytest.approx(brute_rank_p(s[:n1], s[n1:]))
    else:  # normal approximation: against a Monte Carlo permutation p-value (sd of that estimate ~ 0.005)
        auc = M.auc_with_ci(s, y, n_bootstrap=0)[0]
        perm = [M.auc_with_ci(s, rng.permutation(y), n_bootstrap=0)[0] >= auc for _ in range(4000)]
        assert p == pytest.approx(np.mean(perm), abs=0.03)
    assert M.auc_p_value(np.r_[np.arange(5) + 10, np.arange(5)], np.r_[np.ones(5), np.zeros(5)]) == pytest.approx(
        1 / 252
    )


def test_overall_verdict_holds_its_level_under_the_null():
    """Six correlated attacks on exchangeable cells: the overall verdict claims detection in <= 5% of audits."""
    rng = np.random.default_rng(0)
    claims, any_ci = 0, 0
    n_sim = 300
    attacks = ("loss", "kl", "classifier", "distance", "lira", "rmia")
    for i in range(n_sim):
        base = rng.normal(size=400)
        per_cell = pd.DataFrame({"label": np.r_[np.ones(200, int), np.zeros(200, int)]})
        for a in attacks:
            per_cell[a] = base + rng.normal(size=400)  # correlated through `base`, no membership signal
        rep = AuditReport(per_cell=per_cell, attacks=attacks, n_bootstrap=100, seed=i, info={"model": "SCVI"})
        claims += rep.verdict().splitlines()[-1].startswith("Overall: membership is detectable")
        any_ci += (rep.summary()["direction"] == "member").any()
    # binomial sd at 5% and 300 draws is 1.3%: allow the nominal level plus two sds
    assert claims / n_sim <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / n_sim), claims
    assert any_ci > claims  # the per-attack CIs alone would claim more often: the correction matters
