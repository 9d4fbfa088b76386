import numpy as np
import pytest
import scvi

import scforget as sf

from .conftest import train_tiny


def test_scvi_subclass_defaults_to_nb(pbmc_small):
    sf.model.SCVI.setup_anndata(pbmc_small)
    model = sf.model.SCVI(pbmc_small)
    assert model.module.gene_likelihood == "nb"
    assert isinstance(model, scvi.model.SCVI)
    assert model.init_params_["non_kwargs"]["gene_likelihood"] == "nb"


def test_subclass_needs_its_own_setup(pbmc_small):
    scvi.model.SCVI.setup_anndata(pbmc_small)
    # scvi-tools keeps one registry per class: the error must say to run setup_anndata
    with pytest.raises(ValueError, match="setup_anndata"):
        sf.model.CondSCVI(pbmc_small)


def test_train_records_recipe(trained_scvi):
    recipe = trained_scvi.training_recipe_
    assert recipe["max_epochs"] == 5
    assert recipe["batch_size"] == 128
    assert recipe["plan_kwargs"] == {}


@pytest.mark.parametrize("model_name", ["SCVI", "CondSCVI"])
def test_from_scvi_model_is_exact(pbmc_small, dc_split, model_name):
    stock_cls = getattr(scvi.model, model_name)
    stock = train_tiny(stock_cls, pbmc_small, dc_split, max_epochs=2)
    before = stock.get_latent_representation()
    x_before = pbmc_small.X.copy()
    obs_before = pbmc_small.obs.copy()
    converted = getattr(sf.model, model_name).from_scvi_model(stock)
    assert type(converted) is getattr(sf.model, model_name)
    np.testing.assert_allclose(converted.get_latent_representation(), before, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(converted.train_indices, stock.train_indices)
    # the stock model still works and the data is untouched
    np.testing.assert_allclose(stock.get_latent_representation(), before, atol=1e-6)
    assert (pbmc_small.X != x_before).nnz == 0
    assert pbmc_small.obs.equals(obs_before)
    assert hasattr(converted, "unlearn")


def test_from_scvi_model_rejects_wrong_class(trained_scvi):
    with pytest.raises(TypeError, match="scvi_model"):
        sf.model.CondSCVI.from_scvi_model(trained_scvi)


def test_stock_save_loads_into_subclass_and_back(tmp_path, pbmc_small, dc_split):
    stock = train_tiny(scvi.model.SCVI, pbmc_small, dc_split, max_epochs=2)
    stock.save(tmp_path / "stock", save_anndata=False)
    ours = sf.model.SCVI.load(tmp_path / "stock", adata=pbmc_small)
    assert type(ours) is sf.model.SCVI
    np.testing.assert_allclose(ours.get_latent_representation(), stock.get_latent_representation(), atol=1e-6)
    unlearned = ours.unlearn(dc_split.forget, max_epochs=1, enable_progress_bar=False, seed=0)
    unlearned.save(tmp_path / "ours", save_anndata=False)
    back = scvi.model.SCVI.load(tmp_path / "ours", adata=pbmc_small)
    assert back.unlearning_records_[-1]["method"] == "finetune"
