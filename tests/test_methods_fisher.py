"""Acceptance tests of the parameter-space methods SSD, Fisher forgetting and relative Fisher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scforget as sf
import scforget.fisher
import scforget.methods._edits
import scforget.methods._fisher_forgetting
import scforget.methods._relative_fisher
import scforget.methods._ssd

from .conftest import mean_nll, same_state, state_snapshot, train_tiny

METHODS = ("ssd", "fisher_forgetting", "relative_fisher")
#: Fisher of a third of the retain cells keeps the tests fast; the methods' defaults use all.
KW = {"max_retain_cells": 700}


@pytest.fixture(scope="module")
def setup(_pbmc_small_master):
    import scvi

    scvi.settings.seed = 0
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    model = train_tiny(sf.model.SCVI, adata, split, max_epochs=5)
    return split, model


@pytest.fixture(scope="module")
def results(setup):
    split, model = setup
    before = state_snapshot(model)
    nll = {"forget": mean_nll(model, split.forget), "retain": mean_nll(model, split.retain)}
    out = {m: sf.unlearn(model, split.forget, method=m, seed=0, **KW) for m in METHODS}
    return before, nll, out


@pytest.mark.parametrize("method", METHODS)
def test_changes_copy_and_leaves_input_untouched(method, setup, results):
    split, model = setup
    before, _, out = results
    new = out[method]
    assert new is not model
    assert same_state(model, before)
    assert not same_state(new, before)
    record = new.unlearning_records_[-1]
    assert record["method"] == method
    assert 0 < record["fraction_changed"] <= 1 and record["change_norm"] > 0
    assert "decoder.px_r_decoder.weight" in record["no_gradient"]
    # parameters without gradient are never edited
    now = dict(new.module.named_parameters())
    assert torch.equal(now["decoder.px_r_decoder.weight"].detach(), before["decoder.px_r_decoder.weight"])


@pytest.mark.parametrize("method", METHODS)
def test_forget_fit_drops_more_than_retain_fit(method, setup, results):
    split, _ = setup
    _, nll, out = results
    new = out[method]
    d_forget = (mean_nll(new, split.forget) - nll["forget"]) / nll["forget"]
    d_retain = (mean_nll(new, split.retain) - nll["retain"]) / nll["retain"]
    assert d_forget > 0
    assert d_forget > d_retain


def test_ssd_only_shrinks_never_flips(setup, results):
    _, model = setup
    before, _, out = results
    now = dict(out["ssd"].module.named_parameters())
    assert any(not torch.equal(now[k].detach(), before[k]) for k in now)
    for k in now:
        old, new = before[k], now[k].detach()
        changed = new != old
        # |new| <= |old| with the same sign wherever SSD acted
        assert torch.all(new[changed].abs() <= old[changed].abs() + 1e-12), k
        assert torch.all(new[changed] * old[changed] >= 0), k


def test_seed_makes_noise_reproducible(setup, results):
    split, model = setup
    _, _, out = results
    again = sf.unlearn(model, split.forget, method="fisher_forgetting", seed=0, **KW)
    other = sf.unlearn(model, split.forget, method="fisher_forgetting", seed=1, **KW)
    a, b, c = (dict(m.module.named_parameters())["px_r"].detach() for m in (out["fisher_forgetting"], again, other))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_fisher_forgetting_finetune_uses_training_loss(setup):
    split, model = setup
    new = sf.unlearn(
        model, split.forget, method="fisher_forgetting", seed=0, max_epochs=1, enable_progress_bar=False, **KW
    )
    record = new.unlearning_records_[-1]
    assert record["finetune"]["epochs_run"] == 1
    assert np.isfinite(record["finetune"]["history"]["retain_loss"][0])


@pytest.mark.parametrize(
    ("method", "kwargs", "error"),
    [
        ("ssd", {"alpah": 5.0}, TypeError),
        ("fisher_forgetting", {"newton": 1.0}, TypeError),
        ("relative_fisher", {"mdoe": "noise"}, TypeError),
        ("ssd", {"alpha": -1.0}, ValueError),
        ("ssd", {"max_epochs": 3}, ValueError),
        ("fisher_forgetting", {"alpha": 0.0}, ValueError),
        ("relative_fisher", {"mode": "shuffle"}, ValueError),
        ("relative_fisher", {"threshold": 0}, ValueError),
        ("ssd", {"alpha": True}, TypeError),
        ("fisher_forgetting", {"alpha": "big"}, TypeError),
        ("relative_fisher", {"max_retain_cells": 1.5}, TypeError),
        ("relative_fisher", {"mode": "dampn"}, ValueError),
    ],
)
def test_bad_arguments_fail_early(method, kwargs, error, setup, monkeypatch):
    split, model = setup
    before = state_snapshot(model)

    class Reached(Exception):
        pass

    def fake_diagonal(*a, **k):
        raise Reached

    # the methods compute their Fisher through scforget.methods._edits.diagonal: patch that name
    monkeypatch.setattr(scforget.methods._edits, "diagonal", fake_diagonal)
    with pytest.raises(Reached):  # the patch is on the path the methods use
        sf.unlearn(model, split.forget, method=method, seed=0, **KW)
    with pytest.raises(error):
        sf.unlearn(model, split.forget, method=method, **kwargs)  # fails before any Fisher computation
    assert same_state(model, before)


def test_relative_fisher_noise_mode(setup):
    split, model = setup
    new = sf.unlearn(model, split.forget, method="relative_fisher", mode="noise", noise_scale=0.5, seed=0, **KW)
    record = new.unlearning_records_[-1]
    assert record["n_selected"] > 0 and record["change_norm"] > 0
    assert record["params"]["mode"] == "noise"


def test_record_survives_save_load(results, tmp_path):
    _, _, out = results
    new = out["ssd"]
    new.save(tmp_path / "m", overwrite=True)
    loaded = sf.model.SCVI.load(tmp_path / "m", adata=new.adata)
    rec = loaded.unlearning_records_[-1]
    assert rec["method"] == "ssd"
    assert rec["params"]["alpha"] == 10.0 and rec["params"]["max_retain_cells"] == 700
    assert rec["n_selected"] == new.unlearning_records_[-1]["n_selected"]
