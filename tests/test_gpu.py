"""Accelerator paths on a GPU; skipped cleanly on machines without one (run on a lent GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scforget as sf
from scforget.privacy import signals

from .conftest import train_tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_train_unlearn_audit_on_the_gpu_agree_with_the_cpu(pbmc_small, dc_split):
    model = train_tiny(sf.model.SCVI, pbmc_small, dc_split, max_epochs=2, accelerator="gpu")
    assert model.device.type == "cuda"
    new = model.unlearn(dc_split.forget, method="neggrad_plus", max_epochs=1, seed=0, accelerator="gpu")
    assert new.device.type == "cuda" and np.intersect1d(new.train_indices, dc_split.forget).size == 0
    kw = {"k": 5, "include_latent": False, "batch_size": 64, "progress_bar": False, "seed": 0}
    on_gpu = signals(new, **kw)
    new.to_device("cpu")
    on_cpu = signals(new, **kw)
    # the same weights: only float32 kernels differ between the devices
    np.testing.assert_allclose(on_gpu.to_numpy(), on_cpu.to_numpy(), rtol=1e-4, atol=1e-4)
    fisher = sf.fisher.diagonal(model, dc_split.forget, progress_bar=False)
    assert np.isfinite(fisher.flat().numpy()).all()
