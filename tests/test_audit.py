"""audit(): API, report, matched negatives, plots and input errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import scvi

import scforget as sf
from scforget._core import clone_model
from scforget.privacy import AuditReport, audit

from .conftest import same_state, state_snapshot

CHEAP = ("loss", "kl", "classifier", "distance")
COLUMNS = ["auc", "ci_low", "ci_high", "tpr_1pct", "eps_lb", "direction"]
FULL = [*COLUMNS, "tpr_0.1pct", "p_value", "advantage", "n_members", "n_nonmembers"]


def report_model_names(report):
    return report._model_names


@pytest.fixture
def report(trained_scvi, dc_split):
    rep = audit(
        trained_scvi,
        members=dc_split.forget,
        nonmembers=dc_split.holdout,
        attacks=CHEAP,
        groupby="cell_type",
        n_bootstrap=100,
        progress_bar=False,
    )
    rep._model_names = list(trained_scvi.adata.obs_names)  # test-side attribute, for the privacy check
    return rep


def test_summary_schema_and_per_cell(report, dc_split):
    assert isinstance(report, AuditReport)
    assert list(report.summary().columns) == COLUMNS
    s = report.summary(full=True)
    assert list(s.columns) == FULL
    assert s.index.name == "attack" and list(s.index) == list(CHEAP)
    assert (s["n_members"] == len(dc_split.forget)).all()
    assert (s["n_nonmembers"] == len(dc_split.holdout)).all()
    assert ((s["ci_low"] <= s["auc"]) & (s["auc"] <= s["ci_high"])).all()
    np.testing.assert_allclose(s["advantage"], 2 * (s["auc"] - 0.5).abs())
    assert set(s["direction"]) <= {"member", "chance", "reversed"}  # never unlearned: never "over-unlearned"
    # per-cell: anonymous ids, no obs names anywhere
    pc = report.per_cell
    assert isinstance(pc.index, pd.RangeIndex)
    assert list(pc.index) == list(range(len(dc_split.forget) + len(dc_split.holdout)))
    obs_names = set(report_model_names(report))
    flat = {str(v) for v in pc.to_numpy().ravel()} | set(map(str, pc.index))
    assert not flat & obs_names
    assert {"label", *CHEAP, "cell_type"} <= set(pc.columns)
    assert pc["label"].sum() == len(dc_split.forget)
    assert report.best_attack() in CHEAP


def test_include_names_and_by_group(trained_scvi, dc_split):
    rep = audit(
        trained_scvi,
        members=dc_split.forget,
        nonmembers=np.union1d(dc_split.holdout, dc_split.unseen[:40]),
        attacks=("loss", "distance"),
        groupby="cell_type",
        include_names=True,
        n_bootstrap=50,
        progress_bar=False,
    )
    assert set(trained_scvi.adata.obs_names[dc_split.forget]) <= set(rep.per_cell.index)
    assert list(rep.by_group("cell_type").columns) == COLUMNS
    bg = rep.by_group("cell_type", full=True)
    assert bg.index.names == ["cell_type", "attack"]
    assert list(bg.columns) == FULL
    dc = bg.loc["DC"]
    assert (dc["n_members"] == len(dc_split.forget)).all()
    # groups with non-members only have undefined metrics
    only_non = [g for g in bg.index.get_level_values(0).unique() if g != "DC"]
    assert bg.loc[only_non[0], "auc"].isna().all()
    with pytest.raises(KeyError, match="groupby"):
        rep.by_group("batch")


def test_to_obs_writes_only_when_asked(trained_scvi, dc_split):
    adata = trained_scvi.adata
    before = adata.obs.copy()
    report = audit(
        trained_scvi, members=dc_split.forget, nonmembers=dc_split.holdout, attacks=CHEAP, n_bootstrap=20,
        progress_bar=False,
    )  # fmt: skip
    assert adata.obs.equals(before)  # the audit itself wrote nothing
    target = adata.copy()
    report.to_obs(target, prefix="mia_")
    assert "mia_loss" in target.obs and "mia_member" in target.obs
    assert target.obs["mia_member"].iloc[dc_split.forget].eq(1).all()
    assert target.obs["mia_member"].iloc[dc_split.holdout].eq(0).all()
    assert target.obs["mia_loss"].isna().sum() == adata.n_obs - len(dc_split.forget) - len(dc_split.holdout)
    with pytest.raises(ValueError, match="cells"):
        report.to_obs(adata[:10].copy())


def test_plots_return_axes_with_titles(report):
    import matplotlib.pyplot as plt

    ax = report.plot_roc(show=False)
    assert isinstance(ax, matplotlib.axes.Axes) and len(ax.lines) == len(CHEAP) + 1
    assert ax.get_title() == "Membership ROC: SCVI"
    ax = report.plot_roc(log=True, attacks="loss", show=False)
    assert ax.get_xscale() == "log" and len(ax.lines) == 2
    ax = report.plot_scores("loss", show=False)
    assert isinstance(ax, matplotlib.axes.Axes) and ax.get_title() == "loss attack: SCVI"
    with pytest.raises(ValueError, match="not in this report"):
        report.plot_scores("lira")
    plt.close("all")


def test_audit_leaves_model_untouched_and_default_nonmembers(trained_scvi, dc_split):
    snap = state_snapshot(trained_scvi)
    idx = np.array(trained_scvi.train_indices).copy()
    rep = audit(trained_scvi, members=dc_split.forget, attacks=("loss",), n_bootstrap=20, progress_bar=False)
    assert same_state(trained_scvi, snap)
    np.testing.assert_array_equal(trained_scvi.train_indices, idx)
    # default non-members: every cell neither trained nor validated on (holdout + unseen)
    assert rep.summary(full=True).loc["loss", "n_nonmembers"] == len(dc_split.holdout) + len(dc_split.unseen)


def test_matched_negatives(trained_scvi, dc_split):
    neg = sf.data.matched_negatives(trained_scvi, dc_split.forget, k=5, groupby="cell_type")
    assert neg.n_requested == 5 * len(dc_split.forget)
    assert 0 < neg.n_distinct <= neg.n_requested
    never = np.union1d(dc_split.holdout, dc_split.unseen)
    assert np.isin(neg.positions, never).all()
    assert neg.composition.sum() == neg.n_distinct
    # nearest by brute force in posterior-mean latent space
    z = trained_scvi.get_latent_representation(give_mean=True)
    d = np.linalg.norm(z[never][None] - z[dc_split.forget][:, None], axis=2)
    expected = never[np.argsort(d, axis=1)[:, :5]]
    np.testing.assert_array_equal(np.sort(neg.neighbors, 1), np.sort(expected, 1))
    with pytest.warns(UserWarning, match="dropped"):
        sf.data.matched_negatives(trained_scvi, dc_split.forget, pool=dc_split.retain[:5].tolist() + [int(never[0])])
    rep = audit(
        trained_scvi,
        members=dc_split.forget,
        matched=True,
        k=5,
        attacks=("loss", "classifier"),
        groupby="cell_type",
        n_bootstrap=20,
        progress_bar=False,
    )
    assert rep.info["matched"]["n_distinct"] == neg.n_distinct
    assert sum(rep.info["matched"]["composition"].values()) == neg.n_distinct


def test_lira_with_supplied_reference(trained_scvi, dc_split):
    ref = clone_model(trained_scvi)
    ref.train_indices = np.setdiff1d(ref.train_indices, dc_split.forget)  # an OUT reference for the members
    rep = audit(
        trained_scvi,
        members=dc_split.forget,
        nonmembers=dc_split.holdout,
        attacks=("lira",),
        reference_models=[ref],
        n_bootstrap=20,
        progress_bar=False,
    )
    assert rep.info["lira_mode"] == "offline"
    # identical reference -> the target's likelihood equals the reference mean: all scores are 0
    np.testing.assert_allclose(rep.per_cell["lira"], 0.0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"attacks": ("loss", "lirra")}, ValueError, "Did you mean 'lira'"),
        ({"attacks": ()}, ValueError, "empty"),
        ({"nonmembers": "overlap"}, ValueError, "both in `members` and `nonmembers`"),
        ({"members": []}, ValueError, "selects no cells"),
        ({"n_folds": 40}, ValueError, "cross-fitting needs"),
        ({"n_folds": 1}, ValueError, "n_folds"),
        ({"groupby": "celltype"}, KeyError, "cell_type"),
        ({"classifier": "svm"}, ValueError, "classifier"),
    ],
)
def test_audit_errors(trained_scvi, dc_split, kwargs, exc, match):
    args = {"members": dc_split.forget, "nonmembers": dc_split.holdout, "progress_bar": False}
    if kwargs.get("nonmembers") == "overlap":
        kwargs = {"nonmembers": np.r_[dc_split.holdout, dc_split.forget[:1]]}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        audit(trained_scvi, **args)


def test_audit_unsupported_and_no_nonmembers(pbmc_small, trained_scvi, dc_split):
    with pytest.raises(TypeError, match="must be a trained scvi-tools model for auditing"):
        audit("model", members=[0])
    # CondSCVI trains on every cell by default: no non-members exist
    scvi.model.CondSCVI.setup_anndata(pbmc_small, labels_key="cell_type")
    cond = scvi.model.CondSCVI(pbmc_small, n_hidden=8)
    cond.is_trained_ = True
    cond.train_indices = np.arange(pbmc_small.n_obs)
    with pytest.raises(ValueError, match="No non-members"):
        audit(cond, members=dc_split.forget, progress_bar=False)


def test_totalvi_on_mudata_signal_attacks():
    """TOTALVI on MuData: signals use the joint RNA + protein likelihood; signal-based attacks run."""
    mdata = scvi.data.synthetic_iid(return_mudata=True)
    scvi.model.TOTALVI.setup_mudata(
        mdata, batch_key="batch", modalities={"rna_layer": "rna", "protein_layer": "protein_expression"}
    )
    model = scvi.model.TOTALVI(mdata)
    model.train(max_epochs=2, train_size=0.8, enable_progress_bar=False)
    sig = sf.privacy.signals(model, progress_bar=False, include_latent=False)
    assert sig.shape[0] == mdata.n_obs and np.isfinite(sig["recon_ll"]).all()
    # log-likelihoods of discrete counts (RNA and protein) are negative
    assert (sig["recon_ll"] < 0).all()
    report = sf.audit(
        model,
        members=model.train_indices[:40],
        nonmembers=model.validation_indices[:40],
        attacks=("loss", "kl", "classifier", "distance"),
        n_bootstrap=100,
        progress_bar=False,
    )
    assert list(report.summary().index) == ["loss", "kl", "classifier", "distance"]


def test_audit_on_another_anndata_matches_the_model_own(trained_scvi, dc_split, _pbmc_small_master):
    """Cells given by name in a larger AnnData (all pbmc3k cells, every gene) score as on the model's own."""
    own = audit(
        trained_scvi, members=dc_split.forget, nonmembers=dc_split.holdout, attacks=("loss", "kl"),
        n_bootstrap=0, include_names=True, progress_bar=False,
    )  # fmt: skip
    big = sf.datasets.pbmc3k()
    big.obs["cell_type"] = big.obs["cell_type"].astype(str)
    before_obs, before_uns = big.obs.copy(), dict(big.uns)
    store = dict(type(trained_scvi)._per_instance_manager_store)
    names = trained_scvi.adata.obs_names
    other = audit(
        trained_scvi, big, members=names[dc_split.forget], nonmembers=names[dc_split.holdout], attacks=("loss", "kl"),
        n_bootstrap=0, include_names=True, progress_bar=False,
    )  # fmt: skip
    np.testing.assert_allclose(
        other.per_cell.loc[own.per_cell.index, ["loss", "kl"]].to_numpy(), own.per_cell[["loss", "kl"]].to_numpy(),
        rtol=1e-5,
    )  # fmt: skip
    assert other.info["adata"].startswith("another")
    # nothing of the caller's changed: the AnnData, and the model's registrations
    assert big.obs.equals(before_obs) and set(big.uns) == set(before_uns)
    assert type(trained_scvi)._per_instance_manager_store == store
    # default non-members now include cells the model's AnnData never held
    wide = audit(
        trained_scvi, big, members=names[dc_split.forget], attacks=("loss",), n_bootstrap=0, progress_bar=False
    )
    assert wide.summary(full=True).loc["loss", "n_nonmembers"] > dc_split.holdout.size + dc_split.unseen.size
    with pytest.raises(ValueError, match=r"lacks \d+ of the model's 300 genes"):
        audit(trained_scvi, big[:, :100].copy(), members=[0, 1], progress_bar=False)


def test_design_checks_refuse_invalid_designs(trained_scvi, dc_split, pbmc_small):
    kw = {"attacks": ("loss",), "n_bootstrap": 0, "progress_bar": False}
    with pytest.raises(ValueError, match="are training cells of the model"):
        audit(trained_scvi, members=dc_split.forget, nonmembers=dc_split.retain[:30], **kw)
    with pytest.raises(ValueError, match="never training cells of the model .and it was never unlearned"):
        audit(trained_scvi, members=dc_split.holdout, nonmembers=dc_split.unseen, **kw)
    # an unlearned model no longer lists the forgotten cells: they are accepted as members ...
    new = trained_scvi.unlearn(dc_split.forget, method="finetune", max_epochs=1, enable_progress_bar=False)
    audit(new, members=dc_split.forget, nonmembers=dc_split.holdout, **kw)
    # ... but validation cells are not
    with pytest.raises(ValueError, match="never training cells"):
        audit(new, members=dc_split.validation, nonmembers=dc_split.holdout, **kw)
    # different cell-type composition: warned, with the numbers
    cd4 = np.flatnonzero(trained_scvi.adata.obs["cell_type"].astype(str).to_numpy() == "CD4 T")
    cd4_unseen = np.intersect1d(cd4, dc_split.unseen)
    with pytest.warns(UserWarning, match="composition.*matched=True"):
        audit(trained_scvi, members=dc_split.forget, nonmembers=cd4_unseen, label_key="cell_type", **kw)


def test_reference_models_are_checked(trained_scvi, dc_split):
    kw = {"attacks": ("lira",), "n_bootstrap": 0, "progress_bar": False}
    same = clone_model(trained_scvi)  # trained on the members
    with pytest.raises(ValueError, match="trained on 18 of the members"):
        audit(trained_scvi, members=dc_split.forget, nonmembers=dc_split.holdout, reference_models=[same], **kw)
    other = sf.model.SCVI(trained_scvi.adata, n_hidden=8, n_latent=3)
    other.is_trained_ = True
    other.train_indices = dc_split.retain
    with pytest.raises(ValueError, match="n_hidden=8 vs 32"):
        audit(trained_scvi, members=dc_split.forget, nonmembers=dc_split.holdout, reference_models=[other], **kw)


def test_genes_reordered_after_setup_are_refused(trained_scvi, dc_split, tmp_path):
    trained_scvi.save(tmp_path / "m")
    adata = trained_scvi.adata.copy()
    model = sf.model.SCVI.load(str(tmp_path / "m"), adata=adata)
    adata._inplace_subset_var(np.arange(adata.n_vars)[::-1])  # the genes reordered after setup
    with pytest.raises(ValueError, match="genes"):
        audit(model, members=dc_split.forget, nonmembers=dc_split.holdout, attacks=("loss",), progress_bar=False)


def test_minified_model_needs_counts_and_then_audits_like_the_full_one(trained_scvi, dc_split):
    counts = trained_scvi.adata.copy()
    kw = {
        "members": dc_split.forget,
        "nonmembers": dc_split.holdout,
        "attacks": CHEAP,
        "n_bootstrap": 50,
        "progress_bar": False,
    }
    full = audit(trained_scvi, **kw)
    qzm, qzv = trained_scvi.get_latent_representation(return_dist=True)
    trained_scvi.adata.obsm["qzm"], trained_scvi.adata.obsm["qzv"] = qzm, qzv
    trained_scvi.adata.obs["observed_lib_size"] = np.asarray(trained_scvi.adata.X.sum(1)).ravel()
    trained_scvi.minify_adata(use_latent_qzm_key="qzm", use_latent_qzv_key="qzv")
    assert trained_scvi.minified_data_type is not None
    with pytest.raises(ValueError, match="minified.*Pass the raw counts as `adata=`"):
        audit(trained_scvi, **kw)
    rep = audit(trained_scvi, counts, **kw)
    pd.testing.assert_frame_equal(rep.per_cell, full.per_cell)
    assert trained_scvi.minified_data_type is not None  # the caller's model is untouched
