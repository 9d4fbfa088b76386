"""Minibatches of a backed AnnData: read by row ranges, in the order asked, equal to the in-memory ones."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scforget as sf
from scforget._compat import BackedRows, make_data_loader
from scforget._core import minibatches


@pytest.fixture
def twin_models(pbmc_small, tmp_path):
    """The same cells in memory and backed on disk (CSR), each set up for an untrained scVI."""
    memory = pbmc_small.copy()
    memory.X = sp.csr_matrix(memory.X)
    memory.write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    sf.model.SCVI.setup_anndata(memory, batch_key=None)
    sf.model.SCVI.setup_anndata(backed, batch_key=None)
    return sf.model.SCVI(memory, n_hidden=8, n_latent=2), sf.model.SCVI(backed, n_hidden=8, n_latent=2)


def _collect(model, positions, batch_size):
    batches = list(minibatches(model, positions, batch_size=batch_size))
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


@pytest.mark.parametrize(
    "positions",
    [
        "all",
        np.r_[0:40, 70:130],  # runs with a gap: one minibatch straddles it
        np.array([17, 3, 250, 4, 99, 98]),  # unsorted: scvi-tools' backed loader would return them sorted
        np.array([5]),
    ],
)
def test_backed_minibatches_equal_the_in_memory_ones(twin_models, positions):
    memory, backed = twin_models
    positions = np.arange(memory.adata.n_obs) if isinstance(positions, str) else positions
    assert isinstance(make_data_loader(backed, positions, batch_size=32), BackedRows)
    want, got = _collect(memory, positions, 32), _collect(backed, positions, 32)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    rows = torch.as_tensor(memory.adata.X[positions].toarray(), dtype=torch.float32)
    assert torch.equal(got["X"], rows)  # rows in the order asked


class _Recorder:
    """A dataset that records how it is indexed (and returns the row numbers)."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, index):
        self.calls.append(index)
        rows = np.arange(1000)[index]
        return {"rows": rows}


def test_backed_rows_reads_runs_as_one_slice():
    data = _Recorder()
    positions = np.r_[10:20, 30:35, 8, 6, 7]
    out = [b["rows"].tolist() for b in BackedRows(data, positions, batch_size=10)]
    assert out == [list(range(10, 20)), [30, 31, 32, 33, 34, 8, 6, 7]]
    assert data.calls[0] == slice(10, 20)  # a run: one read
    np.testing.assert_array_equal(data.calls[1], [6, 7, 8, 30, 31, 32, 33, 34])  # sorted rows for HDF5
    assert len(BackedRows(data, positions, batch_size=10)) == 2
    data = _Recorder()
    assert [b["rows"].tolist() for b in BackedRows(data, np.array([3, 2, 1]), batch_size=8)] == [[3, 2, 1]]
    assert data.calls == [slice(1, 4)]  # a run once sorted, put back in the order asked


def test_in_memory_and_shuffled_loaders_stay_scvi_tools_own(twin_models):
    memory, backed = twin_models
    positions = np.arange(20)
    assert not isinstance(make_data_loader(memory, positions, batch_size=8), BackedRows)
    assert not isinstance(make_data_loader(backed, positions, batch_size=8, shuffle=True), BackedRows)


def test_streaming_hands_freed_memory_back_every_few_minibatches(twin_models, monkeypatch):
    import sys

    from scforget._core import _tensors
    from scforget._core._memory import release_free_memory

    assert release_free_memory() is sys.platform.startswith("linux")  # glibc here, a no-op elsewhere
    calls = []
    monkeypatch.setattr(_tensors, "release_free_memory", lambda: calls.append(1))
    _, backed = twin_models
    batches = minibatches(backed, np.arange(90), batch_size=10)  # 9 minibatches
    assert sum(1 for _ in batches) == 9
    assert len(calls) == 9 // _tensors.Minibatches.TRIM_EVERY
