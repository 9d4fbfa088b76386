"""``method="short_retrain"``: exact deletion by a short, annealed training from fresh weights."""

from __future__ import annotations

import numpy as np
import pytest
import scvi

import scforget as sf
from scforget._core import clone_model, training_recipe
from scforget.methods._short_retrain import final_kl_weight

from .conftest import same_state, same_tensors, state_snapshot

EPOCHS = 20
QUIET = {"enable_progress_bar": False}


def _train(adata, split, seed):
    scvi.settings.seed = seed
    model = sf.model.SCVI(adata, n_hidden=32, n_latent=5, gene_likelihood="nb")
    model.train(
        max_epochs=EPOCHS,
        batch_size=128,
        accelerator="cpu",
        datasplitter_kwargs=split.datasplitter_kwargs(),
        **QUIET,
    )
    return model


@pytest.fixture(scope="module")
def setup(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    sf.model.SCVI.setup_anndata(adata)
    return [_train(adata, split, seed) for seed in (0, 1)], split


def test_the_result_depends_on_neither_the_input_weights_nor_the_forget_cells(setup):
    (one, two), split = setup
    assert not same_tensors(one.module.state_dict(), two.module.state_dict())
    kw = {"seed": 4, "max_epochs": 2, **QUIET}
    a = one.unlearn(split.forget, method="short_retrain", **kw)
    b = two.unlearn(split.forget, method="short_retrain", **kw)
    # two differently trained inputs (each memorised the forget cells its own way): the same output
    assert same_tensors(a.module.state_dict(), b.module.state_dict())
    # positive control: a fine-tune keeps what its input knew, so the same comparison tells them apart
    fa = one.unlearn(split.forget, method="finetune", **kw)
    fb = two.unlearn(split.forget, method="finetune", **kw)
    assert not same_tensors(fa.module.state_dict(), fb.module.state_dict())
    # the forget cells' counts never enter: scrambling them leaves the result as it was
    X = one.adata.X
    saved = X[split.forget].copy()
    rng = np.random.default_rng(0)
    try:
        X[split.forget] = saved[rng.permutation(len(split.forget))] * 3
        c = one.unlearn(split.forget, method="short_retrain", **kw)
    finally:
        X[split.forget] = saved
    assert same_tensors(a.module.state_dict(), c.module.state_dict())
    # positive control: the same scrambling of as many retain cells does change it
    some = split.retain[: len(split.forget)]
    saved = X[some].copy()
    try:
        X[some] = saved[rng.permutation(len(some))] * 3
        d = one.unlearn(split.forget, method="short_retrain", **kw)
    finally:
        X[some] = saved
    assert not same_tensors(a.module.state_dict(), d.module.state_dict())


def test_default_budget_schedule_and_record(setup):
    (model, _), split = setup
    snap = state_snapshot(model)
    new = model.unlearn(split.forget, method="short_retrain", seed=0, **QUIET)
    assert same_state(model, snap) and model.rewind_checkpoint_ is not None  # input untouched
    rec = new.unlearning_records_[-1]
    assert rec["guarantee"] == "exact" and rec["epochs_run"] == round(0.2 * EPOCHS)
    assert rec["lr_schedule"].startswith("cosine") and rec["params"]["lr"] == 1e-2
    assert rec["initialisation"].startswith("fresh")
    # the KL weight the original training ended with, as the checkpoint callback read it from scvi-tools
    assert rec["kl_weight"] == pytest.approx(model.rewind_checkpoint_["kl_weight"])
    assert new.rewind_checkpoint_ is None
    assert np.intersect1d(new.train_indices, split.forget).size == 0


def test_final_kl_weight_from_the_recipe_matches_the_one_training_used(setup):
    (model, _), _ = setup
    recorded = model.rewind_checkpoint_["kl_weight"]  # read from the TrainingPlan in the last epoch
    bare = clone_model(model)
    bare.rewind_checkpoint_ = None
    assert final_kl_weight(bare, training_recipe(bare)) == pytest.approx(recorded)
    # past the warm-up the weight is the plan's maximum; without a warm-up, the maximum throughout
    long = {**training_recipe(bare), "epochs_run": 500, "plan_kwargs": {"max_kl_weight": 0.7}}
    assert final_kl_weight(bare, long) == pytest.approx(0.7)
    none = {**training_recipe(bare), "plan_kwargs": {"n_epochs_kl_warmup": None}}
    assert final_kl_weight(bare, none) == 1.0
    with pytest.warns(UserWarning, match="by steps"):
        assert final_kl_weight(bare, {**training_recipe(bare), "plan_kwargs": {"n_steps_kl_warmup": 10}}) == 1.0


def test_stock_model_without_checkpoint_or_recipe(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    scvi.model.SCVI.setup_anndata(adata)
    scvi.settings.seed = 0
    stock = scvi.model.SCVI(adata, n_hidden=32, n_latent=5, gene_likelihood="nb")
    stock.train(max_epochs=5, accelerator="cpu", datasplitter_kwargs=split.datasplitter_kwargs(), **QUIET)
    new = sf.unlearn(stock, split.forget, method="short_retrain", seed=0, **QUIET)
    assert isinstance(new, scvi.model.SCVI)
    rec = new.unlearning_records_[-1]
    assert rec["epochs_run"] == 1 and rec["kl_weight"] == pytest.approx(4 / 400)  # last of 5 epochs


def test_bad_input_refused_before_any_work(setup):
    (model, _), split = setup
    snap = state_snapshot(model)
    with pytest.raises(ValueError, match="lr"):
        model.unlearn(split.forget, method="short_retrain", lr=0.0)
    with pytest.raises(TypeError, match="anneal_lr"):
        model.unlearn(split.forget, method="short_retrain", anneal_lr="yes")
    with pytest.raises(ValueError, match="reduce_lr_on_plateau"):
        model.unlearn(split.forget, method="short_retrain", reduce_lr_on_plateau=True)
    private = clone_model(model)
    private.privacy_ = {"target_epsilon": 3.0}
    with pytest.raises(ValueError, match="DP-SGD"):
        private.unlearn(split.forget, method="short_retrain")
    assert same_state(model, snap)
