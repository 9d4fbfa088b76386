"""Shared fixtures: a small real data slice and tiny trained models."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import scanpy as sc
import scvi
import torch
from torch import nn

import scforget as sf


def pytest_addoption(parser):
    parser.addoption("--accelerator", default="cpu", help="Lightning accelerator for training in tests.")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run much faster on one thread; several threads fight over the two cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    scvi.settings.seed = 0
    yield


@pytest.fixture(scope="session")
def accelerator(request) -> str:
    return request.config.getoption("--accelerator")


@pytest.fixture(scope="session")
def _pbmc_small_master():
    """QC-passing pbmc3k cells, 300 highly variable genes (seurat_v3 on counts)."""
    adata = sf.datasets.pbmc3k()
    adata = adata[adata.obs["qc_pass"].to_numpy()].copy()
    sc.pp.highly_variable_genes(adata, n_top_genes=300, flavor="seurat_v3")
    torch.set_num_threads(1)  # the gene selection resets the OpenMP thread count torch shares
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    adata.var = adata.var[[]]
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.remove_unused_categories()
    return adata


@pytest.fixture
def pbmc_small(_pbmc_small_master):
    """A fresh copy per test (tests may register or modify it)."""
    return _pbmc_small_master.copy()


@pytest.fixture
def dc_split(pbmc_small):
    return sf.data.structured_forget(pbmc_small, "cell_type", "DC", holdout_fraction=0.5, seed=0)


def train_tiny(model_cls, adata, split=None, *, max_epochs=5, accelerator="cpu", **model_kwargs):
    """Set up ``adata`` for ``model_cls`` and train a tiny model on ``split.train``."""
    if model_cls.__name__ == "CondSCVI":
        model_cls.setup_anndata(adata, labels_key="cell_type")
        model_kwargs.setdefault("n_hidden", 32)
    else:
        model_cls.setup_anndata(adata)
        model_kwargs.setdefault("n_hidden", 32)
        model_kwargs.setdefault("n_latent", 5)
        if model_cls is scvi.model.SCVI:
            model_kwargs.setdefault("gene_likelihood", "nb")
    model = model_cls(adata, **model_kwargs)
    train_kwargs = {"datasplitter_kwargs": split.datasplitter_kwargs()} if split is not None else {}
    model.train(
        max_epochs=max_epochs, batch_size=128, accelerator=accelerator, enable_progress_bar=False, **train_kwargs
    )
    return model


@pytest.fixture(scope="session")
def _trained_scvi_dir(_pbmc_small_master, tmp_path_factory, accelerator):
    """Train the tiny baseline once per session and save it; tests load private copies."""
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    scvi.settings.seed = 0
    model = train_tiny(sf.model.SCVI, adata, split, accelerator=accelerator)
    path = tmp_path_factory.mktemp("trained_scvi")
    model.save(path, save_anndata=False, overwrite=True)
    return path


@pytest.fixture
def trained_scvi(pbmc_small, _trained_scvi_dir, accelerator):
    """A tiny scforget SCVI trained 5 epochs on ``dc_split.train`` (a fresh copy per test)."""
    return sf.model.SCVI.load(_trained_scvi_dir, adata=pbmc_small, accelerator=accelerator)


@pytest.fixture
def backed_scvi(pbmc_small, _trained_scvi_dir, tmp_path):
    """The tiny baseline loaded onto a backed copy of its cells (``backed="r"``: counts stay on disk)."""
    import anndata as ad
    import scipy.sparse as sp

    path = tmp_path / "cells.h5ad"
    disk = pbmc_small.copy()
    disk.X = sp.csr_matrix(disk.X)
    disk.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    assert backed.isbacked
    sf.model.SCVI.setup_anndata(backed)
    return sf.model.SCVI.load(_trained_scvi_dir, adata=backed, accelerator="cpu")


def state_snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def same_tensors(a: dict, b: dict) -> bool:
    """Whether two state dicts hold the same tensors, bit for bit."""
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def same_state(model, snapshot) -> bool:
    return same_tensors(model.module.state_dict(), snapshot)


def mean_nll(model, indices, batch_size: int = 512) -> float:
    """Deterministic mean negative log-likelihood per cell (posterior-mean z, observed library size).

    A test helper independent of scforget.privacy, so method tests do not depend on the audit code.
    """
    import torch

    module = model.module
    was_training = module.training
    module.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for tensors in model._make_data_loader(adata=model.adata, indices=np.asarray(indices), batch_size=batch_size):
            tensors = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in tensors.items()}
            inf = module.inference(**module._get_inference_input(tensors))
            inf = dict(inf)
            inf["z"] = inf["qz"].loc
            gen = module.generative(**module._get_generative_input(tensors, inf))
            ll = gen["px"].log_prob(tensors["X"]).sum(-1)
            total += float(-ll.sum())
            n += ll.shape[0]
    module.train(was_training)
    return total / n


class ForgetBatchNormWatch:
    """Flags any train-mode BatchNorm forward of the student on a batch holding forget cells.

    A pre-hook on the student's encoder of ``z`` identifies the cells of each forward from their
    counts (the encoder receives ``log1p`` counts); the hooks on the BatchNorm layers that follow in
    the same forward pass check the mode. Teachers are separate copies and are not hooked.
    """

    def __init__(self, module: nn.Module, forget_counts: np.ndarray):
        self.forget = {row.tobytes() for row in np.rint(forget_counts).astype(np.int64)}
        self.current_has_forget = False
        self.train_calls = 0
        self.violations = 0
        self.handles = [module.z_encoder.register_forward_pre_hook(self._encoder)]
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                self.handles.append(m.register_forward_pre_hook(self._bn))

    def _encoder(self, _mod, args):
        x = torch.expm1(args[0].detach()).round().to(torch.int64).cpu().numpy()
        self.current_has_forget = any(row.tobytes() in self.forget for row in x)

    def _bn(self, mod, _args):
        if mod.training:
            self.train_calls += 1
            self.violations += int(self.current_has_forget)

    def remove(self):
        for h in self.handles:
            h.remove()


@contextlib.contextmanager
def watch_batchnorm(model, forget):
    """Hook the module that :func:`scforget.unlearn` trains (the clone) through ``clone_model``."""
    import scforget.methods._unlearn as unlearn_mod

    counts = model.adata.X[forget]
    counts = counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts)
    watches = []
    original = unlearn_mod.clone_model

    def cloning(m):
        new = original(m)
        watches.append(ForgetBatchNormWatch(new.module, counts))
        return new

    unlearn_mod.clone_model = cloning
    try:
        yield watches
    finally:
        unlearn_mod.clone_model = original
        for w in watches:
            w.remove()
