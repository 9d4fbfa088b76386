"""SISA for scVI: exactness of shard retraining, shard keys, the ensemble as a model, saving, refusals."""

from __future__ import annotations

import random

import numpy as np
import pytest
import scvi
import torch
from scipy.special import logsumexp

import scforget as sf
from scforget.model._sharded import stage_seed

from .conftest import same_tensors, state_snapshot

ARCH = {"n_hidden": 16, "n_latent": 4}


@pytest.fixture(scope="module")
def ensemble(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    sf.model.ShardedSCVI.setup_anndata(adata)
    ens = sf.model.ShardedSCVI(adata, n_shards=3, n_slices=2, **ARCH)
    ens.train(max_epochs=4, datasplitter_kwargs=split.datasplitter_kwargs(), seed=3, enable_progress_bar=False)
    return ens, split


def test_slices_partition_the_training_cells(ensemble):
    ens, split = ensemble
    cells = np.concatenate([part for slices in ens.slices_ for part in slices])
    assert np.unique(cells).size == cells.size  # each training cell in exactly one shard and slice
    np.testing.assert_array_equal(np.sort(cells), np.union1d(split.forget, split.retain))
    assert ens.shards_summary().to_numpy().sum() == cells.size
    assert all(len(c) == ens.n_slices + 1 for c in ens.checkpoints_)


def test_sisa_is_exact_and_keeps_untouched_shards_bit_for_bit(ensemble):
    ens, split = ensemble
    forget = split.forget[::2]
    before = [state_snapshot(s) for s in ens.shards]
    new = ens.unlearn(forget, method="sisa", seed=0)
    record = new.unlearning_records_[-1]
    where = ens.shard_of(forget)
    hit = sorted(set(where["shard"]))
    assert record["guarantee"] == "exact"
    assert record["retrained_shards"] == hit
    # the input ensemble is untouched
    assert all(same_tensors(b, state_snapshot(s)) for b, s in zip(before, ens.shards, strict=True))
    adata = ens.adata
    for s in range(ens.n_shards):
        after = state_snapshot(new.shards[s])
        if s not in hit:
            assert same_tensors(after, before[s]), f"untouched shard {s} changed"
            continue
        first = int(where.loc[where["shard"] == s, "slice"].min())
        assert record["retrained_from_slice"][str(s)] == first
        # the reference: an scVI resumed from the checkpoint before `first`, trained on the reduced slices
        ref = sf.model.SCVI(adata, **ARCH)  # the drop-in subclass: scvi-tools training loop
        ref.module.load_state_dict(ens.checkpoints_[s][first])
        for r in range(first, ens.n_slices):
            cells = np.sort(np.concatenate([np.setdiff1d(p, forget) for p in ens.slices_[s][: r + 1]]))
            seed = stage_seed(3, s, r)
            torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)
            ref.module.train()
            ref.train(
                max_epochs=ens.stage_epochs_[r],
                batch_size=128,
                datasplitter_kwargs={
                    "external_indexing": [
                        cells,
                        np.zeros(0, dtype=np.int64),
                        np.setdiff1d(np.arange(adata.n_obs), cells),
                    ]
                },
                enable_progress_bar=False,
                enable_checkpointing=False,
                accelerator="cpu",
            )
        assert same_tensors(after, state_snapshot(ref)), f"retrained shard {s} differs from training without the cells"
        assert not same_tensors(after, before[s])
    # no forgotten cell anywhere in training bookkeeping
    for shard in new.shards:
        assert not np.isin(forget, shard.train_indices).any()
    assert not np.isin(forget, new.train_indices).any()
    assert not np.isin(forget, np.concatenate([p for slices in new.slices_ for p in slices])).any()
    # cost: the retrained stages' epochs over the whole ensemble's
    epochs = ens.stage_epochs_
    redone = sum(sum(epochs[int(where.loc[where["shard"] == s, "slice"].min()) :]) for s in hit)
    assert record["cost_fraction"] == pytest.approx(redone / (ens.n_shards * sum(epochs)))


def test_shard_key_keeps_groups_whole_and_a_group_deletion_retrains_one_shard(pbmc_small):
    pbmc_small.obs["donor"] = sf.data.pseudo_donors(pbmc_small, 6, seed=0)
    sf.model.ShardedSCVI.setup_anndata(pbmc_small)
    ens = sf.model.ShardedSCVI(pbmc_small, n_shards=3, n_slices=1, shard_key="donor", **ARCH)
    ens.train(max_epochs=2, seed=0, enable_progress_bar=False)
    donors = pbmc_small.obs["donor"].to_numpy()
    table = ens.shard_of(np.arange(pbmc_small.n_obs))
    per_donor = table.groupby(donors[table.index.to_numpy()])["shard"].nunique()
    assert (per_donor == 1).all()
    d3 = np.intersect1d(np.flatnonzero(donors == "donor_3"), ens.train_indices)
    new = ens.unlearn(d3, method="sisa", seed=0)
    assert len(new.unlearning_records_[-1]["retrained_shards"]) == 1
    assert new.unlearning_records_[-1]["cost_fraction"] == pytest.approx(1 / 3)


def test_ensemble_signals_are_the_mixture_of_the_shards(ensemble):
    from scforget.privacy._signals import compute_raw

    ens, split = ensemble
    pos = split.holdout
    raws = [compute_raw(s, pos) for s in ens.shards]
    signals = ens.audit_signals(pos)
    expected = logsumexp(np.stack([r["recon_ll"] for r in raws]), axis=0) - np.log(len(raws))
    np.testing.assert_allclose(signals["recon_ll"], expected, rtol=1e-6)
    z = ens.get_latent_representation(indices=split.retain)
    # rows come back in the order asked for, as in scvi-tools
    order = split.retain[::-1][:50]
    np.testing.assert_array_equal(ens.get_latent_representation(indices=order), z[::-1][:50])
    names = ens.adata.obs_names[order]
    np.testing.assert_array_equal(ens.get_latent_representation(indices=names), z[::-1][:50])
    ll = ens.get_marginal_ll(indices=order[:5], n_mc_samples=3)
    assert ll.shape == (5,)
    assert z.shape == (split.retain.size, ens.n_shards * ARCH["n_latent"])
    # each shard's block is standardised on that shard's training cells
    for s in range(ens.n_shards):
        own = np.sort(np.concatenate(ens.slices_[s]))
        block = ens.get_latent_representation(indices=own)[:, s * 4 : (s + 1) * 4]
        np.testing.assert_allclose(block.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(block.std(0), 1, rtol=1e-3)
    torch.manual_seed(0)  # expression samples z: the same draws in the same order
    expr = ens.get_normalized_expression(indices=pos[:5])
    torch.manual_seed(0)
    each = [s.get_normalized_expression(indices=pos[:5]) for s in ens.shards]
    np.testing.assert_allclose(expr.to_numpy(), np.mean([e.to_numpy() for e in each], axis=0), rtol=1e-6)


def test_audit_runs_on_the_ensemble(ensemble):
    ens, split = ensemble
    report = sf.audit(
        ens, members=split.forget, nonmembers=split.holdout, attacks=("loss", "distance"), progress_bar=False
    )
    assert set(report.summary().index) >= {"loss", "distance"}


def test_save_load_round_trip_and_stock_loading(ensemble, tmp_path):
    ens, split = ensemble
    new = ens.unlearn(split.forget, method="sisa", seed=0)
    new.save(tmp_path / "ens")
    back = sf.model.ShardedSCVI.load(tmp_path / "ens", adata=ens.adata)
    np.testing.assert_array_equal(back.get_latent_representation(), new.get_latent_representation())
    assert all(
        same_tensors(a, b)
        for sa, sb in zip(new.checkpoints_, back.checkpoints_, strict=True)
        for a, b in zip(sa, sb, strict=True)
    )
    assert back.unlearning_records_[-1]["method"] == "sisa"
    stock = scvi.model.SCVI.load(str(tmp_path / "ens" / "shard_0"), adata=ens.adata)
    assert same_tensors(state_snapshot(stock), state_snapshot(new.shards[0]))
    # nothing saved names a forgotten cell or lists its position
    import json

    manifest = json.loads((tmp_path / "ens" / "sharded.json").read_text())
    saved = np.concatenate([np.asarray(p, dtype=np.int64) for slices in manifest["slices"] for p in slices])
    assert not np.isin(split.forget, saved).any()
    assert not np.isin(split.forget, manifest["indices"]["train_indices"]).any()
    names = set(ens.adata.obs_names[split.forget])
    for f in (tmp_path / "ens").rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            assert not any(n.encode() in blob for n in names), f"{f.name} names a forgotten cell"


def test_refusals(ensemble, pbmc_small, trained_scvi):
    ens, split = ensemble
    with pytest.raises(TypeError, match="ShardedSCVI"):
        sf.unlearn(trained_scvi, split.forget, method="sisa")
    with pytest.raises(TypeError, match="'sisa'"):
        ens.unlearn(split.forget, method="finetune")
    sf.model.ShardedSCVI.setup_anndata(pbmc_small)
    with pytest.raises(TypeError, match="n_shards"):
        sf.model.ShardedSCVI(pbmc_small, n_shards=True)
    with pytest.raises(KeyError, match="shard_key"):
        sf.model.ShardedSCVI(pbmc_small, shard_key="donr")
    untrained = sf.model.ShardedSCVI(pbmc_small, n_shards=2, n_slices=3, **ARCH)
    with pytest.raises(RuntimeError, match="not trained"):
        untrained.unlearn([0, 1], method="sisa")
    with pytest.raises(ValueError, match="n_slices"):
        untrained.train(max_epochs=2)
    assert not untrained.is_trained_


def test_pseudo_donors(pbmc_small):
    before = pbmc_small.obs.copy()
    donors = sf.data.pseudo_donors(pbmc_small, 5, stratify_key="cell_type", seed=1)
    assert pbmc_small.obs.equals(before)
    counts = donors.value_counts()
    assert counts.max() - counts.min() <= 1
    table = pbmc_small.obs.groupby([pbmc_small.obs["cell_type"], donors.to_numpy()], observed=True).size().unstack()
    assert ((table.max(1) - table.min(1)) <= 1).all()  # each label spread evenly
    np.testing.assert_array_equal(
        donors.to_numpy(), sf.data.pseudo_donors(pbmc_small, 5, stratify_key="cell_type", seed=1)
    )
    with pytest.raises(TypeError, match="n_donors"):
        sf.data.pseudo_donors(pbmc_small, True)
    with pytest.raises(KeyError, match="stratify_key"):
        sf.data.pseudo_donors(pbmc_small, 3, stratify_key="celltype")
