"""Per-donor adapters: the columns they own, the certificate, drop == never mapped, remap, refusals, saving."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch

import scforget as sf
from scforget import _compat
from scforget._core import clone_model

from .conftest import same_tensors, state_snapshot

ARCH = {"n_hidden": 16, "n_latent": 4}
CORE = ["donor_0", "donor_1", "donor_2"]


@pytest.fixture(scope="module")
def core(_pbmc_small_master):
    """A trained core (donors 0-2) on pbmc3k with six pseudo-donors; donor_4's cells split forget/holdout."""
    adata = _pbmc_small_master.copy()
    adata.obs["donor"] = sf.data.pseudo_donors(adata, 6, seed=0)
    split = sf.data.structured_forget(adata, "donor", "donor_4", holdout_fraction=0.3, seed=0)
    sf.model.AdapterSCVI.setup_anndata(adata, donor_key="donor")
    model = sf.model.AdapterSCVI(adata, core_donors=CORE, **ARCH)
    model.train(max_epochs=4, datasplitter_kwargs=split.datasplitter_kwargs(), seed=0, enable_progress_bar=False)
    return model, split


@pytest.fixture(scope="module")
def mapped(core):
    model, split = core
    full = clone_model(model)
    full.map_donors(["donor_3", "donor_4", "donor_5"], max_epochs=3, seed=1)
    return full, split


def _outputs(model, positions):
    """Posterior mean and decoder rate of cells, computed straight from the module."""
    loader = _compat.make_data_loader(model, positions, batch_size=len(positions))
    tensors = next(iter(loader))
    torch.manual_seed(0)  # z is sampled: the same draw every call
    with torch.no_grad():
        inf = _compat.module_inference(model.module, tensors)
        gen = _compat.module_generative(model.module, tensors, inf)
    return inf["qz"].loc, gen["px"].mu


def test_the_donor_columns_are_all_a_donor_owns(mapped):
    model, _ = mapped
    model = clone_model(model)
    donors = model.adata.obs["donor"].to_numpy()
    d5, d3 = np.flatnonzero(donors == "donor_5")[:40], np.flatnonzero(donors == "donor_3")[:40]
    z3, mu3 = _outputs(model, d3)
    z5, mu5 = _outputs(model, d5)
    col = model.donors.index("donor_5")
    params = dict(model.module.named_parameters())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, start, _ in _compat.batch_columns(model.module):
            params[name][:, start + col] += torch.randn(params[name].shape[0], generator=gen)
    z3b, mu3b = _outputs(model, d3)
    z5b, mu5b = _outputs(model, d5)
    # another donor's cells do not read donor_5's columns at all; donor_5's cells do
    assert torch.equal(z3, z3b) and torch.equal(mu3, mu3b)
    assert not torch.allclose(z5, z5b) and not torch.allclose(mu5, mu5b)
    # the gradient of donor_3's loss touches no other donor's columns
    model.module.train()
    loader = _compat.make_data_loader(model, d3, batch_size=len(d3))
    model.module.zero_grad()
    loss = model.module(next(iter(loader)))[-1]  # scvi's module returns (inference, generative, loss)
    loss.loss.backward()
    c3 = model.donors.index("donor_3")
    for name, start, n in _compat.batch_columns(model.module):
        grad = params[name].grad
        if grad is None:  # the library encoder is not used with the observed library size
            continue
        others = [start + i for i in range(n) if i != c3]
        assert torch.count_nonzero(grad[:, others]) == 0, name
        assert torch.count_nonzero(grad[:, start + c3]) > 0, name


def test_gene_batch_dispersion_is_a_donor_column(pbmc_small):
    pbmc_small.obs["donor"] = sf.data.pseudo_donors(pbmc_small, 3, seed=0)
    sf.model.AdapterSCVI.setup_anndata(pbmc_small, donor_key="donor")
    model = sf.model.AdapterSCVI(pbmc_small, core_donors=["donor_0"], dispersion="gene-batch", **ARCH)
    assert ("px_r", 0, 3) in _compat.batch_columns(model.module)


def test_mapping_keeps_the_core_and_drop_equals_never_mapped(core, mapped):
    model, split = core
    full, _ = mapped
    before = model.certificate()
    assert full.certificate()["core"] == before["core"]
    assert sorted(full.certificate()["donors"]) == ["donor_3", "donor_4", "donor_5"]
    # mapping moved donor_4's columns, and nothing of the core
    assert not same_tensors(state_snapshot(full), state_snapshot(model))
    # the reference: the same core with donors 3 and 5 mapped, in the other order
    never = clone_model(model)
    never.map_donors(["donor_5", "donor_3"], max_epochs=3, seed=1)
    full_state = state_snapshot(full)
    dropped = full.unlearn(split.forget, method="adapter_drop")
    assert same_tensors(state_snapshot(full), full_state)  # input untouched
    assert same_tensors(state_snapshot(dropped), state_snapshot(never))
    cert = dropped.certificate()
    assert cert == never.certificate()
    assert cert["core"] == before["core"] and "donor_4" not in cert["donors"]
    record = dropped.unlearning_records_[-1]
    assert record["guarantee"] == "exact" and record["n_donors_dropped"] == 1 and record["core_unchanged"]
    assert record["core_certificate"] == before["core"]
    assert not np.isin(split.forget, dropped.train_indices).any()
    assert "donor_4" not in dropped.mapped_cells_
    # the audit sees exactly what it sees on the model that never mapped the donor
    kw = {"members": split.forget, "nonmembers": split.holdout, "attacks": ("loss", "distance"), "progress_bar": False}
    a, b = sf.audit(dropped, **kw).summary(), sf.audit(never, design_checks=False, **kw).summary()
    np.testing.assert_array_equal(a["auc"].to_numpy(), b["auc"].to_numpy())


def test_remap_equals_mapping_without_the_cells(core, mapped):
    model, _ = mapped
    cells = model.mapped_cells_["donor_3"]
    forget = cells[::3]
    remapped = model.unlearn(forget, method="adapter_remap")
    # the reference: the core with donor_3's forget cells held out of the split, then mapped as usual
    ref = clone_model(core[0])
    ref.test_indices = np.union1d(ref.test_indices, forget)
    ref.map_donors(["donor_3", "donor_4", "donor_5"], max_epochs=3, seed=1)
    assert same_tensors(state_snapshot(remapped), state_snapshot(ref))
    np.testing.assert_array_equal(remapped.mapped_cells_["donor_3"], np.setdiff1d(cells, forget))
    record = remapped.unlearning_records_[-1]
    assert record["guarantee"] == "exact" and record["retrained_epochs"] == 3


def test_the_certificate_fails_loudly_when_a_shared_parameter_moves(core, monkeypatch):
    import scforget.model._adapters as adapters

    model = clone_model(core[0])
    state = state_snapshot(model)
    monkeypatch.setattr(adapters, "_freeze_to_donor", lambda module, slots, column, hooks: None)  # train everything
    with pytest.raises(RuntimeError, match="moved shared parameters"):
        model.map_donors(["donor_3"], max_epochs=1, seed=0)
    assert same_tensors(state_snapshot(model), state)
    assert model.mapped_cells_ == {}


def test_refusals_before_any_work(core, mapped, trained_scvi):
    model, split = core
    full, _ = mapped
    state = state_snapshot(full)
    core_cells = np.setdiff1d(full.train_indices, np.concatenate(list(full.mapped_cells_.values())))
    with pytest.raises(ValueError, match="core cells"):
        full.unlearn(core_cells[:5], method="adapter_drop")
    with pytest.raises(ValueError, match="adapter_remap"):
        full.unlearn(full.mapped_cells_["donor_3"][:5], method="adapter_drop")
    with pytest.raises(ValueError, match="core cells"):
        full.unlearn(core_cells[:5], method="adapter_remap")
    with pytest.raises(TypeError, match="'adapter_drop'"):
        full.unlearn(split.forget, method="finetune")
    with pytest.raises(TypeError, match="AdapterSCVI"):
        sf.unlearn(trained_scvi, [0, 1], method="adapter_drop")
    assert same_tensors(state_snapshot(full), state)
    m = clone_model(model)
    for kwargs, error, text in [
        ({"donors": "donor_3"}, TypeError, "list of donor names"),
        ({"donors": ["donor_9"]}, KeyError, "not a donor"),
        ({"donors": ["donor_0"]}, ValueError, "core donor"),
        ({"donors": ["donor_3"], "plan_kwargs": {"weight_decay": 1e-6}}, ValueError, "weight_decay"),
        ({"donors": ["donor_3"], "plan_kwargs": {"optimizer": "AdamW"}}, ValueError, "Adam"),
        ({"donors": ["donor_3"], "lr": 0}, ValueError, "lr"),
    ]:
        with pytest.raises(error, match=text):
            m.map_donors(**kwargs)
    with pytest.raises(ValueError, match="mapped already"):
        full.map_donors(["donor_3"])
    adata = model.adata
    with pytest.raises(ValueError, match="use_batch_norm"):
        sf.model.AdapterSCVI(adata, core_donors=CORE, use_batch_norm="both")
    with pytest.raises(KeyError, match="donor_1"):
        sf.model.AdapterSCVI(adata, core_donors=["donr_1"])
    with pytest.raises(ValueError, match="Every donor"):
        sf.model.AdapterSCVI(adata, core_donors=[f"donor_{i}" for i in range(6)])
    with pytest.raises(TypeError, match="donor_key"):
        sf.model.AdapterSCVI.setup_anndata(adata.copy())


def test_save_load_and_stock_loading(mapped, tmp_path):
    full, split = mapped
    dropped = full.unlearn(split.forget, method="adapter_drop")
    dropped.save(tmp_path / "m", save_anndata=False)
    back = sf.model.AdapterSCVI.load(tmp_path / "m", adata=full.adata)
    assert back.certificate() == dropped.certificate()
    assert back.core_donors_ == CORE and sorted(back.mapped_cells_) == ["donor_3", "donor_5"]
    stock = scvi.model.SCVI.load(str(tmp_path / "m"), adata=full.adata, allowed_classes_names_list=["AdapterSCVI"])
    np.testing.assert_array_equal(
        stock.get_latent_representation(indices=split.retain), dropped.get_latent_representation(indices=split.retain)
    )
    # no saved array singles out the forgotten cells: they are only among the held-out (test) cells
    saved = torch.load(tmp_path / "m" / "model.pt", weights_only=False)["attr_dict"]  # our own file
    test = saved.pop("test_indices_")
    assert np.isin(split.forget, test).all() and test.size > split.forget.size

    def arrays(value):
        if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from arrays(v)

    for arr in arrays(saved):
        assert not np.isin(split.forget, arr).any()
