"""Validity of the membership audit: planted leak, nulls, out-of-fold scoring, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import scforget as sf
from scforget.privacy import _attacks as A
from scforget.privacy import audit
from scforget.privacy.metrics import auc_with_ci

#: Recipe of the planted-leak model: few cells, small batches, many passes, no dropout -> memorisation.
EPOCHS = 250
BATCH = 8
N_MEMBERS = 40
N_OTHERS = 60
N_LATENT = 10


def _train(adata, train, epochs=EPOCHS):
    import scvi

    # module fixtures run before the autouse seed fixture: seed here, or the model depends on the
    # process's random torch seed and every assertion below becomes a coin flip
    scvi.settings.seed = 0
    rest = np.setdiff1d(np.arange(adata.n_obs), train)
    model = sf.model.SCVI(adata, n_hidden=128, n_latent=N_LATENT, dropout_rate=0.0)
    model.train(
        max_epochs=epochs,
        batch_size=BATCH,
        enable_progress_bar=False,
        datasplitter_kwargs={"external_indexing": [np.asarray(train), np.zeros(0, dtype=np.int64), rest]},
    )
    return model


@pytest.fixture(scope="module")
def leak(_pbmc_small_master):
    """A model trained many epochs on 40 B cells (+60 other cells); 80 other B cells never trained on."""
    adata = _pbmc_small_master.copy()
    sf.model.SCVI.setup_anndata(adata)
    rng = np.random.default_rng(0)
    b = rng.permutation(np.flatnonzero(adata.obs["cell_type"].astype(str).to_numpy() == "B"))
    members, holdout, other_b = np.sort(b[:N_MEMBERS]), np.sort(b[N_MEMBERS : 2 * N_MEMBERS]), np.sort(b[80:120])
    non_b = np.flatnonzero(adata.obs["cell_type"].astype(str).to_numpy() != "B")
    others = np.sort(rng.choice(non_b, N_OTHERS, replace=False))
    model = _train(adata, np.union1d(members, others))
    return {
        "adata": adata,
        "model": model,
        "members": members,
        "holdout": holdout,
        "other_b": other_b,
        "others": others,
    }


@pytest.fixture(scope="module")
def retrained(leak):
    """The same recipe without the members (exact unlearning)."""
    return _train(leak["adata"], leak["others"])


@pytest.mark.slow
def test_planted_leak_detected(leak):
    report = audit(
        leak["model"],
        members=leak["members"],
        nonmembers=leak["holdout"],
        attacks=("loss", "lira"),
        n_reference=2,
        n_bootstrap=200,
        progress_bar=False,
    )
    s = report.summary()
    assert report.info["lira_mode"] == "online"
    assert s.loc["loss", "auc"] > 0.85, s
    assert s.loc["lira", "auc"] > 0.85, s
    assert (s["direction"] == "member").all()
    assert s.loc["loss", "ci_low"] > 0.5


@pytest.mark.slow
def test_null_two_never_trained_sets(leak):
    # neither set was trained on: every attack's CI must cover 0.5
    report = audit(
        leak["model"],
        members=leak["other_b"],
        nonmembers=leak["holdout"],
        n_reference=2,
        n_bootstrap=500,
        design_checks=False,  # a deliberate null: neither set was trained on
        progress_bar=False,
    )
    _assert_family_covers_chance(report)


def _assert_family_covers_chance(report, alpha: float = 0.05) -> None:
    """Under the null every attack's CI covers 0.5; with several attacks, at a Bonferroni-corrected level.

    Requiring each of k 95% intervals to cover 0.5 fails with probability up to 1 - 0.95**k under the
    null (23% for k = 5); intervals at level 1 - alpha / k cover jointly with probability >= 1 - alpha.
    """
    y = report.per_cell["label"].to_numpy()
    level = 1 - alpha / len(report.attacks)
    for attack in report.attacks:
        _, lo, hi = auc_with_ci(report.per_cell[attack].to_numpy(), y, n_bootstrap=2000, seed=0, level=level)
        assert lo <= 0.5 <= hi, (attack, lo, hi)


def test_retrained_model_near_chance(leak, retrained):
    report = audit(
        retrained,
        members=leak["members"],
        nonmembers=leak["holdout"],
        attacks=("loss", "kl", "classifier", "distance"),
        n_bootstrap=500,
        design_checks=False,  # trained from scratch without the members: a deliberate null audit
        progress_bar=False,
    )
    s = report.summary()
    assert ((s["ci_low"] <= 0.5) & (s["ci_high"] >= 0.5)).all(), s
    # and the leaky model is clearly separable with the same attack and sets
    leaky = audit(
        leak["model"], members=leak["members"], nonmembers=leak["holdout"], attacks=("loss",), progress_bar=False
    ).summary()
    assert leaky.loc["loss", "auc"] > s.loc["loss", "auc"] + 0.2


def test_lira_offline_with_supplied_references(leak, retrained):
    report = audit(
        leak["model"],
        members=leak["members"],
        nonmembers=leak["holdout"],
        attacks=("lira",),
        reference_models=[retrained],
        n_bootstrap=200,
        progress_bar=False,
    )
    assert report.info["lira_mode"] == "offline"
    assert report.info["lira_references"] == "supplied"
    # one OUT model, pooled variance: weaker than online LiRA but the leak is detected
    s = report.summary()
    assert s.loc["lira", "ci_low"] > 0.5 and s.loc["lira", "direction"] == "member", s


# ---- out-of-fold proof -------------------------------------------------------------------------


def test_classifier_scores_are_out_of_fold_on_noise():
    # pure-noise features: a classifier scored on its own training cells looks strong, out-of-fold it is chance
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 40))
    y = np.r_[np.ones(40), np.zeros(40)].astype(int)
    in_sample = A.make_classifier("logistic", 0).fit(x, y).decision_function(x)
    assert roc_auc_score(y, in_sample) > 0.9
    oof, folds = A.classifier_scores(x, y, n_folds=5, seed=0)
    _, lo, hi = auc_with_ci(oof, y, n_bootstrap=500, seed=0)
    assert lo <= 0.5 <= hi
    assert set(np.unique(folds)) == set(range(5))


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_no_score_depends_on_its_own_label(kind):
    # flipping one cell's label (folds fixed) must not change that cell's score, but changes other folds' scores
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6))
    y = (x[:, 0] + rng.normal(scale=1.0, size=50) > 0).astype(int)
    folds = A.stratified_folds(y, 5, seed=0)
    base = A.cross_fit(x, y, folds, kind, seed=0)
    i = 7
    y2 = y.copy()
    y2[i] = 1 - y2[i]
    flipped = A.cross_fit(x, y2, folds, kind, seed=0)
    assert flipped[i] == base[i]
    same_fold = folds == folds[i]
    np.testing.assert_array_equal(flipped[same_fold], base[same_fold])
    assert not np.allclose(flipped[~same_fold], base[~same_fold])


def test_audit_classifier_scores_reproduce_fold_refits(leak):
    report = audit(
        leak["model"],
        members=leak["members"],
        nonmembers=leak["holdout"],
        attacks=("classifier",),
        include_names=True,
        n_bootstrap=50,
        progress_bar=False,
    )
    sig = sf.privacy.signals(leak["model"], report.per_cell.index, reference=leak["others"], progress_bar=False)
    x = A.classifier_features(sig)
    y = report.per_cell["label"].to_numpy()
    folds = report.info["folds"]
    for f in range(5):
        test = folds == f
        clf = A.make_classifier("logistic", f).fit(x[~test], y[~test])
        np.testing.assert_allclose(report.per_cell["classifier"].to_numpy()[test], clf.decision_function(x[test]))


# ---- determinism -------------------------------------------------------------------------------


def test_same_seed_same_summary_different_seed_different_folds(leak, retrained):
    kw = {
        "members": leak["members"],
        "nonmembers": leak["holdout"],
        "reference_models": [retrained],
        "n_bootstrap": 200,
        "progress_bar": False,
    }
    a = audit(leak["model"], seed=0, **kw)
    b = audit(leak["model"], seed=0, **kw)
    c = audit(leak["model"], seed=1, **kw)
    pd.testing.assert_frame_equal(a.summary(), b.summary())
    pd.testing.assert_frame_equal(a.per_cell, b.per_cell)
    assert not np.array_equal(a.info["folds"], c.info["folds"])
    assert not a.summary()[["ci_low", "ci_high"]].equals(c.summary()[["ci_low", "ci_high"]])
    # threshold attacks do not depend on the seed
    np.testing.assert_array_equal(a.per_cell["loss"], c.per_cell["loss"])


def test_planted_leak_cheap_attacks(leak):
    # default-suite version of the planted leak (no reference training): the cross-fitted classifier finds it
    s = audit(
        leak["model"],
        members=leak["members"],
        nonmembers=leak["holdout"],
        attacks=("loss", "kl", "classifier"),
        n_bootstrap=200,
        progress_bar=False,
    ).summary()
    assert s.loc["classifier", "auc"] > 0.85, s
    assert (s["ci_low"] > 0.5).all(), s


def test_null_two_never_trained_sets_cheap(leak, retrained):
    report = audit(
        leak["model"],
        members=leak["other_b"],
        nonmembers=leak["holdout"],
        reference_models=[retrained],
        n_bootstrap=500,
        design_checks=False,  # a deliberate null: neither set was trained on
        progress_bar=False,
    )
    _assert_family_covers_chance(report)
